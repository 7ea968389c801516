//! Bad values are refused, never stored: the attacks of issue 10 (part 5)
//! played through the CLI, the HTTP API and MCP (over stdio, with raw
//! JSON-RPC as an agent client sends it), on real servers.
//!
//! - TTLs past ten years (`300000y`, `9223372036854775807s`, which used to
//!   panic or wrap into 1970) and oversized other durations;
//! - labels: huge values, thousands of them, keys that are empty, hold `=`
//!   or `../`, or have too long a name;
//! - rows that an older pgfork (or a hand edit) left in meta.db, which
//!   must not break any listing for everyone;
//! - `run_sql` whose SQL turns its own timeout off, or catches the cancel.

mod common;
mod daemon;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use daemon::{Mcp, Serve};
use reqwest::StatusCode;
use serde_json::{Value, json};

const HUGE_TTLS: [&str; 2] = ["300000y", "9223372036854775807s"];

fn shop(h: &TestHome) {
    h.create_source("shop");
    load_items(&mut connect(&h.source_dsn("shop")), "base", 10);
    h.snapshot("shop");
}

/// Branch names of a JSON list.
fn names(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list:#}"))
        .iter()
        .map(|b| b["name"].as_str().expect("name").to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("<no message>")
}

/// Asserts a 400 whose message names `field`.
fn assert_400(what: &str, (status, body): (StatusCode, Value), field: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body:#}");
    assert!(
        message(&body).contains(&format!("'{field}'")),
        "{what}: the message does not name '{field}': {body:#}"
    );
    assert!(
        message(&body).len() < 1000,
        "{what}: the message echoes the input: {} bytes",
        message(&body).len()
    );
}

/// The creation-time expiry of a branch, as the CLI shows it.
fn expiry(h: &TestHome, name: &str) -> Value {
    h.branch(name)["expires_at"].clone()
}

#[test]
fn ttls_past_ten_years_are_refused_everywhere_and_nothing_is_stored() {
    let h = TestHome::new(Pool::Xfs, "bndttl");
    shop(&h);
    h.create_branch("keep", "shop", &["--ttl", "2h"]);
    let kept_expiry = expiry(&h, "keep");
    let before = entries(&h.pool_dir().join("branches"));

    // CLI: exit 1, invalid_argument, the field and the bound named.
    for ttl in HUGE_TTLS {
        let e = h.fails(&["branch", "create", "bad", "--from", "shop", "--ttl", ttl]);
        assert_eq!(e.code, "invalid_argument", "{ttl}: {}", e.message);
        assert!(
            e.message.contains("ttl") && e.message.contains("10y"),
            "{ttl}: {}",
            e.message
        );
        h.fails_human(&["branch", "create", "bad", "--from", "shop", "--ttl", ttl]);
        let e = h.fails(&["branch", "set", "keep", "--ttl", ttl]);
        assert_eq!(e.code, "invalid_argument", "{ttl}: {}", e.message);
    }
    assert_eq!(
        expiry(&h, "keep"),
        kept_expiry,
        "a refused set changed the TTL"
    );

    // API: 400 naming the field, for create and set.
    let s = Serve::start(&h, &["--idle-stop", "0"]);
    for ttl in HUGE_TTLS {
        assert_400(
            ttl,
            s.post(
                "/v1/branches",
                json!({ "name": "bad", "from": "shop", "ttl": ttl }),
            ),
            "ttl",
        );
        assert_400(
            ttl,
            s.patch("/v1/branches/keep", json!({ "ttl": ttl })),
            "ttl",
        );
    }
    // Other durations that are stored are bounded too.
    assert_400(
        "agent ttl",
        s.post(
            "/v1/agents",
            json!({ "name": "a1", "source": "shop", "policy": "branch", "ttl": "300000y" }),
        ),
        "ttl",
    );
    assert_400(
        "agent idle_stop",
        s.post(
            "/v1/agents",
            json!({ "name": "a1", "source": "shop", "policy": "branch", "idle_stop": "300000y" }),
        ),
        "idle_stop",
    );
    assert_400(
        "agent statement_timeout",
        s.post(
            "/v1/agents",
            json!({ "name": "a1", "source": "shop", "policy": "read-only",
                    "statement_timeout": "9223372036854775807s" }),
        ),
        "statement_timeout",
    );
    let (st, body) = s.get("/v1/audit?since=9223372036854775807s");
    assert_eq!(
        st,
        StatusCode::OK,
        "a huge --since means everything: {body:#}"
    );
    drop(s);

    // MCP: a tool error with the same code.
    let mut mcp = Mcp::start(&h);
    for ttl in HUGE_TTLS {
        let (code, msg) = mcp.refused(
            "create_branch",
            json!({ "name": "bad", "from": "shop", "ttl": ttl }),
        );
        assert_eq!(code, "invalid_argument", "{ttl}: {msg}");
        assert!(msg.contains("ttl"), "{ttl}: {msg}");
    }
    drop(mcp);

    // The CLI's other stored durations.
    for args in [
        &[
            "agent", "create", "a1", "--source", "shop", "--policy", "branch", "--ttl", "300000y",
        ][..],
        &[
            "agent",
            "create",
            "a1",
            "--source",
            "shop",
            "--policy",
            "branch",
            "--idle-stop",
            "300000y",
        ],
        &[
            "agent",
            "create",
            "a1",
            "--source",
            "shop",
            "--policy",
            "read-only",
            "--statement-timeout",
            "30d",
        ],
        &[
            "snapshot",
            "schedule",
            "shop",
            "--every",
            "9223372036854775807s",
        ],
    ] {
        let e = h.fails(args);
        assert_eq!(e.code, "invalid_argument", "{args:?}: {}", e.message);
    }
    h.fails_human(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--idle-delete",
        "300000y",
    ]);
    assert!(
        h.json(&["agent", "list"]).as_array().unwrap().is_empty(),
        "a refused agent was stored"
    );
    assert!(
        h.json(&["source", "info", "shop"])["snapshot_schedule"].is_null(),
        "a refused schedule was stored"
    );

    // Nothing of the refused branches exists: no row, directory, process
    // or port; the listing works and shows only what was made.
    assert_eq!(names(&h.json(&["branch", "list"])), set(&["keep"]));
    assert_eq!(entries(&h.pool_dir().join("branches")), before);
    h.assert_settled();

    // The bound itself is accepted, and lands ten years out.
    let ten = h.json(&["branch", "set", "keep", "--ttl", "10y"]);
    let at = rfc3339_secs(ten["expires_at"].as_str().expect("expires_at"));
    let now = unix_now();
    assert!(
        (at - now - 315_576_000).abs() < 120,
        "10y should expire ten years out: {ten:#}"
    );
}

