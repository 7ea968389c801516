//! What a real driver does through the proxy behaves as PostgreSQL does
//! (found running psycopg 3's own suite through each policy): an error in
//! the first statement of a transaction, an isolation level with a
//! parameterized query, a savepoint after an error, the proxy's own
//! statements kept out of `pg_prepared_statements`, the settings that
//! decide how text is read refused instead of ending the session, an
//! ASCII-safe encoding (LATIN9) end to end, and the audit log holding each
//! statement's own tag and transaction status.

mod common;
mod proxy;

use common::{Pool, TestHome, exec};
use proxy::raw::{self, Raw};
use proxy::{Proxy, agent, sqlstate};

fn prepare(home: &TestHome) {
    home.create_source("shop");
    let mut c = common::connect(&home.source_dsn("shop"));
    exec(
        &mut c,
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
         INSERT INTO items (name) SELECT 'item' || g FROM generate_series(1, 10) g;",
    );
}

/// The driver behaviours, for one credential.
fn driver_behaviours(c: &mut postgres::Client, policy: &str) {
    // An error in the first statement of a transaction, before it runs
    // (a missing table; a parameter that breaks the statement).
    c.batch_execute("BEGIN").unwrap();
    let e = c
        .query("SELECT $1::int FROM nosuchtable", &[&1i32])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P01", "{policy}: {e}");
    let e = c.query("SELECT 1", &[]).unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{policy}: the transaction failed");
    c.batch_execute("ROLLBACK").unwrap();
    c.batch_execute("BEGIN").unwrap();
    let e = c.query("SELECT 1 / $1::int", &[&0i32]).unwrap_err();
    assert_eq!(sqlstate(&e), "22012", "{policy}: {e}");
    c.batch_execute("ROLLBACK").unwrap();
    let one: i32 = c.query_one("SELECT $1::int", &[&1i32]).unwrap().get(0);
    assert_eq!(one, 1, "{policy}: the session goes on");

    // An isolation level, then a query with parameters.
    for begin in [
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        "START TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    ] {
        c.batch_execute(begin).unwrap();
        let level: String = c
            .query_one("SELECT current_setting($1)", &[&"transaction_isolation"])
            .unwrap_or_else(|e| panic!("{policy}: {begin}: {e}"))
            .get(0);
        assert!(begin.to_lowercase().contains(&level), "{policy}: {level}");
        c.batch_execute("COMMIT").unwrap();
    }

    // A savepoint after an error, simple and extended protocol.
    c.batch_execute("BEGIN").unwrap();
    c.batch_execute("SAVEPOINT a").unwrap();
    assert_eq!(
        sqlstate(&c.batch_execute("SELECT 1/0").unwrap_err()),
        "22012"
    );
    c.batch_execute("ROLLBACK TO SAVEPOINT a")
        .unwrap_or_else(|e| panic!("{policy}: ROLLBACK TO SAVEPOINT: {e}"));
    let n: i64 = c
        .query_one("SELECT count(*) FROM items WHERE id > $1", &[&0i32])
        .unwrap()
        .get(0);
    assert_eq!(n, 10);
    c.execute("SAVEPOINT b", &[]).unwrap();
    assert!(c.query("SELECT 1/$1::int", &[&0i32]).is_err());
    c.execute("ROLLBACK TO SAVEPOINT b", &[])
        .unwrap_or_else(|e| panic!("{policy}: ROLLBACK TO SAVEPOINT (extended): {e}"));
    c.batch_execute("ROLLBACK").unwrap();

    // Only the client's own prepared statements are to be seen.
    let names: Vec<String> = c
        .query("SELECT name FROM pg_prepared_statements", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with("pgfork")),
        "{policy}: the proxy's statements are visible: {names:?}"
    );

    // The settings the proxy's parser depends on: refused, not FATAL.
    for set in [
        "SET standard_conforming_strings = off",
        "SET standard_conforming_strings TO 0",
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'BIG5'",
        "SELECT set_config('client_encoding', 'GBK', false)",
    ] {
        let e = c.batch_execute(set).expect_err(set);
        assert_eq!(sqlstate(&e), "0A000", "{policy}: {set}: {e}");
    }
    for set in [
        "SET standard_conforming_strings = on",
        "SET standard_conforming_strings TO DEFAULT",
        "SET client_encoding = 'UTF8'",
        "SELECT set_config('client_encoding', 'UTF8', false)",
        "SELECT set_config('standard_conforming_strings', 'on', false)",
    ] {
        c.batch_execute(set)
            .unwrap_or_else(|e| panic!("{policy}: {set}: {e}"));
    }
    // A value given as a parameter is the server's to report: a safe one
    // works, an unsafe one ends the session (the proxy cannot read on).
    let value: String = c
        .query_one(
            "SELECT set_config('client_encoding', $1, false)",
            &[&"UTF8"],
        )
        .unwrap_or_else(|e| panic!("{policy}: set_config with a parameter: {e}"))
        .get(0);
    assert_eq!(value, "UTF8");
    assert_eq!(
        c.query_one("SELECT 'still here'", &[])
            .unwrap()
            .get::<_, String>(0),
        "still here"
    );
}

/// In a pipeline, a statement after one that failed is skipped without a
/// word up to Sync, also one the proxy would refuse.
fn refusal_after_an_error_is_skipped(proxy: &Proxy, name: &str, secret: &str, policy: &str) {
    let mut r = Raw::connect(proxy.port, name, secret, "shop", &[]).unwrap();
    let t = r.exchange(
        &[
            raw::extended("SELECT * FROM nosuchtable"),
            raw::extended("CREATE TABLE voila ()"),
            raw::extended("SELECT pg_terminate_backend(1)"),
            raw::sync(),
            raw::query("SELECT 'after'"),
        ]
        .concat(),
        2,
    );
    assert_eq!(t.errors(), ["42P01"], "{policy}: {}", t.describe());
    assert_eq!(t.values(), vec![Some(b"after".to_vec())], "{policy}");
    r.close();
}

