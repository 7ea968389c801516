-- A view changed, a function and a trigger added, a view over a view.
-- expect: promote
-- old
CREATE TABLE t (id int PRIMARY KEY, n int, touched int DEFAULT 0);
CREATE VIEW big AS SELECT id, n FROM t WHERE n > 10;
INSERT INTO t SELECT g, g FROM generate_series(1, 30) g;
-- new
CREATE OR REPLACE VIEW big AS SELECT id, n, n * 2 AS twice FROM t WHERE n > 10;
CREATE VIEW bigger AS SELECT * FROM big WHERE n > 20;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.touched := NEW.touched + 1; RETURN NEW; END $$;
CREATE TRIGGER t_touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch();
UPDATE t SET n = n + 1 WHERE id = 3;
