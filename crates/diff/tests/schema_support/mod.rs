//! A throwaway PostgreSQL cluster for the schema diff tests.
//!
//! `initdb` into a directory under /var/tmp, a postmaster listening on a
//! unix socket only (no TCP port to collide with), run as the unprivileged
//! `postgres` OS user when the tests run as root (PostgreSQL refuses root).
//! Dropping the cluster stops the server and removes the directory.
//!
//! The binaries come from `PGFORK_TEST_PG_BIN`, else
//! /usr/lib/postgresql/15/bin: these tests are about PostgreSQL 15's
//! catalogs, and a missing server is a failure, never a skip.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pgfork_os::{ProcessId, RunAs};
use pgfork_pg::PgBinaries;
use pgfork_pg::server::{self, StartSpec, StopMode};

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// A running throwaway cluster.
pub struct Cluster {
    /// Everything of this cluster lives here.
    pub root: PathBuf,
    /// Directory of the unix socket.
    pub socket_dir: PathBuf,
    /// Port number (names the socket file only).
    pub port: u16,
    /// The server binaries.
    pub bins: PgBinaries,
    pid: ProcessId,
}

fn bin_dir() -> PathBuf {
    std::env::var_os("PGFORK_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

impl Cluster {
    /// initdb and start. Panics with the reason if anything fails.
    pub fn start() -> Cluster {
        let dir = bin_dir();
        let bins = PgBinaries::at(&dir).unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server binaries in {} (set PGFORK_TEST_PG_BIN, or install \
                 postgresql-15): the schema diff tests need a real server and are never skipped",
                dir.display()
            )
        });
        assert_eq!(
            bins.version.major, 15,
            "the schema diff tests are written against PostgreSQL 15's catalogs"
        );
        let run_as = RunAs::resolve("postgres").expect("OS user postgres to run the server");
        let n = CLUSTERS.fetch_add(1, Ordering::SeqCst);
        let root = PathBuf::from(format!(
            "/var/tmp/pgfork-schema-test-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create cluster directory");
        let datadir = root.join("data");
        std::fs::create_dir(&datadir).expect("create data directory");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&datadir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod data directory");
        run_as.chown(&datadir).expect("chown data directory");
        run_as.chown(&root).expect("chown cluster directory");
        pgfork_pg::initdb::initdb(&bins, &datadir, &run_as).expect("initdb");
        let socket_dir = root.join("sock");
        let log = root.join("postgres.log");
        let socket = socket_dir.display().to_string();
        let port = 5432;
        let pm = server::start(&StartSpec {
            bins: &bins,
            datadir: &datadir,
            log: &log,
            run_as: &run_as,
            socket_dir: &socket_dir,
            port,
            overrides: &[
                ("listen_addresses", ""),
                ("unix_socket_directories", &socket),
                ("fsync", "off"),
                ("max_connections", "20"),
                ("shared_buffers", "16MB"),
            ],
            timeout: Duration::from_secs(60),
            cgroup: None,
        })
        .expect("start the test server");
        Cluster {
            root,
            socket_dir,
            port,
            bins,
            pid: pm.pid,
        }
    }

    /// A superuser connection to `db`.
    pub fn connect(&self, db: &str) -> postgres::Client {
        pgfork_pg::untrusted::session::superuser_in(
            &pgfork_pg::untrusted::session::Endpoint {
                socket_dir: self.socket_dir.clone(),
                port: self.port,
            },
            db,
        )
        .unwrap_or_else(|e| panic!("connect to {db}: {e}"))
    }

    /// Runs SQL (several statements) in `db`, panicking with the error.
    pub fn exec(&self, db: &str, sql: &str) {
        let mut c = self.connect(db);
        if let Err(e) = c.batch_execute(sql) {
            panic!("running SQL in {db} failed: {e}\n{}", detail(&e));
        }
    }

    /// `pg_dump --schema-only` of `db`.
    pub fn dump(&self, db: &str) -> String {
        let out = Command::new(self.bins.tool("pg_dump"))
            .arg("--schema-only")
            .arg("--host")
            .arg(&self.socket_dir)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--username", "postgres", "--dbname", db])
            // pg_dump puts a random key in its \restrict lines; fix it so
            // two dumps of the same schema are the same text.
            .arg("--restrict-key=pgforkschematest")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump {db} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("pg_dump output is UTF-8")
    }

    /// A libpq URL for `db` over the socket, with SQLAlchemy's driver
    /// prefix when given.
    pub fn url(&self, scheme: &str, db: &str) -> String {
        format!(
            "{scheme}://postgres@/{db}?host={}&port={}",
            self.socket_dir.display(),
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = server::stop(self.pid, StopMode::Immediate, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The server's message, detail and hint, which `Display` leaves out.
pub fn detail(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (detail: {:?}, hint: {:?}, where: {:?})",
            db.code().code(),
            db.message(),
            db.detail(),
            db.hint(),
            db.where_()
        ),
        None => e.to_string(),
    }
}

/// Applies statements in one transaction; on failure, says which one.
pub fn apply(client: &mut postgres::Client, statements: &[String]) {
    let mut tx = client.transaction().expect("begin");
    for (i, sql) in statements.iter().enumerate() {
        if let Err(e) = tx.batch_execute(sql) {
            panic!(
                "statement {} of {} failed: {}\n--- statement ---\n{sql}\n--- whole script ---\n{}",
                i + 1,
                statements.len(),
                detail(&e),
                statements.join(";\n")
            );
        }
    }
    tx.commit().expect("commit");
}

/// A unified diff of two texts (for failure messages), by `diff -u`.
pub fn text_diff(a: &str, b: &str, dir: &Path) -> String {
    let left = dir.join("left.txt");
    let right = dir.join("right.txt");
    std::fs::write(&left, a).expect("write left");
    std::fs::write(&right, b).expect("write right");
    let out = Command::new("diff")
        .arg("-u")
        .arg(&left)
        .arg(&right)
        .output()
        .expect("run diff");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Roles the schemas grant to (roles belong to the cluster, not a database).
pub const ROLES: &str = "
CREATE ROLE schema_reader;
CREATE ROLE schema_writer;
";

/// The base schema: at least one object of every kind the diff covers.
pub const BASE: &str = r#"
CREATE SCHEMA app;
CREATE EXTENSION citext;
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN app.positive AS integer CHECK (VALUE > 0);
CREATE DOMAIN app.email AS citext CONSTRAINT email_at CHECK (VALUE LIKE '%@%');
CREATE TYPE app.address AS (street text, city text);
CREATE SEQUENCE app.invoice_no START 1000 INCREMENT 10;

CREATE FUNCTION app.default_status() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'new' $$;
CREATE FUNCTION app.double_it(x integer) RETURNS integer LANGUAGE sql IMMUTABLE RETURN x * 2;

CREATE TABLE app.customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email app.email NOT NULL UNIQUE,
    name text NOT NULL,
    mood app.mood DEFAULT 'ok',
    address app.address,
    created_at timestamptz NOT NULL DEFAULT now(),
    legacy_code text
);
CREATE TABLE app.orders (
    id serial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES app.customers (id),
    total numeric(10,2) NOT NULL CHECK (total >= 0),
    quantity app.positive,
    note varchar(50),
    invoice integer DEFAULT nextval('app.invoice_no'),
    status text DEFAULT app.default_status(),
    CONSTRAINT orders_qty_check CHECK (app.double_it(quantity) < 10000)
);
ALTER TABLE app.orders ALTER COLUMN note SET STATISTICS 500;
CREATE INDEX orders_customer_idx ON app.orders (customer_id);
CREATE INDEX orders_status_idx ON app.orders (status) WHERE status <> 'done';

CREATE VIEW app.order_totals AS
    SELECT customer_id, sum(total) AS total FROM app.orders GROUP BY customer_id;
CREATE VIEW app.big_customers AS
    SELECT customer_id FROM app.order_totals WHERE total > 1000;
CREATE MATERIALIZED VIEW app.daily AS
    SELECT date_trunc('day', created_at) AS day, count(*) AS n FROM app.customers GROUP BY 1;
CREATE UNIQUE INDEX daily_day ON app.daily (day);

CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.note := coalesce(NEW.note, 'touched');
    RETURN NEW;
END $$;
CREATE TRIGGER orders_touch BEFORE INSERT ON app.orders
    FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE FUNCTION app.order_count(c bigint) RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT count(*) FROM app.orders WHERE customer_id = c $$;
CREATE PROCEDURE app.archive(days integer) LANGUAGE plpgsql
    AS $$ BEGIN DELETE FROM app.orders WHERE days < 0; END $$;

ALTER TABLE app.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY orders_reader ON app.orders FOR SELECT TO schema_reader USING (total < 100);

GRANT USAGE ON SCHEMA app TO schema_reader;
GRANT SELECT ON app.orders TO schema_reader;
GRANT SELECT (id, name) ON app.customers TO schema_reader;
REVOKE EXECUTE ON FUNCTION app.order_count(bigint) FROM PUBLIC;

COMMENT ON TABLE app.orders IS 'Orders';
COMMENT ON COLUMN app.orders.total IS 'Total in EUR';
COMMENT ON FUNCTION app.double_it(integer) IS 'Twice';

CREATE TABLE app.events (id bigint, at date NOT NULL, payload jsonb) PARTITION BY RANGE (at);
CREATE TABLE app.events_2024 PARTITION OF app.events
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE INDEX events_at ON app.events (at);

CREATE TABLE app.to_drop (id int PRIMARY KEY, v text);
CREATE VIEW app.to_drop_view AS SELECT * FROM app.to_drop;
CREATE TABLE public.settings (key text PRIMARY KEY, value text);

-- names that need quoting, and overloaded functions
CREATE TABLE app."OrderLines" ("Line No" integer PRIMARY KEY, "select" text, qty integer DEFAULT 1);
CREATE FUNCTION app.area(w integer, h integer DEFAULT 1) RETURNS integer
    LANGUAGE sql IMMUTABLE AS $$ SELECT w * h $$;
CREATE FUNCTION app.area(r numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE AS $$ SELECT 3.14159 * r * r $$;
"#;

/// What a branch does to the base: a change to every kind, in the order
/// PostgreSQL needs them (dropping and re-creating dependents by hand,
/// which the diff must work out by itself).
pub const CHANGES: &str = r#"
-- columns: added, dropped, default, type changes under views and a policy
ALTER TABLE app.customers ADD COLUMN phone text;
ALTER TABLE app.customers ADD COLUMN score integer NOT NULL DEFAULT 0;
ALTER TABLE app.customers DROP COLUMN legacy_code;
ALTER TABLE app.customers ALTER COLUMN name SET DEFAULT 'anonymous';
DROP VIEW app.big_customers;
DROP VIEW app.order_totals;
DROP POLICY orders_reader ON app.orders;
ALTER TABLE app.orders ALTER COLUMN total TYPE numeric(12,2);
ALTER TABLE app.orders ALTER COLUMN note TYPE text;
ALTER TABLE app.orders ALTER COLUMN note SET STATISTICS -1;
ALTER TABLE app.orders ALTER COLUMN note SET STORAGE MAIN;
ALTER TABLE app.orders ADD COLUMN total_with_tax numeric GENERATED ALWAYS AS (total * 1.2) STORED;
CREATE POLICY orders_reader ON app.orders FOR SELECT TO schema_reader USING (total < 200);
CREATE VIEW app.order_totals AS
    SELECT customer_id, sum(total) AS total, count(*) AS n FROM app.orders GROUP BY customer_id;
CREATE VIEW app.big_customers AS
    SELECT customer_id FROM app.order_totals WHERE total > 1000;
CREATE VIEW app.customer_orders AS
    SELECT c.name, t.total, t.n FROM app.customers c JOIN app.order_totals t ON t.customer_id = c.id;
ALTER TABLE public.settings ADD COLUMN id integer GENERATED BY DEFAULT AS IDENTITY;
ALTER TABLE public.settings ALTER COLUMN value SET NOT NULL;

-- a function re-created with another result type, used by a default
ALTER TABLE app.orders ALTER COLUMN status DROP DEFAULT;
DROP FUNCTION app.default_status();
CREATE FUNCTION app.default_status() RETURNS varchar LANGUAGE sql IMMUTABLE AS $$ SELECT 'new' $$;
ALTER TABLE app.orders ALTER COLUMN status SET DEFAULT app.default_status();
ALTER TABLE app.orders ALTER COLUMN status SET NOT NULL;
-- and one used by a check constraint
ALTER TABLE app.orders DROP CONSTRAINT orders_qty_check;
DROP FUNCTION app.double_it(integer);
CREATE FUNCTION app.double_it(x integer) RETURNS bigint LANGUAGE sql IMMUTABLE RETURN x * 2;
COMMENT ON FUNCTION app.double_it(integer) IS 'Twice';
ALTER TABLE app.orders ADD CONSTRAINT orders_qty_check CHECK (app.double_it(quantity) < 10000);

-- new extension, table with identity, foreign key, exclusion constraint
CREATE EXTENSION btree_gist;
CREATE TABLE app.bookings (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    room integer NOT NULL,
    during tstzrange NOT NULL,
    customer_id bigint REFERENCES app.customers (id) ON DELETE CASCADE,
    CONSTRAINT bookings_no_overlap EXCLUDE USING gist (room WITH =, during WITH &&)
);
ALTER TABLE app.orders ADD CONSTRAINT orders_note_len CHECK (length(note) < 500);
ALTER TABLE app.customers ADD CONSTRAINT customers_name_unique UNIQUE (name, created_at);
ALTER TABLE app.orders SET (fillfactor = 80);

-- indexes: one changed, one new
DROP INDEX app.orders_status_idx;
CREATE INDEX orders_status_idx ON app.orders (status, id);
CREATE INDEX customers_lower_name ON app.customers (lower(name));

-- materialized views: one changed (with its index), one new
DROP MATERIALIZED VIEW app.daily;
CREATE MATERIALIZED VIEW app.daily AS
    SELECT date_trunc('day', created_at) AS day, count(*) AS n, max(score) AS best
    FROM app.customers GROUP BY 1;
CREATE UNIQUE INDEX daily_day ON app.daily (day);
CREATE MATERIALIZED VIEW app.mood_counts AS
    SELECT mood, count(*) AS n FROM app.customers GROUP BY mood WITH NO DATA;

-- functions, procedures, triggers
CREATE OR REPLACE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.note := coalesce(NEW.note, 'touched by trigger');
    RETURN NEW;
END $$;
CREATE FUNCTION app.triple(x integer) RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT x * 3 $$;
CREATE PROCEDURE app.recompute(IN c bigint, INOUT n bigint) LANGUAGE plpgsql
    AS $$ BEGIN n := app.order_count(c); END $$;
DROP PROCEDURE app.archive(integer);
CREATE FUNCTION app.audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER customers_audit AFTER UPDATE OF name ON app.customers
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name) EXECUTE FUNCTION app.audit();
ALTER TABLE app.orders DISABLE TRIGGER orders_touch;

-- sequences
CREATE SEQUENCE app.ticket_seq AS integer START 5 CACHE 10;
ALTER SEQUENCE app.invoice_no INCREMENT BY 5 MAXVALUE 999999;
CREATE TABLE app.tickets (id integer DEFAULT nextval('app.ticket_seq') PRIMARY KEY, mood app.mood);
ALTER SEQUENCE app.ticket_seq OWNED BY app.tickets.id;

-- enums, domains, composite types
ALTER TYPE app.mood ADD VALUE 'ecstatic' AFTER 'happy';
ALTER TYPE app.mood ADD VALUE 'furious' BEFORE 'sad';
CREATE TYPE app.priority AS ENUM ('low', 'high');
ALTER DOMAIN app.positive ADD CONSTRAINT positive_small CHECK (VALUE < 1000000);
ALTER DOMAIN app.positive SET DEFAULT 1;
CREATE DOMAIN app.short_text AS text NOT NULL CHECK (length(VALUE) < 20);
ALTER TYPE app.address ADD ATTRIBUTE zip text;
CREATE TYPE app.money_pair AS (amount numeric, currency char(3));

-- a new schema with a view over two tables
CREATE SCHEMA reporting;
CREATE VIEW reporting.orders_by_mood AS
    SELECT c.mood, count(*) AS n FROM app.orders o JOIN app.customers c ON c.id = o.customer_id
    GROUP BY c.mood;

-- row-level security
CREATE POLICY orders_writer ON app.orders FOR INSERT TO schema_writer WITH CHECK (total > 0);
ALTER TABLE app.customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.customers FORCE ROW LEVEL SECURITY;

-- grants
GRANT INSERT, UPDATE ON app.orders TO schema_writer;
GRANT SELECT ON app.orders TO schema_writer WITH GRANT OPTION;
REVOKE SELECT ON app.orders FROM schema_reader;
GRANT SELECT (email) ON app.customers TO schema_reader;
GRANT USAGE ON SEQUENCE app.ticket_seq TO schema_writer;
GRANT EXECUTE ON FUNCTION app.order_count(bigint) TO schema_reader;
GRANT USAGE ON SCHEMA reporting TO schema_reader;
GRANT SELECT ON reporting.orders_by_mood TO schema_reader;
GRANT USAGE ON TYPE app.mood TO schema_writer;

-- comments
COMMENT ON TABLE app.orders IS 'All orders';
COMMENT ON COLUMN app.orders.total IS NULL;
COMMENT ON VIEW app.customer_orders IS 'Per customer';
COMMENT ON FUNCTION app.triple(integer) IS 'x3';
COMMENT ON SCHEMA reporting IS 'Reports';
COMMENT ON COLUMN app.customers.phone IS 'With country code';

-- drops
DROP VIEW app.to_drop_view;
DROP TABLE app.to_drop;

-- partitions: a new one, and a column added to the partitioned table
CREATE TABLE app.events_2025 PARTITION OF app.events
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
ALTER TABLE app.events ADD COLUMN source text;

-- ownership
ALTER TABLE public.settings OWNER TO schema_writer;

-- quoted names, clustering, overloads, OUT parameters
ALTER TABLE app."OrderLines" ADD COLUMN "Unit Price" numeric(8,2);
COMMENT ON COLUMN app."OrderLines"."Unit Price" IS 'per unit';
CREATE INDEX "Odd Index" ON app."OrderLines" ("select");
ALTER TABLE app."OrderLines" CLUSTER ON "Odd Index";
ALTER TABLE app."OrderLines" ALTER COLUMN qty SET DEFAULT 2;
GRANT UPDATE ("Unit Price") ON app."OrderLines" TO schema_writer;
CREATE OR REPLACE FUNCTION app.area(r numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE AS $$ SELECT pi() * r * r $$;
DROP FUNCTION app.area(integer, integer);
CREATE FUNCTION app.area(w integer, h integer, d integer DEFAULT 1) RETURNS integer
    LANGUAGE sql IMMUTABLE AS $$ SELECT w * h * d $$;
CREATE FUNCTION app.split(s text, OUT head text, OUT tail text)
    LANGUAGE sql IMMUTABLE AS $$ SELECT split_part(s, ' ', 1), split_part(s, ' ', 2) $$;
"#;

/// A second base, for the alteration paths the first pair does not take.
pub const BASE2: &str = r#"
CREATE SCHEMA s2;
CREATE TYPE s2.level AS ENUM ('low', 'high');
CREATE TABLE s2.parent (id integer GENERATED ALWAYS AS IDENTITY (START WITH 10) PRIMARY KEY,
                        label text COLLATE "C", body text, level s2.level DEFAULT 'low');
CREATE TABLE s2.child (extra text) INHERITS (s2.parent);
CREATE TABLE s2.refs (id bigint PRIMARY KEY, parent_id integer, note text NOT NULL);
ALTER TABLE s2.refs ADD CONSTRAINT refs_parent_fkey FOREIGN KEY (parent_id)
    REFERENCES s2.parent (id) NOT VALID;
ALTER TABLE s2.refs ADD CONSTRAINT refs_note_check CHECK (note <> '') NOT VALID;
CREATE UNIQUE INDEX refs_note_key ON s2.refs (note);
CREATE UNLOGGED TABLE s2.scratch (v text, k integer);
CREATE SEQUENCE s2.counter OWNED BY s2.scratch.k;
ALTER TABLE s2.scratch ALTER COLUMN k SET DEFAULT nextval('s2.counter');
CREATE VIEW s2.parent_view WITH (security_barrier = true) AS SELECT id, label FROM s2.parent;
CREATE FUNCTION s2.parent_view_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO s2.parent (label) VALUES (NEW.label); RETURN NEW; END $$;
CREATE TRIGGER parent_view_insert INSTEAD OF INSERT ON s2.parent_view
    FOR EACH ROW EXECUTE FUNCTION s2.parent_view_insert();
CREATE MATERIALIZED VIEW s2.labels AS SELECT DISTINCT label FROM s2.parent WITH NO DATA;
CREATE MATERIALIZED VIEW s2.levels AS SELECT DISTINCT level FROM s2.parent WITH NO DATA;
CREATE FUNCTION s2.secret(x integer) RETURNS integer LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog AS $$ SELECT x + 1 $$;
CREATE PROCEDURE s2.tidy() LANGUAGE sql AS $$ DELETE FROM s2.scratch WHERE k < 0 $$;
ALTER TABLE s2.refs ENABLE ROW LEVEL SECURITY;
CREATE POLICY refs_all ON s2.refs USING (true);
GRANT SELECT ON s2.refs TO schema_reader WITH GRANT OPTION;
GRANT USAGE ON SCHEMA s2 TO PUBLIC;
COMMENT ON CONSTRAINT refs_parent_fkey ON s2.refs IS 'fk';
COMMENT ON INDEX s2.refs_note_key IS 'unique notes';
"#;

/// Changes to [`BASE2`].
pub const CHANGES2: &str = r#"
ALTER TABLE s2.parent ALTER COLUMN id SET GENERATED BY DEFAULT;
ALTER TABLE s2.parent ALTER COLUMN id SET INCREMENT BY 5;
DROP VIEW s2.parent_view;
DROP MATERIALIZED VIEW s2.labels;
ALTER TABLE s2.parent ALTER COLUMN label TYPE text COLLATE "POSIX";
CREATE VIEW s2.parent_view WITH (security_barrier = false) AS SELECT id, label FROM s2.parent;
CREATE TRIGGER parent_view_insert INSTEAD OF INSERT OR UPDATE ON s2.parent_view
    FOR EACH ROW EXECUTE FUNCTION s2.parent_view_insert();
CREATE MATERIALIZED VIEW s2.labels AS SELECT DISTINCT label FROM s2.parent WITH NO DATA;
ALTER TABLE s2.parent ALTER COLUMN body SET COMPRESSION pglz;
ALTER TABLE s2.child ADD COLUMN more integer;
ALTER TABLE s2.refs VALIDATE CONSTRAINT refs_parent_fkey;
ALTER TABLE s2.refs DROP CONSTRAINT refs_note_check;
ALTER TABLE s2.refs ADD CONSTRAINT refs_note_check CHECK (length(note) > 1) NOT VALID;
ALTER TABLE s2.refs ADD CONSTRAINT refs_parent_fkey2 FOREIGN KEY (parent_id)
    REFERENCES s2.parent (id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE s2.refs REPLICA IDENTITY USING INDEX refs_note_key;
ALTER TABLE s2.scratch SET LOGGED;
ALTER SEQUENCE s2.counter OWNED BY NONE;
ALTER TABLE s2.scratch DROP COLUMN k;
REFRESH MATERIALIZED VIEW s2.levels;
CREATE OR REPLACE FUNCTION s2.secret(x integer) RETURNS integer LANGUAGE sql SECURITY DEFINER
    STABLE SET search_path = pg_catalog AS $$ SELECT x + 2 $$;
CREATE OR REPLACE PROCEDURE s2.tidy() LANGUAGE sql AS $$ DELETE FROM s2.scratch WHERE v IS NULL $$;
DROP POLICY refs_all ON s2.refs;
CREATE POLICY refs_all ON s2.refs AS RESTRICTIVE FOR UPDATE TO schema_reader USING (note <> 'x');
ALTER TABLE s2.refs FORCE ROW LEVEL SECURITY;
REVOKE GRANT OPTION FOR SELECT ON s2.refs FROM schema_reader;
REVOKE USAGE ON SCHEMA s2 FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE s2.tidy() FROM PUBLIC;
ALTER TYPE s2.level ADD VALUE 'mid' BEFORE 'high';
COMMENT ON CONSTRAINT refs_parent_fkey ON s2.refs IS 'validated fk';
COMMENT ON INDEX s2.refs_note_key IS NULL;
COMMENT ON TRIGGER parent_view_insert ON s2.parent_view IS 'writes through';
COMMENT ON POLICY refs_all ON s2.refs IS 'restrictive';
COMMENT ON SEQUENCE s2.counter IS 'free now';
COMMENT ON TYPE s2.level IS 'levels';
COMMENT ON MATERIALIZED VIEW s2.labels IS 'labels';
COMMENT ON PROCEDURE s2.tidy() IS 'tidy up';
COMMENT ON EXTENSION plpgsql IS 'PL/pgSQL, commented';
"#;
