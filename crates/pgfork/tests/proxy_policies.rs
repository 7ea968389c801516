//! The policy proxy's attack suites: for each policy, dozens of statements
//! that try to write or escape, sent by psql and by a driver (simple and
//! extended protocol), and afterwards the source's data is unchanged.

mod common;
mod proxy;

use common::{Pool, TestHome, exec, scalar};
use proxy::{Proxy, agent, checksum, fails, psql};

/// Statements that write or try to leave a policy, as an agent would.
const ATTACKS: &[&str] = &[
    "INSERT INTO accounts (owner, balance) VALUES ('mallory', 1000000)",
    "UPDATE accounts SET balance = 0",
    "DELETE FROM accounts",
    "TRUNCATE accounts",
    "MERGE INTO accounts a USING (SELECT 1 AS id) s ON a.id = s.id WHEN MATCHED THEN DELETE",
    "DROP TABLE accounts",
    "ALTER TABLE accounts ADD COLUMN pwned int",
    "CREATE TABLE pwned (a int)",
    "CREATE INDEX pwned_idx ON accounts (owner)",
    "WITH d AS (DELETE FROM accounts RETURNING *) SELECT count(*) FROM d",
    "WITH u AS (UPDATE accounts SET balance = balance + 1 RETURNING 1) SELECT 1",
    "SELECT * INTO pwned_copy FROM accounts",
    "CREATE TABLE pwned_as AS SELECT * FROM accounts",
    "SELECT * FROM accounts FOR UPDATE",
    "SELECT * FROM accounts FOR SHARE",
    "SELECT bump()",
    "SELECT nextval('accounts_id_seq')",
    "SELECT setval('accounts_id_seq', 1)",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SET default_transaction_read_only = off",
    "SET transaction_read_only = off",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "BEGIN READ WRITE",
    "START TRANSACTION READ WRITE",
    "SET ROLE postgres",
    "SET SESSION AUTHORIZATION postgres",
    "RESET ROLE; DELETE FROM accounts",
    "COPY accounts FROM STDIN",
    "COPY accounts FROM '/etc/passwd'",
    "COPY accounts TO PROGRAM 'id'",
    "DO $$BEGIN DELETE FROM accounts; END$$",
    "CALL wipe()",
    "PREPARE p AS DELETE FROM accounts",
    "EXPLAIN ANALYZE DELETE FROM accounts",
    "GRANT ALL ON accounts TO PUBLIC",
    "LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE",
    "VACUUM FULL accounts",
    "ALTER SYSTEM SET fsync = off",
    "CREATE EXTENSION dblink",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    "SELECT lo_import('/etc/passwd')",
    "PREPARE TRANSACTION 'x'",
    "SELECT 1; DELETE FROM accounts",
    "/* comment */ delete from accounts -- trailing",
    "DeLeTe FrOm \"accounts\"",
    "CREATE DATABASE pwned",
    "NOTIFY pwned, 'x'",
];

fn prepare_source(home: &TestHome) {
    home.create_source("bank");
    let mut c = common::connect(&home.source_dsn("bank"));
    exec(
        &mut c,
        "CREATE TABLE accounts (id serial PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL);
         INSERT INTO accounts (owner, balance) SELECT 'owner' || g, g * 100 FROM generate_series(1, 500) g;
         CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS $$ UPDATE accounts SET balance = balance + 1 RETURNING 1 $$;
         CREATE PROCEDURE wipe() LANGUAGE plpgsql AS $$BEGIN DELETE FROM accounts; COMMIT; END$$;",
    );
}

