-- A column moved from one enum type to another: no cast exists.
-- expect: refuse
-- old
CREATE TYPE old_state AS ENUM ('new', 'done');
CREATE TYPE new_state AS ENUM ('new', 'doing', 'done');
CREATE TABLE tasks (id int PRIMARY KEY, s old_state);
INSERT INTO tasks VALUES (1, 'new'), (2, 'done');
-- new
ALTER TABLE tasks ALTER COLUMN s TYPE new_state USING s::text::new_state;
