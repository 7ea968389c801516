-- A new partition with rows; an old partition dropped.
-- expect: promote
-- old
CREATE TABLE readings (at int NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
CREATE TABLE readings_1 PARTITION OF readings FOR VALUES FROM (100) TO (200);
INSERT INTO readings SELECT g, g FROM generate_series(0, 199) g;
-- new
DROP TABLE readings_0;
CREATE TABLE readings_2 PARTITION OF readings FOR VALUES FROM (200) TO (300);
INSERT INTO readings SELECT g, g FROM generate_series(200, 250) g;
