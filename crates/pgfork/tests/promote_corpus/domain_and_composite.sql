-- A domain with a check, and a composite type, used by a new table.
-- expect: promote
-- old
CREATE TABLE t (id int PRIMARY KEY);
-- new
CREATE DOMAIN pct AS int CHECK (VALUE BETWEEN 0 AND 100);
CREATE TYPE money_amount AS (currency char(3), cents bigint);
CREATE TABLE prices (id int PRIMARY KEY, discount pct, amount money_amount);
INSERT INTO prices VALUES (1, 10, ('EUR', 1000)), (2, NULL, NULL);
