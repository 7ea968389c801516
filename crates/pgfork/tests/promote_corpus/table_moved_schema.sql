-- A table moved to another schema.
-- expect: promote
-- old
CREATE SCHEMA archive;
CREATE TABLE old_orders (id int PRIMARY KEY, total int);
INSERT INTO old_orders SELECT g, g FROM generate_series(1, 10) g;
-- new
ALTER TABLE old_orders SET SCHEMA archive;
