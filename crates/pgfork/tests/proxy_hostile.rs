//! The hostile battery (issue 11): statements and protocol sequences an
//! agent that read our code would send, each played against a read-only
//! and a dry-run credential on a real source, and after each one the
//! source's fingerprint (rows, schema, functions, privileges, roles,
//! settings, sequences apart from the documented `nextval` gap) is
//! unchanged, the application's connection lives, no lock or advisory
//! lock outlives the agent's statement, and no reply carries a secret.
//!
//! Every SQL entry is sent three ways: a simple Query, the extended
//! protocol (Parse/Bind/Describe/Execute/Sync), and inside the client's
//! own BEGIN ... COMMIT. The protocol entries are written frame by frame.

mod common;
mod proxy;

use common::{Pool, TestHome, exec};
use proxy::fingerprint::{Fingerprint, fingerprint};
use proxy::raw::{self, Raw, Transcript};
use proxy::{Proxy, agent};

/// What the application's idle connection last ran: no agent may see it.
const APP_MARKER: &str = "app-secret-marker-5d1c";

/// The source: tables, a sequence-backed key, functions that write, a
/// SECURITY DEFINER function of the owner (EXECUTE granted to PUBLIC, as
/// PostgreSQL grants by default), a procedure that commits.
const SOURCE_SQL: &str = "
CREATE TABLE accounts (id serial PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL);
INSERT INTO accounts (owner, balance) SELECT 'owner' || g, g * 100 FROM generate_series(1, 300) g;
CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL);
CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL);
INSERT INTO customers SELECT g, 'person' || g || '@example.com' FROM generate_series(1, 50) g;
CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS $$ UPDATE accounts SET balance = balance + 1 RETURNING 1 $$;
CREATE FUNCTION definer_write() RETURNS int LANGUAGE sql SECURITY DEFINER
    AS $$ INSERT INTO events (kind) VALUES ('definer') RETURNING 1 $$;
CREATE FUNCTION definer_drop() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
    AS $$BEGIN DROP TABLE customers; END$$;
CREATE PROCEDURE wipe() LANGUAGE plpgsql AS $$BEGIN DELETE FROM accounts; COMMIT; END$$;
CREATE VIEW rich AS SELECT * FROM accounts WHERE balance > 1000;
";

/// Which credentials an entry is played against.
#[derive(Debug, Clone, Copy, PartialEq)]
enum For {
    Both,
    ReadOnly,
    DryRun,
}

use For::*;