#[test]
fn drivers_see_postgres_through_every_policy() {
    let home = TestHome::new(Pool::Xfs, "px-fidelity");
    prepare(&home);
    let proxy = Proxy::start(&home, &[]);
    for (name, policy) in [
        ("reader", "read-only"),
        ("rehearser", "dry-run"),
        ("builder", "branch"),
    ] {
        let secret = agent(&home, name, "shop", policy, &[]);
        let mut c = proxy.connect(name, &secret, "shop");
        driver_behaviours(&mut c, policy);
        refusal_after_an_error_is_skipped(&proxy, name, &secret, policy);
        let mut c = proxy.connect(name, &secret, "shop");
        let _ = c.query(
            "SELECT set_config('client_encoding', $1, false)",
            &[&"SJIS"],
        );
        // Ended, or (dry-run) the setting went with the rolled-back
        // transaction: never a session that goes on in SJIS.
        if let Ok(row) = c.query_one("SHOW client_encoding", &[]) {
            assert_eq!(
                row.get::<_, String>(0),
                "UTF8",
                "{policy}: the session went on in SJIS"
            );
        }
    }
}

/// The name of the first column of a RowDescription.
fn first_column_name(body: &[u8]) -> Vec<u8> {
    let rest = &body[2..];
    rest[..rest.iter().position(|&b| b == 0).unwrap()].to_vec()
}

/// LATIN9 text (query, literal, column name) through read-only and branch
/// credentials, simple and extended protocol: the bytes come back as sent.
#[test]
fn latin9_end_to_end() {
    let home = TestHome::new(Pool::Xfs, "px-latin9");
    prepare(&home);
    let proxy = Proxy::start(&home, &[]);
    // 'café' AS "été", in LATIN9 (é is 0xE9); the euro sign is 0xA4.
    let sql: &[u8] = b"SELECT 'caf\xe9 \xa4' AS \"\xe9t\xe9\"";
    for (name, policy) in [("reader", "read-only"), ("builder", "branch")] {
        let secret = agent(&home, name, "shop", policy, &[]);
        let mut c = Raw::connect(
            proxy.port,
            name,
            &secret,
            "shop",
            &[("client_encoding", "LATIN9")],
        )
        .unwrap_or_else(|t| panic!("{policy}: LATIN9 login refused: {}", t.describe()));
        let simple = c.exchange(&raw::query_bytes(sql), 1);
        let mut extended = raw::frame(b'P', &[b"\0".as_slice(), sql, b"\0\0\0"].concat());
        extended.extend(
            [
                raw::bind("", "", &[]),
                raw::describe_portal(""),
                raw::execute("", 0),
                raw::sync(),
            ]
            .concat(),
        );
        let ext = c.exchange(&extended, 1);
        for (form, t) in [("simple", simple), ("extended", ext)] {
            assert!(
                t.errors().is_empty() && !t.closed,
                "{policy} {form}: {}",
                t.describe()
            );
            let row = t
                .replies
                .iter()
                .find(|r| r.tag == b'T')
                .expect("RowDescription");
            assert_eq!(
                first_column_name(&row.body),
                b"\xe9t\xe9",
                "{policy} {form}"
            );
            assert_eq!(
                t.values(),
                vec![Some(b"caf\xe9 \xa4".to_vec())],
                "{policy} {form}"
            );
        }
        c.close();
    }
}

/// The audit log holds what the server did: each statement of a string
/// with its own tag, the rows it wrote, and the transaction status.
#[test]
fn audit_records_the_servers_story() {
    let home = TestHome::new(Pool::Xfs, "px-audit");
    prepare(&home);
    let secret = agent(&home, "rehearser", "shop", "dry-run", &[]);
    let proxy = Proxy::start(&home, &[]);
    let mut c = proxy.connect("rehearser", &secret, "shop");
    c.batch_execute("SELECT 1; INSERT INTO items (name) VALUES ('x'); UPDATE items SET name = 'y' WHERE id <= 3")
        .unwrap();
    c.batch_execute("BEGIN; DELETE FROM items WHERE id = 1")
        .unwrap();
    c.batch_execute("COMMIT").unwrap();
    drop(c);
    drop(proxy);
    let log = home.json(&["audit", "--agent", "rehearser"]);
    let rows = log.as_array().expect("records");
    let find = |statement: &str| {
        rows.iter()
            .find(|r| r["statement"].as_str() == Some(statement))
            .unwrap_or_else(|| panic!("no record of {statement}: {log:#}"))
    };
    assert_eq!(find("SELECT 1")["tag"], "SELECT 1");
    assert_eq!(
        find("INSERT INTO items (name) VALUES ('x')")["tag"],
        "INSERT 0 1"
    );
    let update = find("UPDATE items SET name = 'y' WHERE id <= 3");
    assert_eq!(update["tag"], "UPDATE 3");
    assert_eq!(update["rows"], 3);
    assert_eq!(update["tx_status"], "I");
    let delete = find("DELETE FROM items WHERE id = 1");
    assert_eq!(delete["tag"], "DELETE 1");
    assert_eq!(delete["tx_status"], "T", "inside the client's transaction");
    assert_eq!(
        find("COMMIT")["tag"],
        "ROLLBACK",
        "a dry-run COMMIT rolls back"
    );
}
