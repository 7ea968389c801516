-- A new schema with a table, a sequence owned by a column, grants and comments.
-- expect: promote
-- old
CREATE TABLE t (id int PRIMARY KEY);
-- new
CREATE SCHEMA billing;
CREATE SEQUENCE billing.invoice_no START 1000;
CREATE TABLE billing.invoices (no int PRIMARY KEY DEFAULT nextval('billing.invoice_no'), total numeric);
ALTER SEQUENCE billing.invoice_no OWNED BY billing.invoices.no;
INSERT INTO billing.invoices (total) VALUES (10), (20);
COMMENT ON TABLE billing.invoices IS 'one row per invoice';
