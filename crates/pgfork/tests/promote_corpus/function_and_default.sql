-- A function changed, and a column default that calls a new function.
-- expect: promote
-- old
CREATE FUNCTION tax(n numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS 'SELECT n * 0.2';
CREATE TABLE orders (id int PRIMARY KEY, net numeric);
-- new
CREATE OR REPLACE FUNCTION tax(n numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS 'SELECT n * 0.25';
CREATE FUNCTION next_code() RETURNS text LANGUAGE sql AS $$ SELECT 'o-' || floor(random() * 1000)::int $$;
ALTER TABLE orders ADD COLUMN code text DEFAULT next_code();
INSERT INTO orders (id, net, code) VALUES (1, 10, 'fixed');
