-- An index on a partitioned table (made on every partition), and a primary key.
-- expect: promote
-- old
CREATE TABLE readings (at int NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
CREATE TABLE readings_1 PARTITION OF readings FOR VALUES FROM (100) TO (200);
-- new
CREATE INDEX readings_v ON readings (v);
ALTER TABLE readings ADD PRIMARY KEY (at);
