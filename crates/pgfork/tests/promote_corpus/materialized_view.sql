-- A materialized view created with an index, another changed.
-- expect: promote
-- old
CREATE TABLE sales (id int PRIMARY KEY, region text, amount int);
INSERT INTO sales SELECT g, 'r' || (g % 3), g FROM generate_series(1, 30) g;
CREATE MATERIALIZED VIEW totals AS SELECT region, sum(amount) AS s FROM sales GROUP BY region;
-- new
DROP MATERIALIZED VIEW totals;
CREATE MATERIALIZED VIEW totals AS SELECT region, sum(amount) AS s, count(*) AS n FROM sales GROUP BY region;
CREATE MATERIALIZED VIEW big AS SELECT * FROM sales WHERE amount > 20;
CREATE UNIQUE INDEX big_id ON big (id);
