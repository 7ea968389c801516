//! Crashes: a postmaster killed with SIGKILL, and pgfork itself killed in
//! the middle of every multi-step operation (`PGFORK_FAILPOINT`), on the
//! pool of every clone driver.

mod common;

use std::time::Duration;

use common::*;

on_every_pool!(
    killed_postmaster_restarts_with_committed_data,
    killed_pgfork_leaves_no_orphans
);

/// `kill -9` of a branch's postmaster: it shows as crashed, and `branch
/// start` recovers it with every committed row (and no uncommitted one).
fn killed_postmaster_restarts_with_committed_data(pool: Pool) {
    let h = TestHome::new(pool, "kill9");
    h.create_source("crash");
    load_items(&mut connect(&h.source_dsn("crash")), "base", 100);
    let b = h.create_branch("victim", "crash", &[]);
    let dsn = dsn_of(&b);
    let mut db = connect(&dsn);
    load_items(&mut db, "committed", 1000);
    let mut open = connect(&dsn);
    exec(
        &mut open,
        "BEGIN; INSERT INTO items (tag, payload) VALUES ('uncommitted', 'x')",
    );

    let pid = b["pid"].as_i64().expect("pid") as i32;
    // SAFETY: kill(2) of the branch's postmaster, which this test made.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "postmaster {pid} survived SIGKILL"
    );
    let crashed = h.branch("victim");
    assert_eq!(crashed["status"], "crashed", "{crashed:#}");
    drop((db, open));

    let started = h.json(&["branch", "start", "victim"]);
    assert_eq!(started["status"], "running");
    let new_pid = started["pid"].as_i64().expect("pid") as i32;
    assert_ne!(new_pid, pid);
    let log = std::fs::read_to_string(started["log"].as_str().unwrap()).unwrap();
    assert!(
        log.contains("automatic recovery in progress"),
        "the restart did not run crash recovery, so the kill did not happen as planned:\n{log}"
    );
    let mut db = connect(&dsn);
    assert_eq!(tagged(&mut db, "base"), 100);
    assert_eq!(tagged(&mut db, "committed"), 1000);
    assert_eq!(tagged(&mut db, "uncommitted"), 0);
    load_items(&mut db, "after", 1);
    h.assert_settled();
}

/// The failpoints inside `branch create`, in order.
const BRANCH_CREATE_POINTS: [&str; 3] = [
    "branch-create:after-insert",
    "branch-create:after-clone",
    "branch-create:after-start",
];

/// pgfork SIGKILLed at each failpoint: the next command reconciles, and
/// the home holds exactly what its rows say (no directory, process,
/// socket, log or port left over); the names and the source stay usable.
fn killed_pgfork_leaves_no_orphans(pool: Pool) {
    let h = TestHome::new(pool, "fail");
    h.create_source("fp");
    load_items(&mut connect(&h.source_dsn("fp")), "base", 200);
    h.snapshot("fp");

    for point in BRANCH_CREATE_POINTS {
        h.crash_at(point, &["branch", "create", "doomed", "--from", "fp@1"]);
        // The next command, whatever it is, reconciles first.
        let list = h.json(&["branch", "list"]);
        assert_eq!(list, serde_json::json!([]), "after {point}: {list:#}");
        h.assert_settled();
    }

    // Snapshots: killed before sealing, and (where the driver copies a
    // running cluster file by file) during the online backup.
    let mut points = vec!["snapshot-create:before-seal"];
    if pool != Pool::Btrfs {
        points.push("snapshot-create:during-backup");
    }
    for point in points {
        h.crash_at(point, &["snapshot", "create", "fp"]);
        let snaps = h.json(&["snapshot", "list"]);
        let ids: Vec<&str> = snaps
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["fp@1"], "after {point}");
        h.assert_settled();
        // The killed backup's session, and with it the temporary slot that
        // held WAL for it, is gone from the source.
        let mut su = h.source_superuser("fp", "postgres");
        assert!(
            wait_until(Duration::from_secs(10), || scalar(
                &mut su,
                "SELECT count(*) FROM pg_replication_slots"
            ) == 0),
            "after {point} the source still holds a replication slot"
        );
    }

    h.crash_at("source-create:after-initdb", &["source", "create", "ghost"]);
    let sources = h.json(&["source", "list"]);
    assert_eq!(sources.as_array().unwrap().len(), 1, "{sources:#}");
    h.assert_settled();

    // A reset killed after the old data was removed: the reconcile
    // finishes it; the branch keeps its name, port and password, stopped.
    let keeper = h.create_branch("keeper", "fp@1", &[]);
    let dsn = dsn_of(&keeper);
    load_items(&mut connect(&dsn), "scratch", 5);
    h.crash_at("branch-reset:after-remove", &["branch", "reset", "keeper"]);
    let info = h.branch("keeper");
    assert_eq!(info["status"], "stopped", "{info:#}");
    h.assert_settled();
    h.ok(&["branch", "start", "keeper"]);
    assert_eq!(h.branch_dsn("keeper"), dsn);
    let mut db = connect(&dsn);
    assert_eq!(tagged(&mut db, "base"), 200);
    assert_eq!(tagged(&mut db, "scratch"), 0);

    // Nothing is stuck: the names are free, the source snapshots again.
    let doomed = h.create_branch("doomed", "fp@1", &[]);
    assert_eq!(tagged(&mut connect(&dsn_of(&doomed)), "base"), 200);
    assert_eq!(h.snapshot("fp")["status"], "ready");
    h.create_source("ghost");
    h.assert_settled();
}