/// SQL entries: each string one Query (several statements where the
/// attack needs them), played three ways.
const STATEMENTS: &[(&str, For)] = &[
    // Plain writes.
    (
        "INSERT INTO accounts (owner, balance) VALUES ('mallory', 1000000)",
        Both,
    ),
    (
        "INSERT INTO events (kind) VALUES ('plain') RETURNING id",
        Both,
    ),
    ("UPDATE accounts SET balance = 0", Both),
    (
        "UPDATE accounts SET balance = balance * 2 WHERE id < 10 RETURNING *",
        Both,
    ),
    ("DELETE FROM accounts", Both),
    ("DELETE FROM customers WHERE id = 1", Both),
    ("TRUNCATE accounts", Both),
    ("TRUNCATE customers CASCADE", Both),
    (
        "MERGE INTO accounts a USING (SELECT 1 AS id) s ON a.id = s.id WHEN MATCHED THEN DELETE",
        Both,
    ),
    (
        "INSERT INTO accounts (id, owner, balance) VALUES (1, 'x', 1) ON CONFLICT (id) DO UPDATE SET owner = 'taken'",
        Both,
    ),
    ("UPDATE rich SET balance = 1", Both),
    ("COPY accounts (owner, balance) FROM STDIN", Both),
    ("COPY events (kind) FROM STDIN", Both),
    ("COPY accounts FROM '/etc/passwd'", Both),
    ("COPY accounts TO '/tmp/pgfork-stolen'", Both),
    ("COPY accounts TO PROGRAM 'id'", Both),
    ("SELECT * INTO stolen FROM accounts", Both),
    ("CREATE TABLE stolen AS SELECT * FROM accounts", Both),
    ("CREATE TEMP TABLE t AS SELECT * FROM accounts", Both),
    // Writes hidden in reads.
    (
        "WITH d AS (DELETE FROM accounts RETURNING *) SELECT count(*) FROM d",
        Both,
    ),
    (
        "WITH u AS (UPDATE accounts SET balance = -1 RETURNING 1) SELECT 1",
        Both,
    ),
    (
        "WITH x AS (INSERT INTO events (kind) VALUES ('cte') RETURNING 1) SELECT * FROM x",
        Both,
    ),
    ("SELECT bump()", Both),
    (
        "SELECT * FROM accounts, LATERAL (SELECT bump()) b LIMIT 1",
        Both,
    ),
    ("VALUES ((SELECT bump()))", Both),
    ("SELECT definer_write()", Both),
    ("SELECT definer_drop()", Both),
    (
        "SELECT count(*) FROM (SELECT definer_write() FROM generate_series(1, 5)) s",
        Both,
    ),
    ("EXPLAIN ANALYZE DELETE FROM accounts", Both),
    ("EXPLAIN (ANALYZE, BUFFERS) SELECT definer_write()", Both),
    ("CALL wipe()", Both),
    ("DO $$BEGIN DELETE FROM accounts; END$$", Both),
    ("DO $$BEGIN PERFORM definer_write(); END$$", Both),
    (
        "DO $$BEGIN EXECUTE 'DELETE FROM ' || 'accounts'; END$$",
        Both,
    ),
    (
        "DO $$BEGIN COMMIT; DELETE FROM accounts; COMMIT; END$$",
        Both,
    ),
    ("PREPARE p AS DELETE FROM accounts; EXECUTE p", Both),
    (
        "DECLARE c CURSOR WITH HOLD FOR SELECT bump() FROM accounts",
        Both,
    ),
    ("SELECT * FROM accounts FOR UPDATE", Both),
    ("SELECT * FROM customers FOR NO KEY UPDATE NOWAIT", Both),
    // DDL and ownership.
    ("DROP TABLE accounts", Both),
    ("DROP TABLE customers CASCADE", Both),
    ("ALTER TABLE accounts ADD COLUMN pwned int", Both),
    ("ALTER TABLE accounts DISABLE TRIGGER ALL", Both),
    ("ALTER TABLE accounts OWNER TO CURRENT_USER", Both),
    ("ALTER TABLE accounts RENAME TO gone", Both),
    (
        "ALTER TABLE accounts ALTER COLUMN balance DROP NOT NULL",
        Both,
    ),
    ("ALTER SEQUENCE accounts_id_seq RESTART WITH 999999", Both),
    ("ALTER FUNCTION definer_write() OWNER TO CURRENT_USER", Both),
    ("CREATE TABLE pwned (a int)", Both),
    ("CREATE INDEX pwned_idx ON accounts (owner)", Both),
    ("CREATE VIEW pwned_v AS SELECT 1", Both),
    ("CREATE SCHEMA pwned", Both),
    (
        "CREATE FUNCTION pwned() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        Both,
    ),
    (
        "CREATE OR REPLACE FUNCTION bump() RETURNS int LANGUAGE sql AS 'SELECT 2'",
        Both,
    ),
    (
        "CREATE TRIGGER t BEFORE INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION bump()",
        Both,
    ),
    (
        "CREATE RULE r AS ON INSERT TO accounts DO INSTEAD NOTHING",
        Both,
    ),
    ("CREATE POLICY p ON accounts USING (false)", Both),
    ("CREATE TYPE pwned_t AS ENUM ('a')", Both),
    ("CREATE EXTENSION pgcrypto", Both),
    ("CREATE PUBLICATION pwned FOR ALL TABLES", Both),
    ("COMMENT ON TABLE accounts IS 'pwned'", Both),
    ("SECURITY LABEL ON TABLE accounts IS 'x'", Both),
    ("GRANT ALL ON accounts TO PUBLIC", Both),
    ("REVOKE ALL ON accounts FROM PUBLIC", Both),
    (
        "ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC",
        Both,
    ),
    ("REINDEX TABLE accounts", Both),
    ("CLUSTER accounts USING accounts_pkey", Both),
    ("ANALYZE accounts", Both),
    ("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE", Both),
    ("LOCK TABLE customers IN SHARE ROW EXCLUSIVE MODE", Both),
    // Statements that cannot run in a transaction block.
    ("VACUUM FULL accounts", Both),
    ("VACUUM", Both),
    (
        "CREATE INDEX CONCURRENTLY pwned_c ON accounts (owner)",
        Both,
    ),
    ("DROP INDEX CONCURRENTLY accounts_pkey", Both),
    ("REINDEX TABLE CONCURRENTLY accounts", Both),
    ("CREATE DATABASE pwned", Both),
    ("DROP DATABASE bank", Both),
    ("ALTER SYSTEM SET fsync = off", Both),
    ("ALTER SYSTEM RESET ALL", Both),
    ("CHECKPOINT", Both),
    // Roles and settings of the cluster.
    ("CREATE ROLE evil SUPERUSER LOGIN", Both),
    ("CREATE ROLE evil", Both),
    (
        "ALTER ROLE CURRENT_USER SET default_transaction_read_only = off",
        Both,
    ),
    ("ALTER ROLE CURRENT_USER PASSWORD 'x'", Both),
    ("ALTER ROLE CURRENT_USER CONNECTION LIMIT -1", Both),
    (
        "ALTER DATABASE bank SET default_transaction_read_only = off",
        Both,
    ),
    ("GRANT pg_signal_backend TO CURRENT_USER", Both),
    ("GRANT pg_read_all_stats TO CURRENT_USER", Both),
    ("SET ROLE postgres", Both),
    ("SET SESSION AUTHORIZATION postgres", Both),
    ("RESET ROLE; DELETE FROM accounts", Both),
    (
        "SET session_replication_role = replica; DELETE FROM accounts",
        Both,
    ),
    // Transaction control: simulated, never forwarded.
    (
        "BEGIN READ ONLY, READ WRITE; INSERT INTO events (kind) VALUES ('rw'); COMMIT",
        Both,
    ),
    ("BEGIN READ WRITE; SELECT definer_write(); COMMIT", Both),
    (
        "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE; DELETE FROM accounts; COMMIT",
        Both,
    ),
    (
        "START TRANSACTION READ WRITE; DELETE FROM accounts; COMMIT",
        Both,
    ),
    (
        "BEGIN; SET TRANSACTION READ WRITE; DELETE FROM accounts; COMMIT",
        Both,
    ),
    (
        "BEGIN; SET LOCAL transaction_read_only = off; DELETE FROM accounts; COMMIT",
        Both,
    ),
    (
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DELETE FROM accounts",
        Both,
    ),
    (
        "SET default_transaction_read_only = off; DELETE FROM accounts",
        Both,
    ),
    (
        "SELECT set_config('default_transaction_read_only', 'off', false); DELETE FROM accounts",
        Both,
    ),
    (
        "SELECT set_config('transaction_read_only', 'off', true); DELETE FROM accounts",
        Both,
    ),
    (
        "COMMIT; INSERT INTO events (kind) VALUES ('after commit'); COMMIT",
        Both,
    ),
    ("ROLLBACK; DELETE FROM accounts; COMMIT", Both),
    ("END; DELETE FROM accounts; END", Both),
    ("ABORT; DELETE FROM accounts; COMMIT", Both),
    (
        "BEGIN; DELETE FROM accounts; COMMIT AND CHAIN; DELETE FROM customers; COMMIT",
        Both,
    ),
    (
        "BEGIN; DELETE FROM accounts; PREPARE TRANSACTION 'pwned'",
        Both,
    ),
    ("COMMIT PREPARED 'pwned'", Both),
    (
        "BEGIN; SAVEPOINT a; DELETE FROM accounts; RELEASE a; COMMIT",
        Both,
    ),
    (
        "BEGIN; DELETE FROM accounts; ROLLBACK TO SAVEPOINT nowhere; COMMIT",
        Both,
    ),
    ("BEGIN; BEGIN; DELETE FROM accounts; COMMIT; COMMIT", Both),
    ("SELECT 1; COMMIT; DELETE FROM accounts", Both),
    // Parser differentials: text two parsers could read differently.
    (
        "SELECT 'a\\'' ; COMMIT; INSERT INTO events (kind) VALUES ('x'); -- '",
        Both,
    ),
    (
        "SET standard_conforming_strings = off; SELECT 'a\\'' ; COMMIT; INSERT INTO events (kind) VALUES ('x'); -- '",
        Both,
    ),
    (
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        Both,
    ),
    (
        "DO $$BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); END$$",
        Both,
    ),
    ("SET client_encoding = 'SJIS'", Both),
    ("SET NAMES 'BIG5'", Both),
    ("SELECT set_config('client_encoding', 'GBK', false)", Both),
    (
        "SET backslash_quote = on; SELECT E'a\\'' ; COMMIT; DELETE FROM accounts; -- '",
        Both,
    ),
    ("SELECT E'\\\\'; DELETE FROM accounts; SELECT '\\'", Both),
    (
        "SELECT $a$ ' $a$; COMMIT; DELETE FROM accounts; SELECT $a$ ' $a$",
        Both,
    ),
    ("SELECT $$ $a$ $$; COMMIT; DELETE FROM accounts", Both),
    (
        "SELECT 1 /* nested /* comment */ ; COMMIT; DELETE FROM accounts; */",
        Both,
    ),
    ("SELECT 1 -- ; COMMIT; DELETE FROM accounts", Both),
    ("SELECT U&'\\0027'; COMMIT; DELETE FROM accounts", Both),
    (
        "SELECT U&'d!0027' UESCAPE '!'; COMMIT; DELETE FROM accounts",
        Both,
    ),
    (
        "SELECT 1 AS \"a\"\"; COMMIT; DELETE FROM accounts; --\"",
        Both,
    ),
    ("SELECT 1 ;;; ; DELETE FROM accounts", Both),
    ("SELECT 1 \\; DELETE FROM accounts", Both),
    ("SELEC 1; DELETE FROM accounts", Both),
    ("DELETE FROM accounts; SELEC 1", Both),
    (
        "COMMIT; INSERT INTO events (kind) VALUES ('x'); COMMIT; SELECT JSON_EXISTS(jsonb '{}', '$' ERROR ON ERROR)",
        Both,
    ),
    ("SELECT 'unterminated; DELETE FROM accounts", Both),
    ("DELETE FROM accounts /* unterminated", Both),
    ("SELECT $$ unterminated; DELETE FROM accounts", Both),
    ("SELECT e'\\x27'; COMMIT; DELETE FROM accounts", Both),
    ("SELECT 'é'; COMMIT; DELETE FROM accounts; SELECT 'ü'", Both),
    // Functions whose effects a rollback does not undo.
    ("SELECT setval('accounts_id_seq', 999999)", Both),
    (
        "SELECT setval(oid, 999999) FROM pg_class WHERE relname = 'events_id_seq'",
        Both,
    ),
    (
        "DO $$BEGIN PERFORM setval('accounts_id_seq', 999999); END$$",
        Both,
    ),
    (
        "CREATE OPERATOR pg_temp.### (LEFTARG = regclass, RIGHTARG = bigint, FUNCTION = pg_catalog.setval); SELECT 'accounts_id_seq'::regclass OPERATOR(pg_temp.###) 999999",
        Both,
    ),
    (
        "CREATE FUNCTION pg_temp.s() RETURNS bigint LANGUAGE sql AS $$SELECT setval('accounts_id_seq', 999999)$$; SELECT pg_temp.s()",
        Both,
    ),
    ("SELECT nextval('events_id_seq')", Both),
    ("SELECT pg_advisory_lock(42)", Both),
    (
        "SELECT pg_try_advisory_lock(7), pg_advisory_lock_shared(42)",
        Both,
    ),
    ("DO $$BEGIN PERFORM pg_advisory_lock(42); END$$", Both),
    (
        "CREATE FUNCTION pg_temp.l() RETURNS void LANGUAGE sql AS 'SELECT pg_advisory_lock(42)'; SELECT pg_temp.l()",
        Both,
    ),
    (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
        Both,
    ),
    (
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
        Both,
    ),
    (
        "DO $$DECLARE p int; BEGIN FOR p IN SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() LOOP PERFORM pg_terminate_backend(p); END LOOP; END$$",
        Both,
    ),
    ("SELECT pg_reload_conf()", Both),
    ("SELECT pg_rotate_logfile()", Both),
    ("SELECT pg_stat_reset()", Both),
    ("SELECT pg_switch_wal()", Both),
    ("SELECT pg_create_restore_point('pwned')", Both),
    ("SELECT pg_create_physical_replication_slot('pwned')", Both),
    (
        "SELECT pg_create_logical_replication_slot('pwned', 'test_decoding')",
        Both,
    ),
    ("SELECT pg_read_file('/etc/passwd')", Both),
    ("SELECT pg_ls_dir('.')", Both),
    ("SELECT lo_import('/etc/passwd')", Both),
    ("SELECT lo_export(1, '/tmp/pgfork-lo')", Both),
    ("SELECT lo_create(4242)", Both),
    ("SELECT lo_from_bytea(0, 'x')", Both),
    ("SELECT pg_notify('pwned', 'x')", Both),
    ("NOTIFY pwned, 'x'", Both),
    ("LISTEN pwned", Both),
    ("SELECT txid_current()", Both),
    (
        "SELECT set_config('lock_timeout', '0', false), set_config('statement_timeout', '0', false)",
        Both,
    ),
    ("SET statement_timeout = 0", Both),
    ("SET idle_in_transaction_session_timeout = 0", Both),
    ("DISCARD ALL", Both),
    ("LOAD 'auto_explain'", Both),
    // Secrets and other sessions.
    ("SELECT rolname, rolpassword FROM pg_authid", Both),
    ("SELECT * FROM pg_catalog.pg_authid", Both),
    ("SELECT passwd FROM pg_shadow", Both),
    ("SELECT usename, query FROM pg_stat_activity", Both),
    (
        "SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
        Both,
    ),
    ("SELECT * FROM pg_user_mappings", Both),
];

