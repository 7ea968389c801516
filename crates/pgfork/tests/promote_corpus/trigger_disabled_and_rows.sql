-- A trigger that writes an audit table; rows changed through it; then disabled.
-- expect: promote
-- old
CREATE TABLE accounts (id int PRIMARY KEY, balance int);
CREATE TABLE audit (at serial PRIMARY KEY, account int, delta int);
CREATE FUNCTION log_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit (account, delta) VALUES (NEW.id, NEW.balance - OLD.balance); RETURN NEW; END $$;
CREATE TRIGGER accounts_audit AFTER UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION log_change();
INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 10) g;
-- new
UPDATE accounts SET balance = balance + 5 WHERE id <= 3;
ALTER TABLE accounts DISABLE TRIGGER accounts_audit;
UPDATE accounts SET balance = 0 WHERE id = 10;
