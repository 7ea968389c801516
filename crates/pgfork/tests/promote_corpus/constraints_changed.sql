-- Check, unique and foreign key constraints added, dropped and changed.
-- expect: promote
-- old
CREATE TABLE a (id int PRIMARY KEY, code text);
CREATE TABLE b (id int PRIMARY KEY, a_id int, n int CONSTRAINT n_positive CHECK (n > 0));
INSERT INTO a SELECT g, 'c' || g FROM generate_series(1, 20) g;
INSERT INTO b SELECT g, g, g FROM generate_series(1, 20) g;
-- new
ALTER TABLE a ADD CONSTRAINT a_code_unique UNIQUE (code);
ALTER TABLE b ADD CONSTRAINT b_a_fk FOREIGN KEY (a_id) REFERENCES a (id) ON DELETE CASCADE;
ALTER TABLE b DROP CONSTRAINT n_positive;
ALTER TABLE b ADD CONSTRAINT n_small CHECK (n < 1000);
