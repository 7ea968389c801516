-- A partition's own default that the agent wrote to break out of the
-- ALTER TABLE ... SET DEFAULT statement promote writes from it (a quote, a
-- semicolon, a statement after it, a comment): the server deparses it as
-- one literal, and it is carried as that literal.
-- expect: promote
-- old
CREATE TABLE notes (at int NOT NULL, body text DEFAULT 'plain') PARTITION BY RANGE (at);
CREATE TABLE notes_0 PARTITION OF notes FOR VALUES FROM (0) TO (100);
INSERT INTO notes (at) SELECT g FROM generate_series(0, 50) g;
-- new
ALTER TABLE notes_0 ALTER COLUMN body SET DEFAULT $$x'; DROP TABLE notes; --$$;
INSERT INTO notes (at) VALUES (60);
