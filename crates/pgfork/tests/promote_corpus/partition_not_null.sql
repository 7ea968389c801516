-- NOT NULL set on one partition's column, and dropped from another's.
-- expect: promote
-- old
CREATE TABLE readings (at int NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
CREATE TABLE readings_1 PARTITION OF readings (v NOT NULL) FOR VALUES FROM (100) TO (200);
INSERT INTO readings SELECT g, g FROM generate_series(0, 150) g;
-- new
ALTER TABLE readings_0 ALTER COLUMN v SET NOT NULL;
ALTER TABLE readings_1 ALTER COLUMN v DROP NOT NULL;
