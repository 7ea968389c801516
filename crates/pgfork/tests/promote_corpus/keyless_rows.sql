-- Rows of a table without a key: duplicates added and removed.
-- expect: promote
-- old
CREATE TABLE log (at int, what text);
INSERT INTO log SELECT g % 5, 'x' FROM generate_series(1, 40) g;
-- new
DELETE FROM log WHERE ctid IN (SELECT ctid FROM log WHERE at = 1 LIMIT 3);
INSERT INTO log VALUES (2, 'x'), (2, 'x'), (NULL, NULL);
