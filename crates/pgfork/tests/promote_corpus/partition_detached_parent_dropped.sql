-- A partition detached and kept, its partitioned parent dropped (with its other partition).
-- expect: promote
-- old
CREATE TABLE readings (id int NOT NULL, at int NOT NULL, v int, CHECK (v > -1000)) PARTITION BY RANGE (at);
ALTER TABLE readings ADD PRIMARY KEY (id, at);
CREATE INDEX readings_v ON readings (v);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
CREATE TABLE readings_1 PARTITION OF readings FOR VALUES FROM (100) TO (200);
INSERT INTO readings SELECT g, g, g FROM generate_series(0, 199) g;
-- new
ALTER TABLE readings DETACH PARTITION readings_1;
DROP TABLE readings;
ALTER TABLE readings_1 RENAME TO readings_archive;
