-- Columns added with defaults, dropped, widened, with NOT NULL and defaults changed.
-- expect: promote
-- old
CREATE TABLE items (id int PRIMARY KEY, name text, qty int DEFAULT 1, legacy text);
INSERT INTO items SELECT g, 'item ' || g, g, 'x' FROM generate_series(1, 50) g;
-- new
ALTER TABLE items ADD COLUMN price numeric(10,2) NOT NULL DEFAULT 0;
ALTER TABLE items DROP COLUMN legacy;
ALTER TABLE items ALTER COLUMN qty TYPE bigint;
ALTER TABLE items ALTER COLUMN qty SET DEFAULT 5;
ALTER TABLE items ALTER COLUMN name SET NOT NULL;
UPDATE items SET price = id * 1.5 WHERE id < 10;
