//! `pgfork rehearse` on real migrations: a rewrite, a `NOT NULL` column
//! with a volatile default, an index without `CONCURRENTLY`, one with it,
//! a file that fails halfway, and a file's own transaction holding a lock
//! until its `COMMIT`. Each is reported statement by statement, with the
//! locks, rewrites and lints it causes, and the branch made for it goes.

mod common;
mod daemon;

use std::process::Output;

use common::*;
use daemon::{Mcp, Serve};
use serde_json::{Value, json};

fn rehearse(home: &TestHome, name: &str, sql: &str, extra: &[&str]) -> (Option<i32>, Value) {
    let file = home.root.join(format!("{name}.sql"));
    std::fs::write(&file, sql).unwrap();
    let path = file.display().to_string();
    let mut args = vec!["--json", "rehearse", "shop", "--file", path.as_str()];
    args.extend_from_slice(extra);
    let out: Output = home.run(&args);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rehearse printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

fn lock<'a>(statement: &'a Value, relation: &str, mode: &str) -> &'a Value {
    statement["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == relation && l["mode"] == mode)
        .unwrap_or_else(|| panic!("no {mode} on {relation}: {statement:#}"))
}

fn rewrote(statement: &Value, relation: &str) -> bool {
    statement["rewrites"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["relation"] == relation && r["bytes"].as_u64().unwrap() > 0)
}

