-- A NOT VALID check constraint validated, a foreign key added NOT VALID.
-- expect: promote
-- old
CREATE TABLE a (id int PRIMARY KEY);
CREATE TABLE b (id int PRIMARY KEY, a_id int, n int);
ALTER TABLE b ADD CONSTRAINT n_pos CHECK (n > 0) NOT VALID;
INSERT INTO a VALUES (1);
INSERT INTO b VALUES (1, 1, 1);
-- new
ALTER TABLE b VALIDATE CONSTRAINT n_pos;
ALTER TABLE b ADD CONSTRAINT b_a FOREIGN KEY (a_id) REFERENCES a (id) NOT VALID;
