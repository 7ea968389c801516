-- The partition key changed: the table must be rebuilt, rows moved.
-- expect: refuse
-- old
CREATE TABLE readings (at int NOT NULL, v int NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
INSERT INTO readings SELECT g, g FROM generate_series(0, 50) g;
-- new
DROP TABLE readings;
CREATE TABLE readings (at int NOT NULL, v int NOT NULL) PARTITION BY RANGE (v);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
INSERT INTO readings SELECT g, g FROM generate_series(0, 50) g;
