-- A partition moved from one partitioned table to another.
-- expect: promote
-- old
CREATE TABLE a (at int NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE b (at int NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE p PARTITION OF a FOR VALUES FROM (0) TO (100);
INSERT INTO a SELECT g, g FROM generate_series(0, 20) g;
-- new
ALTER TABLE a DETACH PARTITION p;
ALTER TABLE b ATTACH PARTITION p FOR VALUES FROM (0) TO (100);
