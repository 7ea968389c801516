-- Rows of a table without a key: duplicates added and removed, among them
-- values the agent wrote to break out of the patch's JSON literal (quotes,
-- backslashes, a closing bracket and a statement after it).
-- expect: promote
-- old
CREATE TABLE log (at int, what text, doc jsonb);
INSERT INTO log SELECT g % 5, 'x', NULL FROM generate_series(1, 40) g;
INSERT INTO log VALUES (7, $$it's "quoted" \ back$$, '{"k": "v''s"}'),
                       (7, $$it's "quoted" \ back$$, '{"k": "v''s"}'),
                       (8, $$"}]'::pg_catalog.jsonb) r) w; DROP TABLE log; --$$, '[1, "]"]');
-- new
DELETE FROM log WHERE ctid IN (SELECT ctid FROM log WHERE at = 1 LIMIT 3);
DELETE FROM log WHERE ctid IN (SELECT ctid FROM log WHERE at = 7 LIMIT 1);
DELETE FROM log WHERE at = 8;
INSERT INTO log VALUES (2, 'x', NULL), (2, 'x', NULL), (NULL, NULL, NULL),
                       (9, $$'); DROP TABLE log; --$$, '{"a": "\\u0027"}');
