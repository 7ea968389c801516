//! `promote BRANCH --replace` end to end: the branch's data becomes its
//! local source's whole (what `pg_dump` of each prints is the same), the
//! source keeps its port, role and password, no login of the branch's
//! works on it, its old data is a snapshot that branches can be made from
//! and that can be deleted; a dry run, a refusal, a failure after the
//! clone and crashes before and after the swap leave nothing half-done.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// The source's data: a table with a key, one without, a sequence.
const SCHEMA: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int);
INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, 2000) g;
CREATE TABLE log (at int, what text);
INSERT INTO log SELECT g, 'entry ' || g FROM generate_series(1, 300) g;
CREATE SEQUENCE tickets;
SELECT nextval('tickets') FROM generate_series(1, 5);
";

/// What the agent does on its branch: among it, what a row promote cannot
/// carry (rows removed from a table without a key), a function, and a
/// password of its own choosing for the application role.
const WORKLOAD: &str = "
ALTER TABLE items ADD COLUMN price numeric(10, 2) DEFAULT 1.50;
UPDATE items SET qty = qty * 3 WHERE id % 5 = 0;
DELETE FROM log WHERE at % 2 = 0;
CREATE TABLE notes (id serial PRIMARY KEY, body text);
INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 100) g;
CREATE FUNCTION item_total() RETURNS bigint LANGUAGE sql AS 'SELECT sum(qty) FROM items';
SELECT nextval('tickets') FROM generate_series(1, 10);
ALTER ROLE CURRENT_USER PASSWORD 'chosen-by-the-agent';
";

/// `pg_dump` of database `shop` as the superuser over a unix socket,
/// without the lines that differ between any two dumps (the random
/// `\restrict` key of pg_dump 15.14+, a header).
fn dump(socket: &Path, port: u16, what: &str) -> Vec<String> {
    run_tool(
        Command::new(pg_tool("pg_dump"))
            .arg("-h")
            .arg(socket)
            .args(["-p", &port.to_string(), "-U", "postgres", what])
            .args(["--no-comments", "-d", "shop"]),
    )
    .lines()
    .filter(|l| {
        !l.starts_with("-- Dumped")
            && !l.starts_with("\\restrict")
            && !l.starts_with("\\unrestrict")
    })
    .map(str::to_string)
    .collect()
}

/// A dump without what it grants `role`: the lines naming it go, and so
/// does an entry (from its `-- Name:` comment header on) left with nothing
/// else.
fn without_grants_to(lines: Vec<String>, role: &str) -> Vec<String> {
    let mut entries: Vec<Vec<String>> = vec![Vec::new()];
    for (i, line) in lines.iter().enumerate() {
        let header = line == "--" && lines.get(i + 1).is_some_and(|n| n.starts_with("-- "));
        if header {
            entries.push(Vec::new());
        }
        entries.last_mut().unwrap().push(line.clone());
    }
    entries
        .into_iter()
        .filter_map(|entry| {
            if !entry.iter().any(|l| l.contains(role)) {
                return Some(entry);
            }
            let kept: Vec<String> = entry.into_iter().filter(|l| !l.contains(role)).collect();
            kept.iter()
                .any(|l| !l.is_empty() && !l.starts_with("--"))
                .then_some(kept)
        })
        .flatten()
        .collect()
}

fn source_socket(home: &TestHome) -> (PathBuf, u16) {
    let info = home.json(&["source", "info", "shop"]);
    (
        PathBuf::from(info["socket_dir"].as_str().unwrap()),
        port_of(&info),
    )
}

/// The DSN with another port.
fn at_port(dsn: &str, port: u16) -> String {
    let (head, db) = dsn.rsplit_once('/').expect("DSN with a database");
    let (host, _) = head.rsplit_once(':').expect("DSN with a port");
    format!("{host}:{port}/{db}")
}

/// The DSN with another password.
fn with_password(dsn: &str, password: &str) -> String {
    dsn.replacen(
        &format!(":{}@", password_of(dsn)),
        &format!(":{password}@"),
        1,
    )
}

