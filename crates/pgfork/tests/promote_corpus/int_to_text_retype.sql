-- int to text and numeric scale change: casts exist.
-- expect: promote
-- old
CREATE TABLE t (id int PRIMARY KEY, code int, amount numeric(8,2));
INSERT INTO t SELECT g, g * 10, g / 3.0 FROM generate_series(1, 20) g;
-- new
ALTER TABLE t ALTER COLUMN code TYPE text;
ALTER TABLE t ALTER COLUMN amount TYPE numeric(12,4);
