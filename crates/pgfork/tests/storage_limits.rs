//! Storage limits on real pools: a branch held to `--max-size` by btrfs
//! quotas fails alone (PostgreSQL's own "could not extend file") while its
//! source and siblings go on; all branches together cannot eat the
//! reserve kept for sources; limits a pool cannot enforce are refused.

mod common;
mod proxy;

use std::time::Duration;

use common::{Pool, TestHome, connect, describe, exec, scalar, try_connect};

const MIB: u64 = 1 << 20;

/// Writes until something refuses: about 2 GB if nothing does.
const FILL: &str = "CREATE TABLE fill AS SELECT g, repeat(md5(g::text), 20) AS pad \
                    FROM generate_series(1, 3000000) g";

fn source_with_data(home: &TestHome) {
    home.create_source("shop");
    let mut c = connect(&home.source_dsn("shop"));
    exec(
        &mut c,
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 10000) g;",
    );
    home.snapshot("shop");
}

/// The failure of a statement that crossed a quota. The statement gets
/// PostgreSQL's own out-of-space error, unless a WAL write of the same
/// server hit the quota a moment earlier: then PostgreSQL PANICs and
/// restarts, and the client sees its connection closed (through the proxy:
/// 08006, the server connection was lost). Either way the
/// branch's log has PostgreSQL's own error.
fn quota_failure(home: &TestHome, branch: &str, result: Result<(), postgres::Error>) -> String {
    let e = result.expect_err("the fill must be stopped by the quota");
    let text = describe(&e);
    let own_error = |t: &str| {
        t.contains("could not extend file")
            || t.contains("Disk quota exceeded")
            || t.contains("could not write")
    };
    let log = home.branch(branch)["log"].as_str().unwrap().to_string();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        own_error(&text)
            || ((text.contains("connection closed") || text.contains("connection was lost"))
                && own_error(&log)),
        "not PostgreSQL's own out-of-space error: {text}\nlog: {log}"
    );
    text
}

