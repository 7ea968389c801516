-- A partition's own index attached to a new index of the parent.
-- expect: promote
-- old
CREATE TABLE readings (at int NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
CREATE INDEX readings_0_v ON readings_0 (v);
-- new
CREATE INDEX readings_v ON ONLY readings (v);
ALTER INDEX readings_v ATTACH PARTITION readings_0_v;
