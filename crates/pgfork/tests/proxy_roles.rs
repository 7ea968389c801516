//! Least privilege on the server, per agent (issue 11, items 6 and 8):
//! each read-only and dry-run agent logs in to the source as a role of its
//! own, which reads no secret, sees no other role's queries, owns nothing
//! and holds a connection limit; the proxy counts sessions per agent and
//! keeps slots of the source free for the application. The attacks are
//! played through the proxy against real servers, and the source checked
//! afterwards.

mod common;
mod proxy;

use std::thread;
use std::time::Duration;

use common::{Pool, TestHome, describe, exec, scalar, text};
use proxy::{Proxy, agent, checksum, fails};

fn prepare_source(home: &TestHome) {
    home.create_source("shop");
    let mut c = common::connect(&home.source_dsn("shop"));
    exec(
        &mut c,
        "CREATE TABLE accounts (id serial PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL);
         INSERT INTO accounts (owner, balance) SELECT 'owner' || g, g * 100 FROM generate_series(1, 200) g;
         CREATE TABLE audit_log (at timestamptz DEFAULT now(), what text);
         CREATE FUNCTION log_change() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN INSERT INTO audit_log (what) VALUES (TG_OP); RETURN NULL; END$$;
         CREATE TRIGGER accounts_audit AFTER INSERT OR UPDATE OR DELETE ON accounts
           FOR EACH ROW EXECUTE FUNCTION log_change();
         -- The application's own functions, which hide from the proxy's
         -- parser what they call: only the server's rights stop them.
         CREATE FUNCTION move_sequence() RETURNS bigint LANGUAGE sql AS
           $$ SELECT setval('accounts_id_seq', 999999) $$;
         CREATE FUNCTION end_session(p int) RETURNS boolean LANGUAGE sql AS
           $$ SELECT pg_terminate_backend(p) $$;",
    );
}

/// Rows of `pg_stat_activity` as `sql` sees them: `usename: query` lines.
fn activity(c: &mut postgres::Client) -> String {
    c.query(
        "SELECT coalesce(usename::text, '-') || ': ' || coalesce(query, '-') FROM pg_stat_activity",
        &[],
    )
    .expect("read pg_stat_activity")
    .iter()
    .map(|r| r.get::<_, String>(0))
    .collect::<Vec<_>>()
    .join("\n")
}

/// A connection attempt the proxy refuses, and its error.
fn refused(url: &str) -> postgres::Error {
    match common::try_connect(url) {
        Ok(_) => panic!("the proxy accepted {}", common::redact(url)),
        Err(e) => e,
    }
}

