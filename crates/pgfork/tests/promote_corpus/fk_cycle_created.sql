-- Two tables created referencing each other, with rows.
-- expect: promote
-- old
CREATE TABLE keep (id int PRIMARY KEY);
-- new
CREATE TABLE node (id int PRIMARY KEY, next_id int);
CREATE TABLE edge (id int PRIMARY KEY, node_id int REFERENCES node (id));
ALTER TABLE node ADD CONSTRAINT node_edge FOREIGN KEY (next_id) REFERENCES edge (id) DEFERRABLE INITIALLY DEFERRED;
BEGIN;
INSERT INTO node VALUES (1, 10);
INSERT INTO edge VALUES (10, 1);
COMMIT;