/// Unix seconds now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn bad_labels_are_refused_everywhere_and_good_ones_kept() {
    let h = TestHome::new(Pool::Xfs, "bndlbl");
    shop(&h);
    let big = "v".repeat(100_000);
    let long_name = "k".repeat(64);

    // CLI.
    let many: Vec<String> = (0..5000).map(|i| format!("--label=k{i}=v")).collect();
    let mut args = vec!["branch", "create", "bad", "--from", "shop"];
    args.extend(many.iter().map(String::as_str));
    let e = h.fails(&args);
    assert_eq!(e.code, "invalid_argument", "5000 labels: {}", e.message);
    assert!(e.message.contains("32"), "{}", e.message);
    for label in [
        format!("k={big}"),
        "=x".to_string(),
        "../x=1".to_string(),
        "a/../b=1".to_string(),
        format!("{long_name}=1"),
        "team=a\u{7}b".to_string(),
    ] {
        let e = h.fails(&[
            "branch", "create", "bad", "--from", "shop", "--label", &label,
        ]);
        assert_eq!(
            e.code,
            "invalid_argument",
            "{}: {}",
            &label[..label.len().min(20)],
            e.message
        );
        assert!(e.message.len() < 1000, "the message echoes the label");
    }

    // A valid set, including a prefixed key, is kept as given.
    let good = h.create_branch(
        "good",
        "shop",
        &[
            "--label",
            "example.com/team=db",
            "--label",
            "pgfork.agent=x",
            "--label",
            "empty=",
        ],
    );
    assert_eq!(
        good["labels"],
        json!({ "example.com/team": "db", "pgfork.agent": "x", "empty": "" })
    );
    let filtered = h.json(&["branch", "list", "--label", "example.com/team=db"]);
    assert_eq!(names(&filtered), set(&["good"]));

    // branch set: refused additions leave the labels as they were; the
    // count is checked after merging.
    let e = h.fails(&["branch", "set", "good", "--label", "../x=1"]);
    assert_eq!(e.code, "invalid_argument", "{}", e.message);
    let thirty: Vec<String> = (0..30).map(|i| format!("--label=n{i}=v")).collect();
    let mut args = vec!["branch", "set", "good"];
    args.extend(thirty.iter().map(String::as_str));
    let e = h.fails(&args);
    assert!(e.message.contains("33"), "{}", e.message);
    assert_eq!(h.branch("good")["labels"], good["labels"]);
    let mut args = vec!["branch", "set", "good", "--unlabel", "empty"];
    args.extend(thirty.iter().map(String::as_str));
    assert_eq!(
        h.json(&args)["labels"].as_object().unwrap().len(),
        32,
        "32 labels after the merge are allowed"
    );

    // API: 400 naming the field.
    let s = Serve::start(&h, &["--idle-stop", "0"]);
    let thousands: serde_json::Map<String, Value> =
        (0..5000).map(|i| (format!("k{i}"), json!("v"))).collect();
    for (what, labels) in [
        ("100 kB value", json!({ "k": big })),
        ("5000 labels", Value::Object(thousands)),
        ("empty key", json!({ "": "x" })),
        ("key with =", json!({ "a=b": "x" })),
        ("key with ../", json!({ "../etc": "x" })),
        ("too long name", json!({ long_name.clone(): "x" })),
        ("control character", json!({ "k": "a\nb" })),
    ] {
        assert_400(
            what,
            s.post(
                "/v1/branches",
                json!({ "name": "bad", "from": "shop", "labels": labels }),
            ),
            "labels",
        );
        assert_400(
            what,
            s.patch("/v1/branches/good", json!({ "labels": labels })),
            "labels",
        );
    }
    assert_400(
        "label filter",
        s.get("/v1/branches?label=../x%3D1"),
        "label",
    );
    let (st, body) = s.get("/v1/branches?lable=a%3Db");
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "an unknown parameter: {body:#}"
    );
    assert!(message(&body).contains("'lable'"), "{body:#}");
    let (st, body) = s.post(
        "/v1/branches",
        json!({ "name": "api-good", "from": "shop", "labels": { "example.com/team": "db" } }),
    );
    assert_eq!(st, StatusCode::CREATED, "{body:#}");
    drop(s);

    // MCP.
    let mut mcp = Mcp::start(&h);
    for labels in [
        json!({ "k": big }),
        json!({ "": "x" }),
        json!({ "a=b": "x" }),
        json!({ "../etc": "x" }),
    ] {
        let (code, msg) = mcp.refused(
            "create_branch",
            json!({ "name": "bad", "from": "shop", "labels": labels }),
        );
        assert_eq!(code, "invalid_argument", "{msg}");
        assert!(msg.contains("label"), "{msg}");
    }
    let (is_error, made) = mcp.call(
        "create_branch",
        json!({ "name": "mcp-good", "from": "shop", "labels": { "example.com/team": "db" } }),
    );
    assert!(!is_error, "{made:#}");
    drop(mcp);

    let listed = h.json(&["branch", "list"]);
    assert_eq!(names(&listed), set(&["api-good", "good", "mcp-good"]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b.get("error").is_none())
    );
    h.assert_settled();
}