/// A protocol entry: frames to write, and how many ReadyForQuery
/// messages the exchange ends with.
type Frames = fn() -> (Vec<u8>, usize);

/// Message sequences written frame by frame.
const SEQUENCES: &[(&str, Frames)] = &[
    (
        "Execute(ROLLBACK), a refused Parse, then a Query before Sync",
        || {
            let f = [
                raw::extended("ROLLBACK"),
                raw::parse("", "SELEC broken"),
                raw::query("INSERT INTO events (kind) VALUES ('autocommit?')"),
                raw::sync(),
            ];
            // As in PostgreSQL, the Query is skipped with the rest up to Sync.
            (f.concat(), 1)
        },
    ),
    (
        "Query(BEGIN), Execute(ROLLBACK) without Sync, Query(INSERT)",
        || {
            let f = [
                raw::query("BEGIN"),
                raw::extended("ROLLBACK"),
                raw::query("INSERT INTO events (kind) VALUES ('autocommit?')"),
                raw::sync(),
                raw::query("COMMIT"),
            ];
            (f.concat(), 4)
        },
    ),
    ("a pending parse error, then Query(DELETE)", || {
        let f = [
            raw::parse("", "DELETE FROM"),
            raw::query("DELETE FROM accounts"),
            raw::sync(),
        ];
        (f.concat(), 1)
    }),
    ("Parse of two statements", || {
        (
            [raw::extended("SELECT 1; DELETE FROM accounts"), raw::sync()].concat(),
            1,
        )
    }),
    ("a named statement redefined after Close", || {
        let f = [
            raw::parse("s", "SELECT 1"),
            raw::sync(),
            raw::close_statement("s"),
            raw::parse("s", "DELETE FROM accounts"),
            raw::bind("", "s", &[]),
            raw::execute("", 0),
            raw::sync(),
        ];
        (f.concat(), 2)
    }),
    ("Bind of a statement whose Parse the server skipped", || {
        let f = [
            raw::parse("", "SELEC 1"),
            raw::parse("w", "DELETE FROM accounts"),
            raw::sync(),
            raw::bind("", "w", &[]),
            raw::execute("", 0),
            raw::sync(),
        ];
        (f.concat(), 2)
    }),
    ("Bind and Execute of the proxy's own names", || {
        let f = [
            raw::bind("pgfork_own", "pgfork_own", &[]),
            raw::execute("pgfork_own", 0),
            raw::parse("pgfork_own", "DELETE FROM accounts"),
            raw::sync(),
        ];
        (f.concat(), 1)
    }),
    ("a pipeline that commits between writes", || {
        let f = [
            raw::extended("INSERT INTO events (kind) VALUES ('p1')"),
            raw::extended("COMMIT"),
            raw::extended("INSERT INTO events (kind) VALUES ('p2')"),
            raw::extended("COMMIT AND CHAIN"),
            raw::extended("DELETE FROM accounts"),
            raw::sync(),
        ];
        (f.concat(), 1)
    }),
    (
        "a suspended portal, a Query in between, the portal resumed",
        || {
            let f = [
                raw::parse("", "SELECT id FROM accounts"),
                raw::bind("c", "", &[]),
                raw::execute("c", 2),
                raw::query("DELETE FROM accounts"),
                raw::execute("c", 2),
                raw::sync(),
            ];
            (f.concat(), 2)
        },
    ),
    (
        "BEGIN READ WRITE and a write in one extended pipeline",
        || {
            let f = [
                raw::extended("BEGIN READ WRITE"),
                raw::extended("INSERT INTO events (kind) VALUES ('rw')"),
                raw::extended("COMMIT"),
                raw::sync(),
            ];
            (f.concat(), 1)
        },
    ),
    (
        "SET TRANSACTION READ WRITE inside the client's transaction",
        || {
            let f = [
                raw::query("BEGIN"),
                raw::extended("SET TRANSACTION READ WRITE"),
                raw::extended("DELETE FROM accounts"),
                raw::sync(),
                raw::query("COMMIT"),
            ];
            (f.concat(), 3)
        },
    ),
    (
        "a statement prepared inside a transaction, run after it",
        || {
            let f = [
                raw::query("BEGIN"),
                raw::parse("later", "DELETE FROM accounts"),
                raw::sync(),
                raw::query("COMMIT"),
                raw::bind("", "later", &[]),
                raw::execute("", 0),
                raw::sync(),
            ];
            (f.concat(), 4)
        },
    ),
    ("simple Queries pipelined without waiting", || {
        let f = [
            raw::query("BEGIN"),
            raw::query("DELETE FROM accounts"),
            raw::query("COMMIT"),
            raw::query("DELETE FROM customers"),
            raw::query("SELECT count(*) FROM accounts"),
        ];
        (f.concat(), 5)
    }),
    ("fastpath call of setval", || {
        // 1576: setval(regclass, bigint) in PostgreSQL's catalog.
        let f = [
            raw::function_call(1576, &["accounts_id_seq", "999999"]),
            raw::query("SELECT 1"),
        ];
        (f.concat(), 2)
    }),
    ("fastpath call of lo_import", || {
        (
            [
                raw::function_call(764, &["/etc/passwd"]),
                raw::query("SELECT 1"),
            ]
            .concat(),
            2,
        )
    }),
    ("COPY data where no COPY runs, then a write", || {
        let f = [
            raw::copy_data(b"1\tx\t1\n"),
            raw::copy_done(),
            raw::query("DELETE FROM accounts"),
        ];
        (f.concat(), 1)
    }),
    ("COPY FROM STDIN answered with a Query", || {
        let f = [
            raw::query("COPY events (kind) FROM STDIN"),
            raw::query("DELETE FROM accounts"),
        ];
        (f.concat(), 2)
    }),
    ("COPY FROM STDIN failed by the client, then a write", || {
        let f = [
            raw::query("COPY events (kind) FROM STDIN"),
            raw::copy_data(b"copied\n"),
            raw::copy_fail("changed my mind"),
            raw::query("DELETE FROM accounts"),
        ];
        (f.concat(), 2)
    }),
    (
        "COPY FROM STDIN in the extended protocol with Sync inside",
        || {
            let f = [
                raw::extended("COPY events (kind) FROM STDIN"),
                raw::sync(),
                raw::copy_data(b"copied\n"),
                raw::sync(),
                raw::copy_done(),
                raw::sync(),
                raw::query("SELECT 1"),
            ];
            (f.concat(), 2)
        },
    ),
    (
        "Describe and Execute of what does not exist, then a write",
        || {
            let f = [
                raw::describe_statement("nothing"),
                raw::execute("nowhere", 0),
                raw::sync(),
                raw::query("DELETE FROM accounts"),
            ];
            (f.concat(), 2)
        },
    ),
    (
        "Bind with the wrong number of parameters, then a write",
        || {
            let f = [
                raw::parse("", "SELECT $1::int"),
                raw::bind("", "", &[Some("1"), Some("2")]),
                raw::execute("", 0),
                raw::sync(),
                raw::query("DELETE FROM accounts"),
            ];
            (f.concat(), 2)
        },
    ),
    ("Sync and Flush with nothing to end", || {
        let f = [raw::sync(), raw::flush(), raw::sync(), raw::flush()];
        (f.concat(), 2)
    }),
    ("a thousand statements in one Query, a write last", || {
        let mut sql = "SELECT 1;".repeat(1000);
        sql.push_str("DELETE FROM accounts");
        (raw::query(&sql), 1)
    }),
    ("two hundred writes in one pipeline", || {
        let mut f: Vec<u8> = (0..200)
            .flat_map(|i| raw::extended(&format!("INSERT INTO events (kind) VALUES ('{i}')")))
            .collect();
        f.extend(raw::sync());
        (f, 1)
    }),
    ("a message of an unknown type", || {
        (
            [raw::frame(b'Y', b"x"), raw::query("DELETE FROM accounts")].concat(),
            1,
        )
    }),
    ("a length shorter than its header", || {
        (
            [
                b"Q\x00\x00\x00\x02".to_vec(),
                raw::query("DELETE FROM accounts"),
            ]
            .concat(),
            1,
        )
    }),
    ("a Query without its terminating NUL", || {
        (
            [raw::frame(b'Q', b"DELETE FROM accounts"), raw::sync()].concat(),
            1,
        )
    }),
    ("a Query of invalid UTF-8", || {
        (
            [raw::query_bytes(b"SELECT '\xff\xfe'; DELETE FROM accounts")].concat(),
            1,
        )
    }),
    ("SJIS bytes whose second byte is a backslash", || {
        (
            raw::query_bytes(b"SELECT E'\x81\\' ; COMMIT; DELETE FROM accounts; -- '"),
            1,
        )
    }),
    ("a password message after login", || {
        (
            [raw::frame(b'p', b"x\0"), raw::query("DELETE FROM accounts")].concat(),
            1,
        )
    }),
];