/// read-only: every attack fails, writes with SQLSTATE 25006 naming the
/// policy; reads work; the data is unchanged; every statement is audited.
#[test]
fn read_only_attack_suite() {
    let home = TestHome::new(Pool::Xfs, "px-ro");
    prepare_source(&home);
    let secret = agent(&home, "reader", "bank", "read-only", &[]);
    let before = checksum(&home, "bank", "bank");
    let proxy = Proxy::start(&home, &[]);

    // psql, simple protocol, one statement per -c.
    let (_, stderr) = psql(&proxy.url("reader", &secret, "bank"), ATTACKS);
    let refused = stderr.matches("pgfork policy read-only").count();
    assert!(
        refused >= ATTACKS.len() - 4,
        "only {refused} refusals named the policy:\n{stderr}"
    );
    let mut c = proxy.connect("reader", &secret, "bank");
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM accounts"), 500);
    // The driver's extended protocol: prepared statements are judged too.
    for sql in [
        "INSERT INTO accounts (owner, balance) VALUES ('x', 1)",
        "DELETE FROM accounts",
        "UPDATE accounts SET balance = 0",
    ] {
        let err = c.execute(sql, &[]).expect_err(sql);
        assert_eq!(err.code().map(|c| c.code()), Some("25006"), "{sql}: {err}");
    }
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM accounts WHERE balance > $1",
            &[&1000i64],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 490);
    for sql in [
        "SET default_transaction_read_only = off",
        "BEGIN READ WRITE",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SELECT bump()",
        "INSERT INTO accounts (owner, balance) VALUES ('x', 1)",
    ] {
        assert_eq!(fails(&mut c, sql), "25006", "{sql}");
    }
    // Defence in depth: even without the parser, the session cannot write.
    assert_eq!(
        common::text(&mut c, "current_setting('default_transaction_read_only')"),
        "on"
    );
    assert!(
        !c.query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[]
        )
        .unwrap()
        .get::<_, bool>(0)
    );
    drop(c);
    assert_eq!(
        checksum(&home, "bank", "bank"),
        before,
        "read-only agent changed the source"
    );
    drop(proxy);
    let log = home.json(&["audit", "--agent", "reader"]);
    let records = log.as_array().unwrap();
    assert!(records.len() >= ATTACKS.len(), "{} records", records.len());
    assert!(records.iter().any(|r| {
        r["sqlstate"] == "25006"
            && r["statement"]
                .as_str()
                .unwrap()
                .contains("DELETE FROM accounts")
    }));
    assert!(
        records
            .iter()
            .any(|r| r["tag"] == "SELECT 1" && r["sqlstate"].is_null())
    );
    let verify = home.json(&["audit", "--verify"]);
    assert_eq!(verify["ok"], true, "{verify:#}");
}

/// dry-run: statements run for real (true results and row counts), every
/// transaction is rolled back, COMMIT answers as ROLLBACK with a notice,
/// statements that cannot be rolled back are refused.
#[test]
fn dry_run_attack_suite() {
    let home = TestHome::new(Pool::Xfs, "px-dry");
    prepare_source(&home);
    let secret = agent(&home, "tester", "bank", "dry-run", &[]);
    let before = checksum(&home, "bank", "bank");
    let proxy = Proxy::start(&home, &[]);
    let url = proxy.url("tester", &secret, "bank");

    let (_, stderr) = psql(&url, ATTACKS);
    assert!(
        stderr.contains("cannot run inside a transaction"),
        "{stderr}"
    );
    let (out, stderr) = psql(
        &url,
        &[
            "BEGIN",
            "DELETE FROM accounts WHERE id <= 10",
            "SELECT count(*) FROM accounts",
            "COMMIT",
        ],
    );
    assert!(
        out.contains("DELETE 10") && out.contains("490"),
        "true results inside the transaction:\n{out}"
    );
    assert!(
        out.contains("ROLLBACK"),
        "COMMIT answers as a rollback:\n{out}"
    );
    assert!(
        stderr.contains("pgfork dry-run: COMMIT rolled the transaction back"),
        "{stderr}"
    );

    let mut c = proxy.connect("tester", &secret, "bank");
    // Autocommit statements are wrapped: the row count is real, the change is not.
    assert_eq!(
        c.execute("UPDATE accounts SET balance = 0 WHERE id <= 7", &[])
            .unwrap(),
        7
    );
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM accounts WHERE balance = 0"),
        0
    );
    let mut tx = c.transaction().unwrap();
    assert_eq!(tx.execute("DELETE FROM accounts", &[]).unwrap(), 500);
    let inside: i64 = tx
        .query_one("SELECT count(*) FROM accounts", &[])
        .unwrap()
        .get(0);
    assert_eq!(inside, 0);
    tx.commit().unwrap();
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM accounts"), 500);
    // Errors are true errors.
    assert_eq!(
        fails(&mut c, "INSERT INTO accounts (owner) VALUES ('no balance')"),
        "23502"
    );
    assert_eq!(fails(&mut c, "VACUUM"), "25001");
    assert_eq!(
        fails(&mut c, "CREATE INDEX CONCURRENTLY i ON accounts (owner)"),
        "25001"
    );
    // Transaction control is simulated: the DELETE still runs inside the
    // proxy's own transaction, which is rolled back.
    c.batch_execute("ROLLBACK; DELETE FROM accounts").unwrap();
    c.batch_execute("COMMIT; DELETE FROM accounts; COMMIT")
        .unwrap();
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM accounts"), 500);
    assert_eq!(fails(&mut c, "SET statement_timeout = 0"), "42501");
    assert_eq!(fails(&mut c, "CALL wipe()"), "2D000");
    // The agent's own role owns nothing and may create nothing: DDL fails
    // on the server (proxy_roles.rs plays the rest).
    assert_eq!(fails(&mut c, "CREATE TABLE scratch (a int)"), "42501");
    assert_eq!(
        fails(&mut c, "ALTER TABLE accounts ADD COLUMN pwned int"),
        "42501"
    );
    drop(c);
    assert_eq!(
        checksum(&home, "bank", "bank"),
        before,
        "dry-run agent changed the source"
    );
}