/// The role a source's superuser sees for `role`: `None` if there is none.
fn role(home: &TestHome, role: &str) -> Option<(i32, bool, bool)> {
    home.source_superuser("shop", "postgres")
        .query_opt(
            "SELECT rolconnlimit, rolsuper OR rolinherit OR rolcreaterole OR rolbypassrls,
                    EXISTS (SELECT FROM pg_auth_members WHERE member = r.oid)
               FROM pg_roles r WHERE rolname = $1",
            &[&role],
        )
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// read-only: no pg_authid, no other role's query text in
/// pg_stat_activity (another agent's, the application's), the
/// application's tables readable, also those made after `agent create`.
#[test]
fn read_only_agents_read_the_application_and_nothing_else() {
    let home = TestHome::new(Pool::Xfs, "rl-ro");
    prepare_source(&home);
    let reader = agent(&home, "reader", "shop", "read-only", &[]);
    let other = agent(&home, "other", "shop", "read-only", &[]);
    let tester = agent(&home, "tester", "shop", "dry-run", &[]);
    assert_eq!(role(&home, "pgfork_agent_reader"), Some((10, false, false)));
    let proxy = Proxy::start(&home, &[]);
    let mut c = proxy.connect("reader", &reader, "shop");
    assert_eq!(text(&mut c, "current_user"), "pgfork_agent_reader");
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM accounts"), 200);
    assert_eq!(fails(&mut c, "SELECT rolpassword FROM pg_authid"), "42501");
    assert_eq!(fails(&mut c, "SELECT * FROM pg_catalog.pg_authid"), "42501");
    for group in ["pg_read_all_data", "pg_read_all_stats", "pg_signal_backend"] {
        let member = scalar(
            &mut c,
            &format!("pg_has_role(current_user, '{group}', 'MEMBER')::int"),
        );
        assert_eq!(member, 0, "member of {group}");
    }

    // Another agent's and the application's queries, while they run.
    let app_dsn = home.source_dsn("shop");
    let other_url = proxy.url("other", &other, "shop");
    let sleepers = [
        thread::spawn(move || {
            common::connect(&app_dsn)
                .batch_execute("SELECT pg_sleep(4) /* marker-application */")
                .unwrap();
        }),
        thread::spawn(move || {
            common::connect(&other_url)
                .batch_execute("SELECT pg_sleep(4) /* marker-other-agent */")
                .unwrap();
        }),
    ];
    let mut su = home.source_superuser("shop", "shop");
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            let seen = activity(&mut su);
            seen.contains("marker-application") && seen.contains("marker-other-agent")
        }),
        "the sleepers never ran"
    );
    let seen = activity(&mut c);
    assert!(
        !seen.contains("marker-"),
        "a read-only agent read other roles' queries:\n{seen}"
    );
    assert!(seen.contains("pgfork_agent_reader: SELECT"), "{seen}");
    let mut dry = proxy.connect("tester", &tester, "shop");
    let seen = activity(&mut dry);
    assert!(
        !seen.contains("marker-application"),
        "a dry-run agent read the application's queries:\n{seen}"
    );
    for s in sleepers {
        s.join().unwrap();
    }

    // Made after `agent create`: by the application (default privileges:
    // readable at once, in a session already open), and by a superuser in
    // a schema of its own (granted when the next session opens).
    let mut app = common::connect(&home.source_dsn("shop"));
    exec(
        &mut app,
        "CREATE TABLE later (a int); INSERT INTO later VALUES (1), (2);
         CREATE SCHEMA reports; CREATE TABLE reports.daily AS SELECT 3 AS n;",
    );
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM later"), 2);
    assert_eq!(scalar(&mut c, "SELECT n FROM reports.daily"), 3);
    exec(
        &mut su,
        "CREATE SCHEMA ops; CREATE TABLE ops.jobs AS SELECT 4 AS n; CREATE TABLE admin_made AS SELECT 5 AS n;",
    );
    assert_eq!(fails(&mut c, "SELECT n FROM admin_made"), "42501");
    drop(c);
    let mut c = proxy.connect("reader", &reader, "shop");
    assert_eq!(scalar(&mut c, "SELECT n FROM ops.jobs"), 4);
    assert_eq!(scalar(&mut c, "SELECT n FROM admin_made"), 5);
    // Reading is all: the server refuses writes the proxy's parse misses
    // (no UPDATE on the sequence, and a read-only transaction besides).
    let code = fails(&mut c, "SELECT move_sequence()");
    assert!(code == "42501" || code == "25006", "{code}");
    assert_eq!(
        text(&mut c, "current_setting('default_transaction_read_only')"),
        "on"
    );
}

