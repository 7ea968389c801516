-- Defaults of partitions' inherited columns: one partition gets its own,
-- one drops its default, one goes back to its parent's, and one keeps its
-- own while the parent's changes (the parent's SET DEFAULT reaches every
-- partition, so pgfork must set that one's again after it).
-- expect: promote
-- old
CREATE TABLE readings (at int NOT NULL, v int DEFAULT 1, w int DEFAULT 2) PARTITION BY RANGE (at);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
CREATE TABLE readings_1 PARTITION OF readings FOR VALUES FROM (100) TO (200);
CREATE TABLE readings_2 PARTITION OF readings FOR VALUES FROM (200) TO (300);
CREATE TABLE readings_3 PARTITION OF readings FOR VALUES FROM (300) TO (400);
ALTER TABLE readings_2 ALTER COLUMN v SET DEFAULT 9;
ALTER TABLE readings_3 ALTER COLUMN w SET DEFAULT 8;
INSERT INTO readings (at) SELECT g FROM generate_series(0, 350) g;
-- new
ALTER TABLE readings ALTER COLUMN w SET DEFAULT 3;
ALTER TABLE readings_3 ALTER COLUMN w SET DEFAULT 8;
ALTER TABLE readings_1 ALTER COLUMN w DROP DEFAULT;
ALTER TABLE readings_0 ALTER COLUMN v SET DEFAULT 7;
ALTER TABLE readings_2 ALTER COLUMN v SET DEFAULT 1;
INSERT INTO readings (at) VALUES (50), (150), (250), (350);
