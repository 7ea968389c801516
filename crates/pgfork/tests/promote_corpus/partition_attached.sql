-- A plain table with rows attached as a partition.
-- expect: promote
-- old
CREATE TABLE readings (at int NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
CREATE TABLE readings_1 (at int NOT NULL, v int);
INSERT INTO readings_1 SELECT g, g FROM generate_series(100, 150) g;
-- new
ALTER TABLE readings ATTACH PARTITION readings_1 FOR VALUES FROM (100) TO (200);
