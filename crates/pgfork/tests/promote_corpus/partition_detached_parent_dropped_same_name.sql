-- A partition detached and kept under its own name, its parent dropped: the
-- detach must come before the parent's DROP, which would take the partition.
-- expect: promote
-- old
CREATE TABLE readings (at int NOT NULL, v int) PARTITION BY RANGE (at);
CREATE INDEX readings_v ON readings (v);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
CREATE TABLE readings_1 PARTITION OF readings FOR VALUES FROM (100) TO (200);
INSERT INTO readings SELECT g, g FROM generate_series(0, 199) g;
-- new
ALTER TABLE readings DETACH PARTITION readings_1;
DROP TABLE readings;