/// Startup parameters an agent might send.
const STARTUPS: &[(&str, &str)] = &[
    ("options", "-c default_transaction_read_only=off"),
    ("options", "-c standard_conforming_strings=off"),
    ("options", "-c session_replication_role=replica"),
    ("options", "-c search_path=evil"),
    ("client_encoding", "SJIS"),
    ("client_encoding", "GB18030"),
    ("standard_conforming_strings", "off"),
    ("default_transaction_read_only", "off"),
    ("replication", "database"),
    ("role", "postgres"),
    ("session_authorization", "postgres"),
    ("search_path", "evil"),
];

/// One policy's battery on its own home.
struct Battery {
    home: TestHome,
    proxy: Proxy,
    policy: &'static str,
    secret: String,
    app: postgres::Client,
    _app_idle: postgres::Client,
    last: Fingerprint,
    entries: usize,
}

impl Battery {
    fn new(policy: &'static str) -> Battery {
        let home = TestHome::new(Pool::Xfs, &format!("hostile-{policy}"));
        home.create_source("bank");
        let mut app = common::connect(&home.source_dsn("bank"));
        exec(&mut app, SOURCE_SQL);
        let secret = agent(&home, "mallory", "bank", policy, &[]);
        let mut app_idle = common::connect(&home.source_dsn("bank"));
        exec(&mut app_idle, &format!("SELECT 1 /* {APP_MARKER} */"));
        let last = fingerprint(&home, "bank", "bank");
        let proxy = Proxy::start(&home, &[]);
        Battery {
            home,
            proxy,
            policy,
            secret,
            app,
            _app_idle: app_idle,
            last,
            entries: 0,
        }
    }

