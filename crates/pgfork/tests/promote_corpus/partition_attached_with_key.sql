-- A table with its own primary key attached under a partitioned table with one.
-- expect: promote
-- old
CREATE TABLE readings (id int NOT NULL, at int NOT NULL, v int) PARTITION BY RANGE (at);
ALTER TABLE readings ADD PRIMARY KEY (id, at);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
CREATE TABLE readings_1 (id int NOT NULL, at int NOT NULL, v int, PRIMARY KEY (id, at));
INSERT INTO readings_1 SELECT g, g, g FROM generate_series(100, 150) g;
-- new
ALTER TABLE readings ATTACH PARTITION readings_1 FOR VALUES FROM (100) TO (200);
