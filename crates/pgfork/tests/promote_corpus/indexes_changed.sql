-- Indexes created, dropped and redefined (partial, expression, INCLUDE).
-- expect: promote
-- old
CREATE TABLE t (id int PRIMARY KEY, a int, b text);
CREATE INDEX t_a ON t (a);
CREATE INDEX t_b ON t (b);
INSERT INTO t SELECT g, g % 7, 'b' || g FROM generate_series(1, 100) g;
-- new
DROP INDEX t_a;
CREATE INDEX t_a ON t (a) WHERE a > 2;
CREATE INDEX t_lower_b ON t (lower(b)) INCLUDE (a);
DROP INDEX t_b;