/// dry-run: the application's table rights without its ownership. DDL on
/// its tables, disabling their triggers, moving a sequence and ending the
/// application's session fail with a privilege error, also when hidden
/// from the proxy in the application's own functions; writes to rows run
/// and are rolled back.
#[test]
fn dry_run_agents_write_rows_but_own_nothing() {
    let home = TestHome::new(Pool::Xfs, "rl-dry");
    prepare_source(&home);
    let secret = agent(&home, "tester", "shop", "dry-run", &[]);
    let before = checksum(&home, "shop", "shop");
    let mut app = common::connect(&home.source_dsn("shop"));
    let app_pid = scalar(&mut app, "pg_backend_pid()");
    let sequence = |home: &TestHome| {
        scalar(
            &mut home.source_superuser("shop", "shop"),
            "SELECT last_value FROM accounts_id_seq",
        )
    };
    let seq_before = sequence(&home);
    let proxy = Proxy::start(&home, &[]);
    let mut c = proxy.connect("tester", &secret, "shop");
    assert_eq!(text(&mut c, "current_user"), "pgfork_agent_tester");
    for sql in [
        "ALTER TABLE accounts ADD COLUMN pwned int",
        "DROP TABLE accounts",
        "ALTER TABLE accounts DISABLE TRIGGER accounts_audit",
        "ALTER TABLE accounts DISABLE TRIGGER ALL",
        "TRUNCATE accounts",
        "CREATE TABLE scratch (a int)",
        "SELECT setval('accounts_id_seq', 999999)",
        &format!("SELECT pg_terminate_backend({app_pid})"),
    ] {
        assert_eq!(fails(&mut c, sql), "42501", "{sql}");
    }
    // What the proxy's parser cannot see, the server still refuses.
    let err = c.batch_execute("SELECT move_sequence()").unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501", "{}", describe(&err));
    assert!(
        describe(&err).contains("permission denied for sequence"),
        "{}",
        describe(&err)
    );
    let err = c
        .batch_execute(&format!("SELECT end_session({app_pid})"))
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501", "{}", describe(&err));
    assert_eq!(scalar(&mut app, "SELECT 1"), 1, "the application's session");

    // Rows: true results, rolled back.
    assert_eq!(
        c.execute("UPDATE accounts SET balance = 0 WHERE id <= 5", &[])
            .unwrap(),
        5
    );
    assert_eq!(
        c.execute(
            "INSERT INTO accounts (owner, balance) VALUES ('x', 1), ('y', 2)",
            &[]
        )
        .unwrap(),
        2
    );
    assert_eq!(
        c.execute("DELETE FROM accounts WHERE id > 190", &[])
            .unwrap(),
        10
    );
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM accounts"), 200);
    drop(c);
    assert_eq!(
        checksum(&home, "shop", "shop"),
        before,
        "the dry-run agent changed the source"
    );
    // nextval's gap (documented) is the only trace on the sequence.
    let seq_after = sequence(&home);
    assert!(
        seq_after < 1000,
        "sequence moved from {seq_before} to {seq_after}"
    );
}

