-- A partition's bound widened (detach, attach with the new bound).
-- expect: promote
-- old
CREATE TABLE readings (at int NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
INSERT INTO readings SELECT g, g FROM generate_series(0, 99) g;
-- new
ALTER TABLE readings DETACH PARTITION readings_0;
ALTER TABLE readings ATTACH PARTITION readings_0 FOR VALUES FROM (0) TO (500);
INSERT INTO readings VALUES (300, 3);
