-- A table renamed (seen as one dropped and one created, rows and all).
-- expect: promote
-- old
CREATE TABLE clients (id int PRIMARY KEY, name text);
INSERT INTO clients SELECT g, 'c' || g FROM generate_series(1, 30) g;
-- new
ALTER TABLE clients RENAME TO customers;
