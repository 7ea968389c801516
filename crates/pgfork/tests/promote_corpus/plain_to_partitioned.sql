-- A plain table rebuilt as a partitioned one.
-- expect: refuse
-- old
CREATE TABLE events (at int NOT NULL, what text);
INSERT INTO events SELECT g, 'e' FROM generate_series(0, 50) g;
-- new
ALTER TABLE events RENAME TO events_old;
CREATE TABLE events (at int NOT NULL, what text) PARTITION BY RANGE (at);
CREATE TABLE events_0 PARTITION OF events FOR VALUES FROM (0) TO (1000);
INSERT INTO events SELECT * FROM events_old;
DROP TABLE events_old;
