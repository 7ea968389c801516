//! Idle means idle: a branch's idle clock is reset by every use, whoever
//! sees it (a wake, a proxy session, an API or MCP request), is shared by
//! the reaper and the proxy across processes, survives a restart of
//! `serve`, and the idle time the reaper reports is the real one.
//!
//! Timings are generous: the tests assert on order and on the daemon's own
//! log timestamps, never on how fast a slow machine answers.

mod common;
mod daemon;
mod proxy;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use daemon::{Mcp, Serve};
use proxy::{Proxy, agent};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The reaper's `--idle-stop` in these tests, in seconds.
const IDLE: u64 = 4;

/// Time for the reaper to act once something is idle, on a slow machine.
const PATIENCE: Duration = Duration::from_secs(90);

fn shop(h: &TestHome) {
    h.create_source("shop");
    load_items(&mut connect(&h.source_dsn("shop")), "base", 100);
    h.snapshot("shop");
}

/// A daemon whose reaper stops branches idle for `idle` seconds, checking
/// every second, logging what it does.
fn reaping(h: &TestHome, idle: u64) -> Serve {
    let idle = format!("{idle}s");
    Serve::start(h, &["-v", "--idle-stop", &idle, "--reap-every", "1s"])
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// A log line without its colours.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The reaper's stops of `branch` so far: (Unix second of the log line,
/// idle seconds it reported).
fn reaper_stops(s: &Serve, branch: &str) -> Vec<(i64, u64)> {
    let marker = format!("reaper: stopped branch {branch} (idle ");
    s.log()
        .iter()
        .map(|l| plain(l))
        .filter_map(|l| {
            let idle = l.split(&marker).nth(1)?.strip_suffix("s)")?.parse().ok()?;
            let at = rfc3339_secs(&format!("{}Z", l.trim_start().get(0..19)?));
            Some((at, idle))
        })
        .collect()
}

/// The first stop of `branch` by the reaper, waiting for it.
fn first_stop(s: &Serve, branch: &str) -> (i64, u64) {
    assert!(
        wait_until(PATIENCE, || !reaper_stops(s, branch).is_empty()),
        "the reaper never stopped idle branch {branch}; its log:\n{}",
        s.log().join("\n")
    );
    reaper_stops(s, branch)[0]
}

/// The stop logged at `at` reported `idle` seconds, and that is the time
/// since the last use (at Unix second `used`): not the time since some
/// older event (each test makes older ones at least 8 s older). Allowed:
/// whole-second rounding, a second of write throttling (the reported idle
/// may run 2 s ahead) and a slow stop (logged once the server is down).
fn assert_real_idle((at, idle): (i64, u64), used: i64, limit: u64) {
    assert!(
        idle >= limit,
        "stopped after {idle}s, under the idle time {limit}s"
    );
    let since_use = at - used;
    eprintln!("stopped as idle {idle}s, {since_use}s after its last use");
    assert!(
        since_use >= limit as i64 - 1,
        "stopped {since_use}s after its last use, before the idle time {limit}s had passed"
    );
    assert!(
        idle as i64 <= since_use + 2,
        "reported idle {idle}s, but its last use was only {since_use}s before the stop"
    );
    assert!(
        since_use <= idle as i64 + 6,
        "reported idle {idle}s, but its last use was {since_use}s before the stop"
    );
}

/// Runs `use_it` about every second for `how_long`; returns the Unix
/// second after the last use.
fn keep_using(how_long: Duration, mut use_it: impl FnMut()) -> i64 {
    let began = Instant::now();
    loop {
        use_it();
        let used = unix_now();
        if began.elapsed() >= how_long {
            return used;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Polls `check` every half second (it runs pgfork commands).
fn eventually(timeout: Duration, check: impl FnMut() -> bool) -> bool {
    common::poll_until(timeout, Duration::from_millis(500), check)
}

/// A branch's postmaster pid, asserting that it runs. Read with the CLI,
/// which does not count as a use.
fn running_pid(h: &TestHome, branch: &str) -> Value {
    let info = h.branch(branch);
    assert_eq!(info["status"], "running", "{info:#}");
    info["pid"].clone()
}

/// The scenario: a branch the proxy woke, with a client coming
/// back in short sessions, was stopped by the reaper seconds later as
/// idle since long before, and again every pass.
#[test]
fn a_woken_branch_stays_up_while_a_client_comes_back() {
    let h = TestHome::new(Pool::Xfs, "idle-wake");
    shop(&h);
    let secret = agent(&h, "napper", "shop", "branch", &[]);
    let proxy = Proxy::start(&h, &[]);
    let branch = "agent-napper";
    assert_eq!(
        scalar(&mut proxy.connect("napper", &secret, "shop"), "SELECT 1"),
        1
    );
    h.ok(&["branch", "stop", branch]);
    let s = reaping(&h, IDLE);
    // The branch's making and the daemon's start are now older than the
    // idle time: only a recorded use can keep the branch up.
    std::thread::sleep(Duration::from_secs(IDLE * 2));
    let woken_at = unix_now();
    assert_eq!(
        scalar(&mut proxy.connect("napper", &secret, "shop"), "SELECT 1"),
        1
    );
    let pid = running_pid(&h, branch);

    let used = keep_using(Duration::from_secs(IDLE * 3), || {
        let mut c = proxy.connect("napper", &secret, "shop");
        assert_eq!(scalar(&mut c, "SELECT 1"), 1);
    });
    assert_eq!(reaper_stops(&s, branch), vec![], "stopped while in use");
    assert_eq!(
        running_pid(&h, branch),
        pid,
        "the branch was stopped and woken again while in use"
    );

    // The client is gone: stopped once idle, as idle since its last session.
    let stop = first_stop(&s, branch);
    assert_real_idle(stop, used, IDLE);
    assert!(used - woken_at >= (IDLE * 2) as i64, "the wake is older");
    assert_eq!(h.branch(branch)["status"], "stopped");
    assert!(
        s.metric(&format!(
            "pgfork_branch_idle_seconds{{branch=\"{branch}\",source=\"shop\"}}"
        )) >= IDLE as f64,
        "the metrics show it idle"
    );
    drop(s);
    drop(proxy);
    h.assert_settled();
}

/// Requests about a branch through the API, and MCP calls from another
/// process (`pgfork mcp`), are uses of it.
#[test]
fn api_and_mcp_requests_keep_a_branch_up() {
    let h = TestHome::new(Pool::Btrfs, "idle-api");
    shop(&h);
    let s = reaping(&h, IDLE);
    let (st, body) = s.post("/v1/branches", json!({ "name": "asked", "from": "shop" }));
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let pid = running_pid(&h, "asked");

    keep_using(Duration::from_secs(IDLE * 3), || {
        assert_eq!(s.get("/v1/branches/asked").0, StatusCode::OK);
    });
    assert_eq!(
        reaper_stops(&s, "asked"),
        vec![],
        "stopped while asked about"
    );
    assert_eq!(running_pid(&h, "asked"), pid);

    let mut mcp = Mcp::start(&h);
    let used = keep_using(Duration::from_secs(IDLE * 3), || {
        let rows = mcp.ok(
            "run_sql",
            json!({ "branch": "asked", "sql": "SELECT 1 AS one" }),
        );
        assert_eq!(rows["rows"], json!([["1"]]), "{rows:#}");
    });
    assert_eq!(reaper_stops(&s, "asked"), vec![], "stopped while queried");
    assert_eq!(running_pid(&h, "asked"), pid);

    let stop = first_stop(&s, "asked");
    assert_real_idle(stop, used, IDLE);
    drop(mcp);
    drop(s);
    h.assert_settled();
}

/// A restarted `serve` knows what the one before it saw: a branch used a
/// moment before the restart gets the rest of its idle time, no more, no
/// less.
#[test]
fn a_restarted_daemon_remembers_recent_use() {
    const LONGER: u64 = 8;
    let h = TestHome::new(Pool::Xfs, "idle-restart");
    shop(&h);
    let first = Serve::start(&h, &["--idle-stop", "0"]);
    let (st, body) = first.post("/v1/branches", json!({ "name": "recent", "from": "shop" }));
    assert_eq!(st, StatusCode::CREATED, "{body}");
    // Made long enough ago to be idle, were its use forgotten.
    std::thread::sleep(Duration::from_secs(LONGER + 2));
    assert_eq!(first.get("/v1/branches/recent").0, StatusCode::OK);
    let used = unix_now();
    drop(first);
    let recorded = rfc3339_secs(h.branch("recent")["last_active_at"].as_str().unwrap());
    assert!(
        recorded >= used - 2,
        "meta.db holds the last use ({recorded} vs {used})"
    );

    let s = reaping(&h, LONGER);
    let stop = first_stop(&s, "recent");
    assert_real_idle(stop, used, LONGER);
    assert_eq!(h.branch("recent")["status"], "stopped");
    drop(s);
    h.assert_settled();
}

/// The proxy's own idle stop decides from the same clock: API requests
/// about an agent's branch keep the proxy from stopping it.
#[test]
fn the_proxy_idle_stop_counts_api_requests() {
    let h = TestHome::new(Pool::Btrfs, "idle-pxapi");
    shop(&h);
    let secret = agent(&h, "dozer", "shop", "branch", &["--idle-stop", "3s"]);
    let proxy = Proxy::start(&h, &[]);
    let s = Serve::start(&h, &["--idle-stop", "0"]);
    let branch = "agent-dozer";
    assert_eq!(
        scalar(&mut proxy.connect("dozer", &secret, "shop"), "SELECT 1"),
        1
    );
    let pid = running_pid(&h, branch);

    keep_using(Duration::from_secs(12), || {
        assert_eq!(s.get(&format!("/v1/branches/{branch}")).0, StatusCode::OK);
    });
    assert_eq!(
        running_pid(&h, branch),
        pid,
        "the proxy stopped a branch the API was using"
    );
    assert!(
        eventually(PATIENCE, || h.branch(branch)["status"] == "stopped"),
        "the proxy never stopped its idle branch"
    );
    drop(s);
    drop(proxy);
    h.assert_settled();
}