/// A client of the branch once its server answers again: it stayed up,
/// restarted itself after a WAL write failed, or `branch start` (which
/// lends a full branch room for its recovery) brings it back.
fn answers_again(home: &TestHome, name: &str) -> postgres::Client {
    let dsn = home.branch_dsn(name);
    for attempt in 0..1200 {
        if let Ok(mut c) = try_connect(&dsn)
            && c.simple_query("SELECT 1").is_ok()
        {
            return c;
        }
        // A server whose recovery could not write has exited: start it,
        // now and then (space freed elsewhere comes back asynchronously).
        if attempt % 40 == 0 && home.branch(name)["status"] == "crashed" {
            let _ = home.run(&["branch", "start", name]);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "branch {name} does not answer again: {:#}",
        home.branch(name)
    );
}

/// `SELECT count(*) FROM items` on a branch whose server may restart
/// under our feet (a WAL write at a full quota makes it PANIC).
fn count_when_back(home: &TestHome, name: &str) -> i64 {
    for _ in 0..20 {
        let mut c = answers_again(home, name);
        if let Ok(row) = c.query_one("SELECT count(*) FROM items", &[]) {
            return row.get(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("branch {name} keeps failing: {:#}", home.branch(name));
}

/// The source goes on writing and snapshotting, whatever its branches did.
fn source_is_untouched(home: &TestHome, rows: i64) {
    let mut c = connect(&home.source_dsn("shop"));
    exec(&mut c, "INSERT INTO items VALUES (-1, 'after the fill')");
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM items"), rows + 1);
    exec(&mut c, "DELETE FROM items WHERE id = -1");
    home.snapshot("shop");
}

#[test]
fn a_branch_at_its_max_size_fails_alone() {
    let home = TestHome::new(Pool::Btrfs, "quota-own");
    source_with_data(&home);
    let info = home.create_branch("capped", "shop", &["--max-size", "64M"]);
    assert_eq!(info["max_size"], 64 * MIB, "{info:#}");
    home.create_branch("sibling", "shop", &[]);

    let mut capped = connect(&home.branch_dsn("capped"));
    let why = quota_failure(&home, "capped", capped.batch_execute(FILL));
    eprintln!("the capped branch was refused: {why}");

    source_is_untouched(&home, 10_000);
    let mut sibling = connect(&home.branch_dsn("sibling"));
    exec(&mut sibling, "INSERT INTO items VALUES (-2, 'sibling')");
    assert_eq!(scalar(&mut sibling, "SELECT count(*) FROM items"), 10_001);

    // The capped branch comes back with its data, and can write again
    // once the failed statement's files are gone.
    let mut capped = answers_again(&home, "capped");
    assert_eq!(scalar(&mut capped, "SELECT count(*) FROM items"), 10_000);
    exec(&mut capped, "INSERT INTO items VALUES (-3, 'small write')");
    let info = home.branch("capped");
    let held = info["unshared_bytes"].as_u64().expect("unshared_bytes");
    assert!(
        held <= 64 * MIB,
        "the branch holds more than its limit: {info:#}"
    );
    assert_eq!(info["max_size"], 64 * MIB);

    // A reset is a new clone: the limit comes with it.
    home.json(&["branch", "reset", "capped"]);
    let mut capped = connect(&home.branch_dsn("capped"));
    quota_failure(&home, "capped", capped.batch_execute(FILL));
    drop(capped);
    answers_again(&home, "capped");

    let doctor = home.json(&["doctor"]);
    let check = common::doctor_check(&doctor, "storage limits");
    assert_eq!(check["status"], "ok", "{check:#}");

    home.json(&["branch", "delete", "capped"]);
    home.json(&["branch", "delete", "sibling"]);
    home.assert_settled();
}

#[test]
fn branches_together_leave_the_sources_reserve() {
    let home = TestHome::bare(Pool::Btrfs, "quota-space");
    let report = home.init(&["--branch-space", "256M"]);
    assert_eq!(
        report["quotas"]["branch_space"],
        256 * MIB,
        "{:#}",
        report["quotas"]
    );
    source_with_data(&home);
    home.create_branch("greedy", "shop", &[]);
    home.create_branch("quiet", "shop", &[]);

    let mut greedy = connect(&home.branch_dsn("greedy"));
    quota_failure(&home, "greedy", greedy.batch_execute(FILL));
    drop(greedy);

    // The source writes more than is left in the pool's branch space, and
    // takes a snapshot: its reserve was not eaten.
    let mut src = connect(&home.source_dsn("shop"));
    exec(
        &mut src,
        "CREATE TABLE more AS SELECT g, repeat(md5(g::text), 10) AS pad FROM generate_series(1, 200000) g",
    );
    source_is_untouched(&home, 10_000);

    // The siblings share the branches' space: while it is full, a write
    // of theirs fails too (and a failed WAL write restarts their server).
    // Once the greedy branch is gone they come back with their data.
    home.json(&["branch", "delete", "greedy"]);
    assert_eq!(count_when_back(&home, "quiet"), 10_000);
    home.json(&["branch", "delete", "quiet"]);
    home.assert_settled();
}

/// An agent's `--max-storage` is a hard limit of the branch the proxy
/// makes for it, not only the proxy's sampled check.
#[test]
fn an_agents_storage_budget_holds_its_branch() {
    let home = TestHome::new(Pool::Btrfs, "quota-agent");
    source_with_data(&home);
    let secret = proxy::agent(&home, "dev", "shop", "branch", &["--max-storage", "48M"]);
    let proxy = proxy::Proxy::start(&home, &[]);
    let mut c = proxy.connect("dev", &secret, "shop");
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM items"), 10_000);
    let info = home.branch("agent-dev");
    assert_eq!(info["max_size"], 48 * MIB, "{info:#}");
    let e = c.batch_execute(FILL).expect_err("the quota stops the fill");
    eprintln!("through the proxy: {}", describe(&e));
    quota_failure(&home, "agent-dev", Err(e));
    source_is_untouched(&home, 10_000);
    drop(c);
    drop(proxy);
    home.ok(&["agent", "revoke", "dev"]);
}

#[test]
fn limits_that_cannot_hold_are_refused_and_defaults_apply() {
    // XFS on this kernel has no quotas: asking for a limit is an error,
    // never a limit silently ignored, and nothing is left behind.
    let xfs = TestHome::new(Pool::Xfs, "quota-xfs");
    source_with_data(&xfs);
    let e = xfs.fails(&[
        "branch",
        "create",
        "b",
        "--from",
        "shop",
        "--max-size",
        "64M",
    ]);
    assert_eq!(e.code, "invalid_argument", "{e:?}");
    assert!(e.message.contains("btrfs"), "{}", e.message);
    assert_eq!(xfs.json(&["branch", "list"]), serde_json::json!([]));
    let e = xfs.fails(&["source", "limits", "shop", "--branch-max-size", "64M"]);
    assert!(e.message.contains("btrfs"), "{}", e.message);
    let e = xfs.fails(&["init", "--branch-space", "1G"]);
    assert!(e.message.contains("btrfs"), "{}", e.message);
    let doctor = xfs.json(&["doctor"]);
    let check = common::doctor_check(&doctor, "storage limits");
    assert_eq!(check["status"], "warn", "{check:#}");
    xfs.assert_settled();

    let home = TestHome::new(Pool::Btrfs, "quota-args");
    source_with_data(&home);
    for (size, says) in [("1M", "below"), ("lots", "size"), ("0", "below")] {
        let e = home.fails(&[
            "branch",
            "create",
            "b",
            "--from",
            "shop",
            "--max-size",
            size,
        ]);
        assert!(e.message.contains(says), "--max-size {size}: {}", e.message);
    }
    for space in ["0%", "100%", "lots"] {
        let e = home.fails(&["init", "--branch-space", space]);
        assert!(e.message.contains("--branch-space"), "{}", e.message);
    }
    assert_eq!(home.json(&["branch", "list"]), serde_json::json!([]));

    // A source's default applies to branches made without --max-size.
    let limits = home.json(&["source", "limits", "shop", "--branch-max-size", "48M"]);
    assert_eq!(limits["branch_max_size"], 48 * MIB);
    let info = home.create_branch("defaulted", "shop", &[]);
    assert_eq!(info["max_size"], 48 * MIB, "{info:#}");
    let info = home.create_branch("own", "shop", &["--max-size", "96M"]);
    assert_eq!(info["max_size"], 96 * MIB, "{info:#}");
    let limits = home.json(&["source", "limits", "shop", "--branch-max-size", "none"]);
    assert!(limits["branch_max_size"].is_null(), "{limits:#}");
    let e = home.fails(&["source", "limits", "nosuch", "--branch-max-size", "48M"]);
    assert_eq!(e.code, "unknown_source", "{e:?}");
    for b in ["defaulted", "own"] {
        home.json(&["branch", "delete", b]);
    }

    // The free-space floor holds for everything that writes to the pool,
    // not only branches: refused before anything is written.
    home.ok(&["init", "--min-free", "1T"]);
    let before = home.json(&["snapshot", "list"]);
    for args in [
        &["snapshot", "create", "shop"][..],
        &["source", "create", "more"][..],
        &["branch", "create", "b", "--from", "shop"][..],
    ] {
        let e = home.fails(args);
        assert_eq!(e.code, "disk_floor", "{args:?}: {e:?}");
        assert!(e.message.contains("--min-free"), "{}", e.message);
    }
    assert_eq!(home.json(&["snapshot", "list"]), before);
    home.ok(&["init", "--min-free", "0"]);
    home.assert_settled();
}
