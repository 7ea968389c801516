-- A column's collation changed, and a column created with one.
-- expect: promote
-- old
CREATE TABLE names (id int PRIMARY KEY, n text);
INSERT INTO names VALUES (1, 'b'), (2, 'A');
-- new
ALTER TABLE names ALTER COLUMN n TYPE text COLLATE "C";
ALTER TABLE names ADD COLUMN sort_key text COLLATE "POSIX";
