-- A unique constraint on a partitioned table (it must hold the partition key), with new rows.
-- expect: promote
-- old
CREATE TABLE readings (at int NOT NULL, sensor int NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
CREATE TABLE readings_1 PARTITION OF readings FOR VALUES FROM (100) TO (200);
INSERT INTO readings SELECT g, 1, g FROM generate_series(0, 150) g;
-- new
ALTER TABLE readings ADD CONSTRAINT readings_key UNIQUE (at, sensor);
INSERT INTO readings SELECT g, 2, g FROM generate_series(0, 150) g;
UPDATE readings SET v = -v WHERE at % 10 = 0;
DELETE FROM readings WHERE at BETWEEN 50 AND 60 AND sensor = 1;