    fn connect(&self, params: &[(&str, &str)]) -> Result<Raw, Transcript> {
        Raw::connect(self.proxy.port, "mallory", &self.secret, "bank", params)
    }

    /// Plays one SQL entry three ways on one connection (a new one if the
    /// proxy ended the session).
    fn statement(&mut self, sql: &str) {
        let mut seen = Vec::new();
        let mut conn = Some(self.connect(&[]).expect("log in"));
        for form in ["simple", "extended", "in a transaction"] {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(self.connect(&[]).expect("log in")),
            };
            let t = match form {
                "simple" => drive(c, raw::query(sql), 1, false),
                "extended" => drive(c, [raw::extended(sql), raw::sync()].concat(), 1, true),
                _ => {
                    let mut t = drive(c, raw::query("BEGIN"), 1, false);
                    for bytes in [raw::query(sql), raw::query("COMMIT")] {
                        if t.closed {
                            break;
                        }
                        let next = drive(c, bytes, 1, false);
                        t.replies.extend(next.replies);
                        t.closed = next.closed;
                    }
                    t
                }
            };
            let closed = t.closed;
            seen.push((form, t));
            if closed {
                conn = None;
            } else if let Some(c) = conn.as_mut() {
                self.session_still_sane(c, sql, form);
                self.nothing_outlives_the_statement(&format!("{sql} ({form})"));
            }
        }
        let what = format!("{sql}\n{}", describe(&seen));
        self.check(&what, &seen, conn);
    }

    /// Plays one protocol entry.
    fn sequence(&mut self, name: &str, frames: Frames) {
        let (bytes, readies) = frames();
        let mut c = self.connect(&[]).expect("log in");
        let t = drive(&mut c, bytes, readies, false);
        let closed = t.closed;
        let seen = vec![("frames", t)];
        let conn = if closed {
            None
        } else {
            self.session_still_sane(&mut c, name, "frames");
            Some(c)
        };
        self.nothing_outlives_the_statement(name);
        self.check(name, &seen, conn);
    }

    /// Logs in with one startup parameter: refused, or a session in which
    /// a write still changes nothing.
    fn startup(&mut self, key: &str, value: &str) {
        let name = format!("startup {key}={value}");
        let seen = match self.connect(&[(key, value)]) {
            Err(t) => {
                assert!(
                    !t.errors().is_empty() || t.closed,
                    "{name}: login neither worked nor said why"
                );
                vec![("login", t)]
            }
            Ok(mut c) => {
                let t = drive(
                    &mut c,
                    raw::query("DELETE FROM accounts; SHOW default_transaction_read_only"),
                    1,
                    false,
                );
                let closed = t.closed;
                let seen = vec![("login", t)];
                self.nothing_outlives_the_statement(&name);
                self.check(&name, &seen, (!closed).then_some(c));
                return;
            }
        };
        self.check(&name, &seen, None);
    }

    /// After an entry that left the session open, the session answers a
    /// query as a healthy session does.
    fn session_still_sane(&mut self, c: &mut Raw, what: &str, form: &str) {
        // Answers still owed to the entry (a pipeline the proxy cut short
        // may owe more ReadyForQuery than the entry counted) come first.
        c.write(&raw::query("SELECT 'sane'"));
        let mut t = Transcript::default();
        let answered = |t: &Transcript| {
            t.values().contains(&Some(b"sane".to_vec())) || t.errors().iter().any(|e| e == "25P02")
        };
        loop {
            let Some(r) = c.read() else {
                return;
            };
            let z = r.tag == b'Z';
            t.replies.push(r);
            if z && answered(&t) {
                break;
            }
            assert!(
                t.replies.iter().filter(|r| r.tag == b'Z').count() < 10,
                "{what} ({form}): the session does not answer a query afterwards: {}",
                t.describe()
            );
        }
        if t.errors().iter().any(|e| e == "25P02") {
            // The client's transaction failed: end it, as a client would.
            drive(c, raw::query("ROLLBACK"), 1, false);
        }
    }

    /// The application still works, and can take every lock the agent
    /// might have held, while the agent's session is open.
    fn nothing_outlives_the_statement(&mut self, what: &str) {
        let r = self.app.batch_execute(
            "SET lock_timeout = '3s';
             BEGIN;
             LOCK TABLE accounts, events, customers IN ACCESS EXCLUSIVE MODE;
             ROLLBACK;",
        );
        assert!(
            r.is_ok(),
            "{what}: a lock outlived the agent's statement: {r:?}"
        );
        let row = self
            .app
            .query_one(
                "SELECT pg_try_advisory_lock(42) AND pg_try_advisory_lock(7)
                        AND pg_try_advisory_lock_shared(42)",
                &[],
            )
            .unwrap_or_else(|e| panic!("{what}: the application's connection died: {e}"));
        let free: bool = row.get(0);
        exec(&mut self.app, "SELECT pg_advisory_unlock_all()");
        assert!(
            free,
            "{what}: an advisory lock outlived the agent's statement"
        );
    }

    /// After an entry: no secret in any reply, and the source unchanged.
    fn check(&mut self, what: &str, seen: &[(&str, Transcript)], conn: Option<Raw>) {
        for (_, t) in seen {
            for r in &t.replies {
                let body = String::from_utf8_lossy(&r.body);
                assert!(
                    !body.contains("SCRAM-SHA-256$") && !body.contains(APP_MARKER),
                    "{what}: a reply carries a secret: {}",
                    r.describe()
                );
            }
        }
        if let Some(c) = conn {
            c.close();
        }
        let gap = if self.policy == "dry-run" { 400 } else { 0 };
        let now = fingerprint(&self.home, "bank", "bank");
        let changes = now.changes_since(&self.last, gap);
        assert!(
            changes.is_empty(),
            "{} agent changed the source with {what}:\n{}",
            self.policy,
            changes.join("\n")
        );
        self.last = now;
        self.entries += 1;
    }

    fn run(mut self) {
        let only = if self.policy == "read-only" {
            ReadOnly
        } else {
            DryRun
        };
        for (sql, o) in STATEMENTS {
            if *o == Both || *o == only {
                self.statement(sql);
            }
        }
        for (name, frames) in SEQUENCES {
            self.sequence(name, *frames);
        }
        for (k, v) in STARTUPS {
            self.startup(k, v);
        }
        // The battery is as large as the issue asks, and all of it ran.
        assert!(
            self.entries >= 150,
            "only {} entries were played",
            self.entries
        );
        assert_eq!(
            self.entries,
            STATEMENTS.len() + SEQUENCES.len() + STARTUPS.len()
        );
    }
}

/// Writes `bytes` and reads until `readies` ReadyForQuery messages or the
/// end of the session, answering a COPY FROM STDIN with one row (and a
/// Sync, in the extended protocol, whose first Sync the server ignored).
fn drive(c: &mut Raw, bytes: Vec<u8>, readies: usize, extended: bool) -> Transcript {
    c.write(&bytes);
    let mut t = Transcript::default();
    let mut seen = 0;
    while seen < readies {
        let Some(r) = c.read() else {
            t.closed = true;
            break;
        };
        match r.tag {
            b'Z' => seen += 1,
            b'G' => {
                let mut copy = [raw::copy_data(b"copied\t1\n"), raw::copy_done()].concat();
                if extended {
                    copy.extend(raw::sync());
                }
                c.write(&copy);
            }
            _ => {}
        }
        t.replies.push(r);
    }
    t
}

fn describe(seen: &[(&str, Transcript)]) -> String {
    seen.iter()
        .map(|(form, t)| format!("  {form}: {}", t.describe()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn read_only_hostile_battery() {
    Battery::new("read-only").run();
}

#[test]
fn dry_run_hostile_battery() {
    Battery::new("dry-run").run();
}