/// branch: everything lands in the agent's branch, nothing in the source;
/// the max-rows budget rolls back a statement that affects too many rows.
#[test]
fn branch_attack_suite_and_budget() {
    let home = TestHome::new(Pool::Btrfs, "px-br");
    prepare_source(&home);
    let secret = agent(
        &home,
        "migrator",
        "bank",
        "branch",
        &["--max-rows", "100", "--statement-timeout", "5s"],
    );
    let before = checksum(&home, "bank", "bank");
    let proxy = Proxy::start(&home, &[]);
    let url = proxy.url("migrator", &secret, "bank");
    let (_, stderr) = psql(&url, ATTACKS);
    assert!(stderr.contains("pgfork budget max-rows"), "{stderr}");
    let branch = home.branch("agent-migrator");
    assert_eq!(branch["status"], "running");
    // The attacks dropped the table in the branch (it is the agent's own):
    // start over from its snapshot, behind the proxy's back.
    home.json(&["branch", "reset", "agent-migrator"]);
    let mut c = proxy.connect("migrator", &secret, "bank");
    assert_eq!(
        c.execute("DELETE FROM accounts WHERE id <= 50", &[])
            .unwrap(),
        50
    );
    // Over budget, simple and extended protocol, in and out of a transaction.
    let err = c
        .batch_execute("UPDATE accounts SET balance = -1")
        .expect_err("over budget");
    assert_eq!(err.code().unwrap().code(), "54000");
    let err = c
        .execute("UPDATE accounts SET balance = -1", &[])
        .expect_err("over budget");
    assert_eq!(err.code().unwrap().code(), "54000");
    let mut tx = c.transaction().unwrap();
    tx.execute("UPDATE accounts SET balance = 1 WHERE id <= 60", &[])
        .unwrap();
    assert!(tx.execute("UPDATE accounts SET balance = -1", &[]).is_err());
    drop(tx);
    // Simple protocol inside a transaction: the transaction is aborted.
    let mut tx = c.transaction().unwrap();
    let err = tx
        .batch_execute("UPDATE accounts SET balance = -2")
        .expect_err("over budget");
    assert_eq!(err.code().unwrap().code(), "54000");
    assert_eq!(proxy::fails(&mut tx, "SELECT 1"), "25P02");
    drop(tx);
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM accounts WHERE balance < 0"),
        0
    );
    assert_eq!(fails(&mut c, "SET statement_timeout = 0"), "42501");
    assert_eq!(fails(&mut c, "SELECT pg_sleep(10)"), "57014");
    assert_eq!(fails(&mut c, "SET ROLE postgres"), "42501");
    drop(c);
    assert_eq!(
        checksum(&home, "bank", "bank"),
        before,
        "branch agent changed the source"
    );
    let mut b = common::connect(&home.branch_dsn("agent-migrator"));
    assert!(
        scalar(&mut b, "SELECT count(*) FROM accounts") < 500,
        "the agent's writes are in its branch"
    );
}
