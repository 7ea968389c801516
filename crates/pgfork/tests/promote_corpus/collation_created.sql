-- A collation object created and used by a column.
-- expect: promote
-- old
CREATE TABLE names (id int PRIMARY KEY, n text);
-- new
CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
ALTER TABLE names ADD COLUMN m text COLLATE nocase;
