-- A primary key on one partition only.
-- expect: promote
-- old
CREATE TABLE readings (at int NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE readings_0 PARTITION OF readings FOR VALUES FROM (0) TO (100);
INSERT INTO readings SELECT g, g FROM generate_series(0, 50) g;
-- new
ALTER TABLE readings_0 ADD PRIMARY KEY (at);
