-- A partitioned table rebuilt as a plain one.
-- expect: refuse
-- old
CREATE TABLE events (at int NOT NULL, what text) PARTITION BY RANGE (at);
CREATE TABLE events_0 PARTITION OF events FOR VALUES FROM (0) TO (1000);
INSERT INTO events SELECT g, 'e' FROM generate_series(0, 50) g;
-- new
CREATE TABLE events_new (at int NOT NULL, what text);
INSERT INTO events_new SELECT * FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
