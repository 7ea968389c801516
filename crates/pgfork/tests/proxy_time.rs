//! Time and budgets belong to the proxy (issue 11, items 5 and 7): the
//! statement and transaction limits run on the proxy's clock, so nothing
//! the SQL sets lifts them; a transaction that holds locks on the source
//! is rolled back at the limit; lock_timeout comes back before every
//! dry-run statement; a branch agent's row budget counts what the server
//! wrote, and its storage budget stops writes of every kind.

mod common;
mod proxy;

use std::time::{Duration, Instant};

use common::{Pool, TestHome, exec, scalar};
use proxy::raw::{self, Raw};
use proxy::{Proxy, agent, sqlstate};

fn prepare(home: &TestHome) {
    home.create_source("shop");
    let mut c = common::connect(&home.source_dsn("shop"));
    exec(
        &mut c,
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
         INSERT INTO items (name) SELECT 'item' || g FROM generate_series(1, 500) g;
         CREATE FUNCTION add_item() RETURNS int LANGUAGE sql
             AS $$ INSERT INTO items (name) VALUES ('added') RETURNING 1 $$;",
    );
}

/// SQL cannot lift the proxy's clock: a DO block that turns the server's
/// timeouts off is still cancelled at the agent's limit.
fn timeouts_hold(c: &mut postgres::Client, limit_s: u64, what: &str) {
    let started = Instant::now();
    let e = c
        .batch_execute(
            "DO $$BEGIN
               PERFORM set_config('statement_timeout', '0', false);
               PERFORM set_config('lock_timeout', '0', false);
               PERFORM pg_sleep(30);
             END$$",
        )
        .expect_err("the sleep outlives the limit");
    let took = started.elapsed();
    assert_eq!(sqlstate(&e), "57014", "{what}: {e}");
    assert!(
        took < Duration::from_secs(limit_s + 10),
        "{what}: the {limit_s} s limit let a statement run {took:?}"
    );
}

#[test]
fn time_and_locks_belong_to_the_proxy() {
    let home = TestHome::new(Pool::Xfs, "px-time");
    prepare(&home);
    let rehearser = agent(
        &home,
        "rehearser",
        "shop",
        "dry-run",
        &["--statement-timeout", "2s"],
    );
    let waiter = agent(
        &home,
        "waiter",
        "shop",
        "dry-run",
        &["--statement-timeout", "20s"],
    );
    let reader = agent(&home, "reader", "shop", "read-only", &[]);
    let proxy = Proxy::start(&home, &["--transaction-limit", "3s"]);

    let mut c = proxy.connect("rehearser", &rehearser, "shop");
    timeouts_hold(&mut c, 2, "dry-run");

    // A dry-run transaction holding ACCESS EXCLUSIVE, kept busy with
    // statements each under the statement limit: rolled back at the
    // transaction limit, so the application waits seconds, not minutes.
    c.batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .unwrap_or_else(|e| panic!("{}", common::describe(&e)));
    let dsn = home.source_dsn("shop");
    let app = std::thread::spawn(move || {
        let mut app = common::connect(&dsn);
        let started = Instant::now();
        let n = scalar(&mut app, "SELECT count(*) FROM items");
        (n, started.elapsed())
    });
    let held = Instant::now();
    let mut ended = None;
    for _ in 0..20 {
        if let Err(e) = c.batch_execute("SELECT pg_sleep(1)") {
            ended = Some(e);
            break;
        }
    }
    let e = ended.expect("the transaction limit ended the transaction");
    assert!(
        held.elapsed() < Duration::from_secs(12),
        "the lock was held {:?}",
        held.elapsed()
    );
    // Idle when the limit struck: 25P03 ends the session; in the middle of
    // a statement: the proxy's cancel, whose message names the limit.
    let text = common::describe(&e);
    assert!(
        text.contains("transaction") || sqlstate(&e) == "25P03",
        "{text}"
    );
    let (n, waited) = app.join().unwrap();
    assert_eq!(n, 500);
    assert!(
        waited < Duration::from_secs(12),
        "the application waited {waited:?} for the agent's lock"
    );

    // lock_timeout is set again before every dry-run statement: turning it
    // off in a DO block does not make the next statement wait forever.
    let mut app = common::connect(&home.source_dsn("shop"));
    app.batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut w = proxy.connect("waiter", &waiter, "shop");
    w.batch_execute("DO $$BEGIN PERFORM set_config('lock_timeout', '0', false); END$$")
        .unwrap();
    let started = Instant::now();
    let e = w
        .batch_execute("SELECT count(*) FROM items")
        .expect_err("the lock wait times out");
    assert_eq!(sqlstate(&e), "55P03", "{e}");
    assert!(started.elapsed() < Duration::from_secs(15));
    app.batch_execute("ROLLBACK").unwrap();

    // Read-only transactions have the same limit.
    let mut r = proxy.connect("reader", &reader, "shop");
    r.batch_execute("BEGIN").unwrap();
    let held = Instant::now();
    let mut ended = false;
    for _ in 0..20 {
        if r.batch_execute("SELECT pg_sleep(1)").is_err() {
            ended = true;
            break;
        }
    }
    assert!(ended, "the read-only transaction outlived its limit");
    assert!(held.elapsed() < Duration::from_secs(12));
}