fn roles(client: &mut postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'pgfork%' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn snapshot_ids(home: &TestHome) -> Vec<String> {
    home.json(&["snapshot", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// A source with data and a snapshot, and branch `work` of it with the
/// agent's workload; then the source writes a row the branch lacks.
/// Returns the source's and the branch's DSNs.
fn source_and_branch(home: &TestHome) -> (String, String) {
    home.create_source("shop");
    let source_dsn = home.source_dsn("shop");
    exec(&mut connect(&source_dsn), SCHEMA);
    home.snapshot("shop");
    let branch_dsn = dsn_of(&home.create_branch("work", "shop", &[]));
    exec(&mut connect(&branch_dsn), WORKLOAD);
    exec(
        &mut connect(&source_dsn),
        "INSERT INTO items VALUES (9999, 'written on the source after the snapshot', 1)",
    );
    (source_dsn, branch_dsn)
}

fn replace_makes_the_branch_the_source(pool: Pool) {
    let home = TestHome::new(pool, "replace");
    home.create_source("shop");
    let source_dsn = home.source_dsn("shop");
    exec(&mut connect(&source_dsn), SCHEMA);
    // A read-only agent's role is on the source, and so in the snapshot.
    home.json(&[
        "agent",
        "create",
        "reader",
        "--source",
        "shop",
        "--policy",
        "read-only",
    ]);
    home.snapshot("shop");
    let branch_dsn = dsn_of(&home.create_branch("work", "shop", &[]));
    let branch_password = password_of(&branch_dsn);
    exec(&mut connect(&branch_dsn), WORKLOAD);
    // A member of the branch has a login role there.
    home.json(&[
        "agent", "create", "mate", "--source", "shop", "--policy", "branch",
    ]);
    home.json(&["branch", "share", "work", "--agent", "mate"]);
    // The read-only agent is revoked: its role leaves the source, but the
    // branch's data still has it.
    home.json(&["agent", "revoke", "reader"]);
    exec(
        &mut connect(&source_dsn),
        "INSERT INTO items VALUES (9999, 'written on the source after the snapshot', 1)",
    );
    let mut su_branch = home.branch_superuser("work", "shop");
    assert_eq!(
        roles(&mut su_branch),
        ["pgfork_agent_reader", "pgfork_member_mate"]
    );
    drop(su_branch);
    let (socket, port) = source_socket(&home);
    assert!(roles(&mut superuser(&socket, port, "postgres")).is_empty());

    // A dry run says what would happen and changes nothing.
    let before = (
        dump(&socket, port, "--data-only"),
        snapshot_ids(&home),
        entries(&home.pool_dir().join("snapshots")),
    );
    let dry = home.json(&["promote", "work", "--replace", "--dry-run"]);
    assert_eq!(dry["replaced"], false, "{dry:#}");
    assert!(dry["old_data_snapshot"].is_null(), "{dry:#}");
    assert!(dry["steps"].as_array().unwrap().len() >= 4, "{dry:#}");
    let human = home.ok(&["promote", "work", "--replace", "--dry-run"]);
    assert!(
        human.contains("would replace all data of source shop with branch work's"),
        "{human}"
    );
    assert_eq!(
        (
            dump(&socket, port, "--data-only"),
            snapshot_ids(&home),
            entries(&home.pool_dir().join("snapshots")),
        ),
        before,
        "a dry run changed something"
    );
    // Without --yes (and no terminal to ask on) nothing is replaced.
    let err = home.fails(&["promote", "work", "--replace"]);
    assert_eq!(err.code, "wrong_state", "{}", err.message);
    assert!(err.message.contains("--yes"), "{}", err.message);
    assert_eq!(snapshot_ids(&home), before.1);

    let report = home.json(&["promote", "work", "--replace", "--yes"]);
    assert_eq!(report["replaced"], true, "{report:#}");
    let old = report["old_data_snapshot"].as_str().unwrap().to_string();
    let new = report["new_snapshot"].as_str().unwrap().to_string();
    assert!(
        old.starts_with("shop@") && new.starts_with("shop@"),
        "{report:#}"
    );
    let removed = report["logins_removed"].to_string();
    assert!(
        removed.contains("pgfork_member_mate") && removed.contains("pgfork_agent_reader"),
        "{report:#}"
    );
    assert!(report["source_downtime_ms"].is_u64(), "{report:#}");

    // The source serves on its port, as its role with its password.
    let (socket_after, port_after) = source_socket(&home);
    assert_eq!((&socket_after, port_after), (&socket, port));
    assert_eq!(home.source_dsn("shop"), source_dsn);
    let mut s = connect(&source_dsn);
    assert_eq!(scalar(&mut s, "SELECT count(*) FROM notes"), 100);
    assert_eq!(
        scalar(&mut s, "SELECT count(*) FROM items WHERE id = 9999"),
        0
    );
    assert_eq!(scalar(&mut s, "SELECT item_total()"), {
        let mut b = connect(&branch_dsn);
        scalar(&mut b, "SELECT item_total()")
    });
    // What pg_dump prints of the source is what it prints of the branch,
    // but the grants to the revoked agent's role: the replace dropped that
    // role from the source (the source had dropped it already), while the
    // branch's data keeps it. The member's role holds no grant a database
    // dump shows (its rights are a role membership).
    let branch_port = port_of(&home.branch("work"));
    let branch_socket = home.branch_socket("work");
    let source_schema = dump(&socket, port, "--schema-only");
    let branch_schema = dump(&branch_socket, branch_port, "--schema-only");
    assert!(
        !source_schema
            .iter()
            .any(|l| l.contains("pgfork_agent_reader"))
    );
    assert!(
        branch_schema
            .iter()
            .any(|l| l.starts_with("GRANT SELECT ON TABLE public.notes TO pgfork_agent_reader")),
        "{branch_schema:#?}"
    );
    assert_eq!(
        source_schema,
        without_grants_to(branch_schema, "pgfork_agent_reader"),
        "the source's schema differs from the branch's"
    );
    assert_eq!(
        dump(&socket, port, "--data-only"),
        dump(&branch_socket, branch_port, "--data-only"),
        "the source's data differs from the branch's"
    );
    // No login of the branch's works on the source: not the password
    // pgfork gave the branch, not the one its agent chose, not a member's
    // role, not the revoked agent's.
    for password in [branch_password.as_str(), "chosen-by-the-agent"] {
        let dsn = with_password(&at_port(&branch_dsn, port), password);
        assert_eq!(
            sqlstate(try_connect(&dsn), "the branch's password on the source"),
            "28P01"
        );
    }
    assert!(roles(&mut superuser(&socket, port, "postgres")).is_empty());
    // The branch goes on as it was, with its own password.
    let mut b = connect(&branch_dsn);
    assert_eq!(scalar(&mut b, "SELECT count(*) FROM notes"), 100);
    drop(b);

    // The old data is a snapshot: listed, branchable, deletable.
    let listed = home.json(&["snapshot", "list"]);
    let old_info = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == old.as_str())
        .unwrap_or_else(|| panic!("{old} not listed: {listed:#}"))
        .clone();
    assert_eq!(old_info["status"], "ready", "{old_info:#}");
    assert_eq!(old_info["method"], "replaced", "{old_info:#}");
    let then = dsn_of(&home.create_branch("then", &old, &[]));
    let mut t = connect(&then);
    assert_eq!(
        scalar(&mut t, "SELECT count(*) FROM items WHERE id = 9999"),
        1
    );
    assert_eq!(scalar(&mut t, "SELECT count(*) FROM log"), 300);
    assert!(
        try_connect(&then)
            .unwrap()
            .simple_query("SELECT count(*) FROM notes")
            .is_err()
    );
    drop(t);
    // A branch --from the source has the new data.
    let now = dsn_of(&home.create_branch("now", "shop", &[]));
    assert_eq!(home.branch("now")["snapshot"], new.as_str());
    assert_eq!(
        scalar(&mut connect(&now), "SELECT count(*) FROM notes"),
        100
    );
    let err = home.fails(&["snapshot", "delete", &old]);
    assert_eq!(err.code, "has_dependents", "{}", err.message);
    home.ok(&["branch", "delete", "then"]);
    home.ok(&["snapshot", "delete", &old]);
    assert!(!snapshot_ids(&home).contains(&old));
    amcheck(&socket, port).unwrap();
    home.assert_settled();
}

on_every_pool!(replace_makes_the_branch_the_source);

/// Refusals, a failure after the clone, and a crash right after it: each
/// leaves the source serving its old data, the branch its own, and no
/// clone behind.
#[test]
fn failures_before_the_swap_change_nothing() {
    let home = TestHome::new(Pool::Xfs, "replacefail");
    let (source_dsn, branch_dsn) = source_and_branch(&home);
    let snapshots = snapshot_ids(&home);
    let dirs = entries(&home.pool_dir().join("snapshots"));
    let unchanged = |home: &TestHome| {
        let mut s = connect(&source_dsn);
        assert_eq!(
            scalar(&mut s, "SELECT count(*) FROM items WHERE id = 9999"),
            1
        );
        assert_eq!(scalar(&mut s, "SELECT count(*) FROM log"), 300);
        assert_eq!(snapshot_ids(home), snapshots);
        assert_eq!(entries(&home.pool_dir().join("snapshots")), dirs);
        home.assert_settled();
    };

    let err = home.fails(&["promote", "nosuch", "--replace", "--yes"]);
    assert_eq!(err.code, "unknown_branch", "{}", err.message);
    assert!(
        err.message.contains("pgfork branch list"),
        "{}",
        err.message
    );
    let clash = home.run(&["promote", "work", "--replace", "--strategy", "ours"]);
    assert_eq!(clash.status.code(), Some(2), "--replace with --strategy");
    unchanged(&home);

    // The branch's server (run as the agent's sandbox uid) could plant a
    // link in its data directory: the clone is refused, and undone.
    let branch_dir = PathBuf::from(home.branch("work")["data_dir"].as_str().unwrap());
    let planted = branch_dir.join("planted");
    std::os::unix::fs::symlink("/etc/hostname", &planted).unwrap();
    let err = home.fails(&["promote", "work", "--replace", "--yes"]);
    assert_eq!(err.code, "unsafe_content", "{}", err.message);
    assert!(
        err.message.contains("symbolic link planted"),
        "{}",
        err.message
    );
    std::fs::remove_file(&planted).unwrap();
    assert_eq!(home.branch("work")["status"], "running");
    assert_eq!(
        scalar(&mut connect(&branch_dsn), "SELECT count(*) FROM notes"),
        100
    );
    unchanged(&home);

    // Killed right after the clone, with the branch stopped for it.
    home.crash_at(
        "promote-replace:after-clone",
        &["promote", "work", "--replace", "--yes"],
    );
    let info = home.json(&["source", "info", "shop"]);
    assert_eq!(info["status"], "running", "{info:#}");
    assert_eq!(home.branch("work")["status"], "stopped");
    home.json(&["branch", "start", "work"]);
    assert_eq!(
        scalar(&mut connect(&branch_dsn), "SELECT count(*) FROM notes"),
        100
    );
    unchanged(&home);
}

/// Killed right after the swap: the next command finds the branch's data
/// in the source's directory and records the old data as the snapshot.
#[test]
fn a_crash_after_the_swap_is_finished() {
    let home = TestHome::new(Pool::Btrfs, "replacecrash");
    let (source_dsn, _) = source_and_branch(&home);
    let snapshots = snapshot_ids(&home);
    home.crash_at(
        "promote-replace:after-exchange",
        &["promote", "work", "--replace", "--yes"],
    );
    let info = home.json(&["source", "info", "shop"]);
    assert_eq!(info["status"], "stopped", "{info:#}");
    home.json(&["source", "start", "shop"]);
    let mut s = connect(&source_dsn);
    assert_eq!(scalar(&mut s, "SELECT count(*) FROM notes"), 100);
    assert_eq!(
        scalar(&mut s, "SELECT count(*) FROM items WHERE id = 9999"),
        0
    );
    drop(s);
    let listed = home.json(&["snapshot", "list"]);
    let added: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !snapshots.contains(&s["id"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(added.len(), 1, "{listed:#}");
    assert_eq!(added[0]["method"], "replaced", "{listed:#}");
    let old = added[0]["id"].as_str().unwrap();
    // The newest snapshot keeps the old data, so a branch --from the
    // source takes one of the new data.
    home.create_branch("now", "shop", &[]);
    assert_ne!(home.branch("now")["snapshot"], old);
    assert_eq!(
        scalar(
            &mut connect(&home.branch_dsn("now")),
            "SELECT count(*) FROM notes"
        ),
        100
    );
    let then = dsn_of(&home.create_branch("then", old, &[]));
    assert_eq!(
        scalar(
            &mut connect(&then),
            "SELECT count(*) FROM items WHERE id = 9999"
        ),
        1
    );
    home.assert_settled();
}
