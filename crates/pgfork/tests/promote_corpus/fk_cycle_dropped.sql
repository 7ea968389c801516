-- Two tables referencing each other, both dropped.
-- expect: promote
-- old
CREATE TABLE husband (id int PRIMARY KEY, wife_id int);
CREATE TABLE wife (id int PRIMARY KEY, husband_id int REFERENCES husband (id));
ALTER TABLE husband ADD CONSTRAINT husband_wife FOREIGN KEY (wife_id) REFERENCES wife (id);
CREATE TABLE keep (id int PRIMARY KEY);
-- new
DROP TABLE husband, wife;
