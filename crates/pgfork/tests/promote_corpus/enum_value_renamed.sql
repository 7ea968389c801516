-- An enum value renamed: rows read the new label without being rewritten.
-- expect: promote
-- old
CREATE TYPE state AS ENUM ('todo', 'done');
CREATE TABLE tasks (id int PRIMARY KEY, s state);
INSERT INTO tasks VALUES (1, 'todo'), (2, 'done');
-- new
ALTER TYPE state RENAME VALUE 'todo' TO 'open';