/// Per-agent limits (the proxy's count, and the role's CONNECTION LIMIT),
/// roles made on first use (agents of older homes, refreshed sources) and
/// dropped by `revoke`, and the reserve kept for the application on a
/// source with few slots.
#[test]
fn connection_limits_role_lifecycle_and_the_applications_reserve() {
    let home = TestHome::new(Pool::Xfs, "rl-lim");
    prepare_source(&home);
    for bad in ["0", "1001"] {
        let e = home.fails(&[
            "agent",
            "create",
            "bad",
            "--source",
            "shop",
            "--policy",
            "read-only",
            "--max-connections",
            bad,
        ]);
        assert_eq!(e.code, "invalid_argument", "{bad}: {}", e.message);
        assert!(e.message.contains("max_connections"), "{}", e.message);
    }
    let capped = agent(
        &home,
        "capped",
        "shop",
        "read-only",
        &["--max-connections", "3"],
    );
    assert_eq!(
        home.json(&["agent", "info", "capped"])["max_connections"],
        3
    );
    assert_eq!(role(&home, "pgfork_agent_capped"), Some((3, false, false)));
    let proxy = Proxy::start(&home, &[]);
    let url = proxy.url("capped", &capped, "shop");

    // The fourth session is refused, naming the agent and its limit.
    let mut held: Vec<_> = (0..3).map(|_| common::connect(&url)).collect();
    for c in &mut held {
        assert_eq!(scalar(c, "SELECT count(*) FROM accounts"), 200);
    }
    let err = refused(&url);
    assert_eq!(err.code().unwrap().code(), "53300", "{}", describe(&err));
    let message = describe(&err);
    assert!(
        message.contains("\"capped\"") && message.contains("--max-connections 3"),
        "{message}"
    );
    held.pop();
    assert!(
        common::wait_until(Duration::from_secs(5), || common::try_connect(&url).is_ok()),
        "a slot freed by a closed session was not given back"
    );
    drop(held);

    // An agent without its role (made by an older pgfork, or a logical
    // source refreshed into a new cluster) gets it at its next session;
    // the old shared role, which read everything, goes.
    let mut su = home.source_superuser("shop", "shop");
    exec(
        &mut su,
        "DROP OWNED BY pgfork_agent_capped; DROP ROLE pgfork_agent_capped;
         CREATE ROLE pgfork_reader LOGIN; GRANT pg_read_all_data TO pgfork_reader;",
    );
    let mut c = common::connect(&url);
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM accounts"), 200);
    assert_eq!(role(&home, "pgfork_agent_capped"), Some((3, false, false)));
    assert_eq!(role(&home, "pgfork_reader"), None);
    // So does one whose attributes or grants someone changed.
    exec(
        &mut su,
        "ALTER ROLE pgfork_agent_capped CONNECTION LIMIT 50 INHERIT;
         GRANT pg_read_all_stats TO pgfork_agent_capped;
         REVOKE SELECT ON accounts FROM pgfork_agent_capped;",
    );
    let mut again = common::connect(&url);
    assert_eq!(scalar(&mut again, "SELECT count(*) FROM accounts"), 200);
    assert_eq!(role(&home, "pgfork_agent_capped"), Some((3, false, false)));
    drop(again);

    // Branch agents are counted too.
    let solo = agent(&home, "solo", "shop", "branch", &["--max-connections", "1"]);
    let solo_url = proxy.url("solo", &solo, "shop");
    let mut b = common::connect(&solo_url);
    assert_eq!(scalar(&mut b, "SELECT count(*) FROM accounts"), 200);
    assert_eq!(refused(&solo_url).code().unwrap().code(), "53300");
    drop(b);

    // Revoke ends the session and drops the role.
    home.json(&["agent", "revoke", "capped"]);
    assert!(
        common::wait_until(Duration::from_secs(5), || c
            .simple_query("SELECT 1")
            .is_err()),
        "a revoked agent's session lived on"
    );
    assert_eq!(role(&home, "pgfork_agent_capped"), None);
    assert_eq!(refused(&url).code().unwrap().code(), "28P01");

    // The reserve: with max_connections = 15 (3 for superusers), the proxy
    // opens at most 2 sessions there, and the application its 10.
    exec(&mut su, "ALTER SYSTEM SET max_connections = 15");
    drop(su);
    home.ok(&["source", "stop", "shop"]);
    home.ok(&["source", "start", "shop"]);
    let one = agent(&home, "one", "shop", "read-only", &[]);
    let two = agent(&home, "two", "shop", "dry-run", &[]);
    let held = [
        common::connect(&proxy.url("one", &one, "shop")),
        common::connect(&proxy.url("two", &two, "shop")),
    ];
    let err = refused(&proxy.url("one", &one, "shop"));
    assert_eq!(err.code().unwrap().code(), "53300", "{}", describe(&err));
    let message = describe(&err);
    assert!(
        message.contains("source \"shop\"") && message.contains("ALTER SYSTEM SET max_connections"),
        "{message}"
    );
    // (A check session pgfork just closed may take a moment to leave.)
    let app_dsn = home.source_dsn("shop");
    let app: Vec<_> = (0..10)
        .map(|i| {
            let mut last = None;
            for _ in 0..40 {
                match common::try_connect(&app_dsn) {
                    Ok(c) => return c,
                    Err(e) => last = Some(describe(&e)),
                }
                thread::sleep(Duration::from_millis(50));
            }
            panic!("application connection {i} refused: {last:?}")
        })
        .collect();
    drop(app);
    drop(held);
    assert!(
        common::wait_until(Duration::from_secs(5), || common::try_connect(
            &proxy.url("one", &one, "shop")
        )
        .is_ok()),
        "the source's slots were not given back"
    );
}