#[test]
fn branch_budgets_count_what_the_server_did() {
    // XFS: on btrfs an agent's storage budget is also a hard quota of its
    // branch (tests/storage_limits.rs), which would stop the fill before
    // the proxy's own check this test is about.
    let home = TestHome::new(Pool::Xfs, "px-budget");
    prepare(&home);
    let builder = agent(
        &home,
        "builder",
        "shop",
        "branch",
        &["--max-rows", "100", "--statement-timeout", "2s"],
    );
    let filler = agent(&home, "filler", "shop", "branch", &["--max-storage", "20M"]);
    let proxy = Proxy::start(&home, &[]);

    let mut c = proxy.connect("builder", &builder, "shop");
    timeouts_hold(&mut c, 2, "branch");
    // A data-modifying CTE's tag says SELECT; the server's counters say 300.
    let e = c
        .batch_execute("WITH d AS (DELETE FROM items WHERE id <= 300 RETURNING 1) SELECT 1")
        .expect_err("over the row budget");
    assert_eq!(sqlstate(&e), "54000", "{e}");
    let e = c
        .query(
            "WITH d AS (DELETE FROM items WHERE id <= $1 RETURNING 1) SELECT count(*) FROM d",
            &[&300i32],
        )
        .expect_err("over the row budget");
    assert_eq!(sqlstate(&e), "54000", "{e}");
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM items"), 500);
    drop(c);
    // A pending parse error, then a Query that deletes 200 rows before Sync.
    let mut r = Raw::connect(proxy.port, "builder", &builder, "shop", &[]).unwrap();
    let t = r.exchange(
        &[
            raw::parse("", "DELETE FROM"),
            raw::query("DELETE FROM items WHERE id <= 200"),
            raw::sync(),
            raw::query("SELECT count(*) FROM items"),
        ]
        .concat(),
        2,
    );
    assert_eq!(
        t.values().last(),
        Some(&Some(b"500".to_vec())),
        "{}",
        t.describe()
    );
    r.close();

    // Past the storage budget every way of writing is refused: a plain
    // INSERT, a function that writes, a statement prepared before, a
    // data-modifying CTE, COPY.
    let mut f = proxy.connect("filler", &filler, "shop");
    f.batch_execute("PREPARE later AS INSERT INTO items (name) VALUES ('later')")
        .unwrap();
    let prepared = f.prepare("INSERT INTO items (name) VALUES ($1)").unwrap();
    f.batch_execute(
        "CREATE TABLE big AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 60000) g",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while f
        .batch_execute("INSERT INTO items (name) VALUES ('more')")
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "writes were still accepted a minute past the storage budget"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let before = scalar(&mut f, "SELECT count(*) FROM items");
    for sql in [
        "INSERT INTO items (name) VALUES ('x')",
        "SELECT add_item()",
        "EXECUTE later",
        "WITH i AS (INSERT INTO items (name) VALUES ('cte') RETURNING 1) SELECT 1",
        "BEGIN; SELECT add_item(); COMMIT",
        "DO $$BEGIN PERFORM add_item(); END$$",
    ] {
        assert!(f.batch_execute(sql).is_err(), "{sql} wrote past the budget");
        let _ = f.batch_execute("ROLLBACK");
    }
    assert!(
        f.execute(&prepared, &[&"prepared"]).is_err(),
        "a statement prepared before the budget ran out still wrote"
    );
    assert_eq!(scalar(&mut f, "SELECT count(*) FROM items"), before);
}
