-- bigint epoch seconds to timestamptz: no cast from bigint.
-- expect: refuse
-- old
CREATE TABLE ticks (id int PRIMARY KEY, at bigint);
INSERT INTO ticks VALUES (1, 1700000000), (2, 1710000000);
-- new
ALTER TABLE ticks ALTER COLUMN at TYPE timestamptz USING to_timestamp(at);
