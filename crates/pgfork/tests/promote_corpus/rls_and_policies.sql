-- Row-level security switched on with policies; one policy changed.
-- expect: promote
-- old
CREATE TABLE docs (id int PRIMARY KEY, owner text, body text);
CREATE POLICY mine ON docs USING (owner = current_user);
INSERT INTO docs VALUES (1, 'a', 'x');
-- new
ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
ALTER TABLE docs FORCE ROW LEVEL SECURITY;
DROP POLICY mine ON docs;
CREATE POLICY mine ON docs FOR SELECT USING (owner = current_user OR owner IS NULL);
CREATE POLICY writes ON docs FOR INSERT WITH CHECK (owner = current_user);