/// Writes to meta.db directly, as an older pgfork (or a hand edit) might
/// have, foreign keys unchecked; no pgfork process runs meanwhile.
fn tamper(h: &TestHome, sql: &str) {
    let db = rusqlite::Connection::open(h.root.join("meta.db")).expect("open meta.db");
    db.execute_batch(&format!("PRAGMA foreign_keys = OFF; {sql}"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The branch called `name` in a JSON list.
fn entry<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .expect("list")
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed: {list:#}"))
}

/// Asserts the good branches are listed normally and each bad one with an
/// error saying what is wrong (`about`) and how to remove it.
fn assert_listing(list: &Value, bad: &[(&str, &str)]) {
    assert_eq!(
        names(list),
        set(&["good-a", "good-b", "mangled", "old", "orphan"]),
        "{list:#}"
    );
    for good in ["good-a", "good-b"] {
        let b = entry(list, good);
        assert!(b.get("error").is_none_or(Value::is_null), "{b:#}");
        assert_eq!(b["status"], "running", "{b:#}");
    }
    for (name, about) in bad {
        let error = entry(list, name)["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no error: {list:#}"));
        assert!(error.contains(about), "{name}: {error}");
        assert!(
            error.contains(&format!("pgfork branch delete {name}")),
            "{name}: {error}"
        );
    }
}

#[test]
fn a_row_that_cannot_be_shown_never_breaks_listing_the_others() {
    let h = TestHome::new(Pool::Xfs, "bndrow");
    shop(&h);
    for name in ["good-a", "good-b", "old", "mangled"] {
        h.create_branch(name, "shop", &["--label", "team=db"]);
    }
    // A branch whose base snapshot row will be gone: made from a branch.
    let orphan = h.create_branch("orphan", "good-b", &[]);
    let snapshot = orphan["snapshot"].as_str().expect("snapshot").to_string();
    let number: i64 = snapshot.rsplit('@').next().unwrap().parse().unwrap();
    tamper(
        &h,
        &format!(
            "UPDATE branches SET expires_at = 9999999999999 WHERE name = 'old';
             UPDATE branches SET labels = '{{not json' WHERE name = 'mangled';
             DELETE FROM snapshots WHERE id = {number};"
        ),
    );
    let bad = [
        ("old", "expiry"),
        ("mangled", "labels"),
        ("orphan", "snapshot"),
    ];

    // CLI: JSON, the table (with the errors on stderr), one branch, gc.
    assert_listing(&h.json(&["branch", "list"]), &bad);
    let out = h.run(&["branch", "list"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    for name in ["good-a", "good-b", "old", "mangled", "orphan"] {
        assert!(table.contains(name), "{table}");
    }
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.contains("branch old:"), "{warnings}");
    assert!(h.branch("mangled")["error"].is_string());
    h.json(&["gc"]);

    // The API and the metrics.
    let s = Serve::start(&h, &["--idle-stop", "0"]);
    let (st, list) = s.get("/v1/branches");
    assert_eq!(st, StatusCode::OK, "{list:#}");
    assert_listing(&list, &bad);
    let (st, one) = s.get("/v1/branches/old");
    assert_eq!(st, StatusCode::OK, "{one:#}");
    let (st, text) = s.metrics();
    assert_eq!(st, StatusCode::OK, "{text}");
    let running: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("pgfork_branches{state=\"running\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no running gauge: {text}"));
    assert_eq!(running, 5.0, "{text}");
    for (name, _) in bad {
        assert!(
            text.contains(&format!("pgfork_branch_row_error{{branch=\"{name}\"")),
            "{name}: {text}"
        );
    }
    assert!(!text.contains("pgfork_branch_row_error{branch=\"good-a\""));
    drop(s);

    // MCP.
    let mut mcp = Mcp::start(&h);
    let (is_error, listed) = mcp.call("list_branches", json!({}));
    assert!(!is_error, "{listed:#}");
    assert_listing(&listed["branches"], &bad);
    let (is_error, filtered) = mcp.call("list_branches", json!({ "labels": { "team": "db" } }));
    assert!(!is_error, "{filtered:#}");
    assert_eq!(
        names(&filtered["branches"]),
        set(&["good-a", "good-b", "old"]),
        "the mangled labels match no filter"
    );
    drop(mcp);

    // What the errors say to do works.
    let fixed = h.json(&["branch", "set", "old", "--ttl", "1h"]);
    assert!(fixed.get("error").is_none(), "{fixed:#}");
    let fixed = h.json(&["branch", "set", "mangled", "--label", "team=db"]);
    assert!(fixed.get("error").is_none(), "{fixed:#}");
    assert_eq!(fixed["labels"], json!({ "team": "db" }));
    h.json(&["branch", "delete", "orphan"]);
    let list = h.json(&["branch", "list"]);
    assert_eq!(names(&list), set(&["good-a", "good-b", "mangled", "old"]));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|b| b.get("error").is_none())
    );
    h.assert_settled();
}