fn rules(report: &Value) -> Vec<(String, u64)> {
    report["lints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["rule"].as_str().unwrap().to_string(),
                l["at"]["line"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn rehearsals_measure_locks_and_rewrites_beside_the_lints() {
    let home = TestHome::new(Pool::Btrfs, "rehearse");
    home.create_source("shop");
    let source_dsn = home.source_dsn("shop");
    exec(
        &mut connect(&source_dsn),
        "CREATE TABLE orders (id int PRIMARY KEY, amount int, note text);
         INSERT INTO orders SELECT g, g % 1000, 'order ' || g FROM generate_series(1, 20000) g;",
    );
    let before = data_digest(&mut connect(&source_dsn));

    // Rewrites, a volatile default and a plain index: it applies, and the
    // lints block it.
    let (code, r) = rehearse(
        &home,
        "rewrites",
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint;\n\
         ALTER TABLE orders ADD COLUMN token uuid NOT NULL DEFAULT gen_random_uuid();\n\
         CREATE INDEX orders_amount ON orders (amount);\n",
        &[],
    );
    assert_eq!(code, Some(2), "{r:#}");
    assert_eq!(r["verdict"], "blocked");
    let st = r["statements"].as_array().unwrap();
    assert!(st.iter().all(|s| s["outcome"] == "applied"), "{r:#}");
    let retype = lock(&st[0], "public.orders", "ACCESS EXCLUSIVE");
    assert_eq!(retype["existing"], true);
    assert_eq!(retype["blocks"], "reads and writes");
    assert!(retype["held_ms"].as_f64().unwrap() > 0.0, "{retype:#}");
    assert!(rewrote(&st[0], "public.orders"), "{:#}", st[0]);
    assert!(rewrote(&st[0], "public.orders_pkey"), "{:#}", st[0]);
    assert!(
        rewrote(&st[1], "public.orders"),
        "volatile default: {:#}",
        st[1]
    );
    let index = lock(&st[2], "public.orders", "SHARE");
    assert_eq!(index["blocks"], "writes");
    assert!(!rewrote(&st[2], "public.orders"), "{:#}", st[2]);
    assert!(
        st[0]["wal_bytes"].as_u64().unwrap() > 100_000,
        "{:#}",
        st[0]
    );
    let found = rules(&r);
    for (rule, line) in [
        ("changing-column-type", 1),
        ("require-concurrent-index-creation", 3),
    ] {
        assert!(
            found.contains(&(rule.to_string(), line)),
            "{rule} at line {line}: {found:?}"
        );
    }
    let changes: Vec<&str> = r["schema"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        changes.contains(&"column public.orders.token"),
        "{changes:?}"
    );
    assert!(
        changes.contains(&"index public.orders_amount"),
        "{changes:?}"
    );

    // An index built concurrently runs alone (PostgreSQL refuses it in a
    // transaction) and breaks no rule: it applies, exit 0.
    let (code, r) = rehearse(
        &home,
        "concurrently",
        "CREATE INDEX CONCURRENTLY orders_note ON orders (note);\n",
        &[],
    );
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["verdict"], "applies");
    assert_eq!(r["statements"][0]["in_transaction"], false, "{r:#}");
    assert!(
        !rules(&r)
            .iter()
            .any(|(rule, _)| rule == "require-concurrent-index-creation"),
        "{r:#}"
    );

    // A statement fails: its error is placed in the file, nothing after it
    // runs, exit 1.
    let (code, r) = rehearse(
        &home,
        "fails",
        "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\nINSERT INTO nope VALUES (1);\nCREATE TABLE b (id int);\n",
        &[],
    );
    assert_eq!(code, Some(1), "{r:#}");
    assert_eq!(r["verdict"], "fails");
    let st = r["statements"].as_array().unwrap();
    assert_eq!(st[1]["rows"], 1);
    assert_eq!(st[2]["outcome"], "failed");
    assert_eq!(st[2]["error"]["sqlstate"], "42P01", "{:#}", st[2]);
    assert_eq!(
        st[2]["error"]["at"],
        serde_json::json!({"line": 3, "column": 13}),
        "{:#}",
        st[2]
    );
    assert_eq!(st[3]["outcome"], "not_run");
    assert!(r["schema"].is_null(), "no diff of a migration that fails");

    // The file's own transaction holds its lock until COMMIT; a limit on
    // lock time blocks it and says which lock.
    let (code, r) = rehearse(
        &home,
        "held",
        "BEGIN;\nALTER TABLE orders ADD COLUMN flag boolean;\nSELECT pg_sleep(0.3);\nCOMMIT;\n",
        &["--max-lock-ms", "100"],
    );
    assert_eq!(code, Some(2), "{r:#}");
    let held = lock(&r["statements"][1], "public.orders", "ACCESS EXCLUSIVE")["held_ms"]
        .as_f64()
        .unwrap();
    assert!(held >= 300.0, "held until COMMIT, after the sleep: {held}");
    let reasons = r["reasons"].to_string();
    assert!(
        reasons.contains("ACCESS EXCLUSIVE on public.orders") && reasons.contains("100 ms"),
        "{reasons}"
    );

    // --keep leaves the branch (and says its DSN); otherwise none is left.
    let (code, r) = rehearse(&home, "keep", "CREATE TABLE kept (id int);\n", &["--keep"]);
    assert_eq!(code, Some(0), "{r:#}");
    let kept = r["branch"].as_str().unwrap();
    assert!(r["dsn"].as_str().unwrap().starts_with("postgres://"));
    let names = home.branch_names();
    assert_eq!(
        names,
        vec![kept.to_string()],
        "only the kept branch is left"
    );
    home.json(&["branch", "delete", kept]);

    // Bad input says what to do and leaves nothing.
    let err = home.fails(&["rehearse", "shop", "--file", "/nonexistent.sql"]);
    assert!(err.message.contains("/nonexistent.sql"), "{err:?}");
    let file = home.root.join("keep.sql").display().to_string();
    let err = home.fails(&["rehearse", "nosuch", "--file", &file]);
    assert!(err.code.starts_with("unknown"), "{err:?}");
    assert_eq!(
        data_digest(&mut connect(&source_dsn)),
        before,
        "a rehearsal changed the source"
    );
    home.assert_settled();
}

/// The same rehearsal through the HTTP API and the MCP tool an agent uses.
#[test]
fn rehearsals_over_http_and_mcp() {
    let home = TestHome::new(Pool::Btrfs, "rehearse-api");
    home.create_source("shop");
    exec(
        &mut connect(&home.source_dsn("shop")),
        "CREATE TABLE orders (id int PRIMARY KEY, amount int);
         INSERT INTO orders SELECT g, g FROM generate_series(1, 1000) g;",
    );
    let sql = "ALTER TABLE orders ADD COLUMN note text;\nCREATE INDEX orders_amount ON orders (amount);\n";
    let serve = Serve::start(&home, &[]);
    let (status, r) = serve.post("/v1/rehearsals", json!({ "from": "shop", "sql": sql }));
    assert_eq!(status, 200, "{r:#}");
    assert_eq!(r["verdict"], "blocked", "{r:#}");
    assert_eq!(r["statements"].as_array().unwrap().len(), 2);
    lock(&r["statements"][1], "public.orders", "SHARE");
    let (status, r) = serve.post(
        "/v1/rehearsals",
        json!({ "from": "shop", "sql": sql, "fail_on": "sometimes" }),
    );
    assert_eq!(status, 400, "{r:#}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("warning or error")
    );
    drop(serve);

    let mut mcp = Mcp::start(&home);
    let r = mcp.ok(
        "rehearse_migration",
        json!({ "from": "shop", "sql": "INSERT INTO orders VALUES (5000, 1);\nSELECT * FROM nope;\n" }),
    );
    assert_eq!(r["verdict"], "fails", "{r:#}");
    assert_eq!(r["statements"][0]["rows"], 1);
    assert_eq!(r["statements"][1]["error"]["at"]["line"], 2, "{r:#}");
    drop(mcp);
    home.assert_settled();
}
