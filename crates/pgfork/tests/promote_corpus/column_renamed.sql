-- A column renamed: its values must follow it.
-- expect: promote
-- old
CREATE TABLE clients (id int PRIMARY KEY, nm text);
INSERT INTO clients SELECT g, 'c' || g FROM generate_series(1, 30) g;
-- new
ALTER TABLE clients RENAME COLUMN nm TO name;
