-- An enum value added and used by rows in the same migration.
-- expect: promote
-- old
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE feelings (id int PRIMARY KEY, m mood);
INSERT INTO feelings VALUES (1, 'sad'), (2, 'happy');
-- new
ALTER TYPE mood ADD VALUE 'ecstatic' AFTER 'happy';
INSERT INTO feelings VALUES (3, 'ecstatic');
UPDATE feelings SET m = 'ecstatic' WHERE id = 2;