#[test]
fn run_sql_is_canceled_from_outside_the_session() {
    let h = TestHome::new(Pool::Xfs, "bndsql");
    shop(&h);
    let mut mcp = Mcp::start(&h);
    let (is_error, made) = mcp.call("create_branch", json!({ "name": "q", "from": "shop" }));
    assert!(!is_error, "{made:#}");
    let dsn = made["dsn"].as_str().expect("dsn").to_string();

    for secs in [0, 61, 3600] {
        let (code, msg) = mcp.refused(
            "run_sql",
            json!({ "branch": "q", "sql": "SELECT 1", "timeout_seconds": secs }),
        );
        assert_eq!(code, "invalid_argument", "{secs}: {msg}");
        assert!(msg.contains("timeout_seconds"), "{msg}");
    }

    // SQL that catches the cancel, to play the cursor path (a single
    // SELECT) against a session that will not stop by itself.
    let (is_error, out) = mcp.call(
        "run_sql",
        json!({ "branch": "q", "sql":
            "CREATE FUNCTION stubborn() RETURNS int LANGUAGE plpgsql AS $$
             DECLARE t0 timestamptz := clock_timestamp();
             BEGIN
               WHILE clock_timestamp() < t0 + interval '40 seconds' LOOP
                 BEGIN
                   PERFORM pg_sleep(0.1);
                 EXCEPTION WHEN query_canceled THEN
                   NULL;
                 END;
               END LOOP;
               RETURN 1;
             END $$" }),
    );
    assert!(!is_error, "{out:#}");

    for sql in [
        // The plain path: the SQL turns the statement timeout off first.
        "SET statement_timeout = 0; SELECT pg_sleep(30)",
        // The cursor path: the SQL swallows the cancel itself.
        "SELECT stubborn()",
    ] {
        let began = Instant::now();
        let (code, msg) = mcp.refused(
            "run_sql",
            json!({ "branch": "q", "sql": sql, "timeout_seconds": 2 }),
        );
        let took = began.elapsed();
        assert_eq!(code, "canceled", "{sql}: {msg}");
        assert!(msg.contains("canceled after 2 s"), "{sql}: {msg}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(10),
            "{sql}: answered after {took:?}"
        );
        // Its session is gone: nothing of run_sql still runs on the branch.
        let mut c = connect(&dsn);
        assert!(
            wait_until(Duration::from_secs(10), || scalar(
                &mut c,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgfork-mcp'"
            ) == 0),
            "{sql}: a run_sql session is still open"
        );
    }

    // The branch stays usable, within the default limit.
    let (is_error, out) = mcp.call(
        "run_sql",
        json!({ "branch": "q", "sql": "SELECT count(*) FROM items" }),
    );
    assert!(!is_error, "{out:#}");
    assert_eq!(out["rows"], json!([["10"]]));
    drop(mcp);
    h.assert_settled();
}
