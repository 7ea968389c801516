//! Snapshots of a source under write load are consistent: every branch
//! made from them starts without replaying WAL and passes `pg_amcheck`,
//! on the pool of every clone driver.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

on_every_pool!(snapshots_under_pgbench_load_are_consistent);

/// pgbench scale: 400k accounts, about 60 MB, so that a copy under load
/// takes long enough for pages to change under it.
const SCALE: u32 = 4;
/// Snapshots taken while pgbench runs.
const SNAPSHOTS: usize = 3;

/// pgbench running against a source; killed on drop if still running.
struct Load(Child);

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `pgbench -c 4` (TPC-B-like transactions) until killed.
fn start_load(dsn: &str) -> Load {
    let child = Command::new(pg_tool("pgbench"))
        .args(["-n", "-c", "4", "-j", "2", "-T", "600", dsn])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pgbench");
    Load(child)
}

fn snapshots_under_pgbench_load_are_consistent(pool: Pool) {
    let h = TestHome::new(pool, "load");
    h.create_source("bench");
    let dsn = h.source_dsn("bench");
    pgbench_init(&dsn, SCALE);
    let mut load = start_load(&dsn);
    let mut src = connect(&dsn);
    assert!(
        wait_until(Duration::from_secs(30), || scalar(
            &mut src,
            "SELECT count(*) FROM pgbench_history"
        ) > 100),
        "pgbench does not write"
    );

    let mut ids = Vec::new();
    for _ in 0..SNAPSHOTS {
        let snap = h.snapshot("bench");
        assert_eq!(snap["method"], pool.snapshot_method(), "{snap:#}");
        ids.push(snap["id"].as_str().unwrap().to_string());
        std::thread::sleep(Duration::from_millis(300));
    }
    // pgbench ran through every snapshot: they were all taken under load.
    assert!(
        load.0.try_wait().expect("pgbench status").is_none(),
        "pgbench stopped before the snapshots were done"
    );
    drop(load);

    let mut history = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let name = format!("load{i}");
        let b = h.create_branch(&name, id, &[]);
        // The snapshot was sealed once; the branch starts from a clean
        // shutdown state and replays nothing.
        let log = std::fs::read_to_string(b["log"].as_str().unwrap()).expect("branch log");
        assert!(
            log.contains("database system is ready to accept connections"),
            "not the branch's log?\n{log}"
        );
        assert!(
            !log.contains("redo starts"),
            "branch {name} replayed WAL at start:\n{log}"
        );

        // pg_amcheck as the superuser over the branch's socket: heap and
        // every index, each index entry checked against the heap.
        let report = run_tool(
            Command::new(pg_tool("pg_amcheck"))
                .args(["--install-missing", "--heapallindexed", "--all"])
                .arg("--host")
                .arg(h.branch_socket(&name))
                .args(["--port", &port_of(&b).to_string(), "--username", "postgres"])
                .arg("--no-password"),
        );
        assert!(
            report.trim().is_empty(),
            "pg_amcheck of {name} ({id}) reports:\n{report}"
        );

        // TPC-B moves each amount through all four tables in one
        // transaction: in a consistent image the four sums agree.
        let mut db = connect(&dsn_of(&b));
        assert_eq!(
            scalar(&mut db, "SELECT count(*) FROM pgbench_accounts"),
            100_000 * SCALE as i64
        );
        let sums = db
            .query_one(
                "SELECT (SELECT sum(abalance) FROM pgbench_accounts)::bigint,
                        (SELECT sum(tbalance) FROM pgbench_tellers)::bigint,
                        (SELECT sum(bbalance) FROM pgbench_branches)::bigint,
                        (SELECT coalesce(sum(delta), 0) FROM pgbench_history)::bigint",
                &[],
            )
            .expect("sums");
        let sums: [i64; 4] = [sums.get(0), sums.get(1), sums.get(2), sums.get(3)];
        assert!(
            sums.iter().all(|s| *s == sums[0]),
            "{id} is not transactionally consistent: accounts, tellers, branches, history sum to {sums:?}"
        );
        history.push(scalar(&mut db, "SELECT count(*) FROM pgbench_history"));
    }
    // Each snapshot is a later point in time than the one before.
    assert!(
        history.windows(2).all(|w| w[0] < w[1]),
        "snapshots are not successive points in time: {history:?}"
    );
    h.assert_settled();
}
