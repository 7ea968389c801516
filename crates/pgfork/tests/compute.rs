//! Compute limits per branch through cgroups (issue 12), on the real
//! kernel: the limits land in the control group files, the postmaster and
//! every process it forks are in the group from the start, a CPU-bound
//! branch held to a quarter of a CPU gets no more, a branch over its
//! memory limit is killed alone and comes back with `branch start`, groups
//! go with their servers (and with pgfork killed half-way), and bad or
//! unenforceable limits are refused leaving nothing behind.
//!
//! This machine has cgroup v1 controllers (`cpu`, `cpuacct`, `memory`,
//! `pids` hierarchies) and a v2 mount without controllers, so these tests
//! drive the v1 path; the v2 path is tested in `pgfork_os::cgroup`'s unit
//! tests against a directory laid out as the kernel lays out v2. "Without
//! cgroups" is played for real: pgfork runs in a private mount namespace
//! where the cgroup filesystems are unmounted.

mod common;
mod daemon;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use daemon::{As, Serve};
use serde_json::{Value, json};

/// The control group directories a branch's or source's JSON names.
fn groups_of(info: &Value) -> Vec<PathBuf> {
    let list = if info.get("compute").is_some() {
        &info["compute"]["cgroups"]
    } else {
        &info["cgroups"]
    };
    list.as_array()
        .expect("cgroups list")
        .iter()
        .map(|p| PathBuf::from(p.as_str().expect("path")))
        .collect()
}

/// The content of control file `file` in whichever of `dirs` has it.
fn cg_file(dirs: &[PathBuf], file: &str) -> Option<String> {
    dirs.iter()
        .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
        .map(|s| s.trim().to_string())
}

/// The processes in a group (any of its directories).
fn procs_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `BASE/pgfork-HOMEID-branches` of the hierarchy `dir` (a branch's or
/// source's group, `BASE/pgfork-HOMEID-KIND/NAME`) is in.
fn branches_dir_of(dir: &Path) -> PathBuf {
    let parent = dir.parent().expect("BASE/pgfork-HOMEID-KIND/NAME");
    let name = parent.file_name().unwrap().to_str().unwrap();
    let (root, _kind) = name.rsplit_once('-').expect("pgfork-HOMEID-KIND");
    parent.with_file_name(format!("{root}-branches"))
}

/// `pgfork --home H --json ARGS` in a private mount namespace where the
/// cgroup filesystems are unmounted: a machine without cgroups, for real.
fn without_cgroups(h: &TestHome, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("umount -R /sys/fs/cgroup && exec \"$0\" \"$@\"")
        .arg(PGFORK)
        .arg("--home")
        .arg(&h.root)
        .arg("--json")
        .args(args)
        .env_remove("PGFORK_HOME")
        .env_remove(FAILPOINT_ENV);
    cmd.output().expect("run pgfork under unshare")
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Every recorded group belongs to a server that runs, and holds its
/// postmaster: what stops, deletes and reconciles must leave.
fn assert_groups_settled(h: &TestHome) {
    let mut in_use = Vec::new();
    for (kind, list) in [
        ("source", h.json(&["source", "list"])),
        ("branch", h.json(&["branch", "list"])),
    ] {
        for o in list.as_array().unwrap() {
            let info = h.json(&[kind, "info", o["name"].as_str().unwrap()]);
            if info["status"] == "running" {
                let pid = info["pid"].as_i64().unwrap() as i32;
                assert!(
                    !groups_of(&info).is_empty(),
                    "{kind} runs in no group: {info:#}"
                );
                for dir in groups_of(&info) {
                    assert!(
                        procs_in(&dir).contains(&pid),
                        "{kind} {}'s postmaster {pid} is not in {}",
                        o["name"],
                        dir.display()
                    );
                    in_use.push(dir);
                }
            } else {
                assert!(groups_of(&info).is_empty(), "{info:#}");
            }
        }
    }
    in_use.sort();
    assert_eq!(
        h.recorded_cgroups(),
        in_use,
        "recorded groups vs running servers"
    );
}

#[test]
fn limits_land_in_the_group_and_the_server_runs_in_it() {
    let h = TestHome::new(Pool::Xfs, "cglimits");
    h.create_source("shop");
    load_items(&mut connect(&h.source_dsn("shop")), "base", 100);
    h.snapshot("shop");

    let doctor = h.json(&["doctor"]);
    let check = common::doctor_check(&doctor, "compute limits");
    assert_eq!(check["status"], "ok", "{check:#}");

    let b = h.create_branch(
        "lim",
        "shop",
        &["--cpu", "0.5", "--memory", "256M", "--pids", "100"],
    );
    assert_eq!(b["compute"]["cpu"], 0.5);
    assert_eq!(b["compute"]["memory"], 256u64 << 20);
    assert_eq!(b["compute"]["pids"], 100);
    let dirs = groups_of(&b);
    assert!(
        dirs.len() >= 3,
        "one directory per hierarchy (cpu, memory, pids at least): {dirs:?}"
    );
    // v1 here; on v2 the same limits are cpu.max, memory.max, pids.max.
    assert_eq!(cg_file(&dirs, "cpu.cfs_quota_us").as_deref(), Some("50000"));
    assert_eq!(
        cg_file(&dirs, "cpu.cfs_period_us").as_deref(),
        Some("100000")
    );
    assert_eq!(
        cg_file(&dirs, "memory.limit_in_bytes").as_deref(),
        Some("268435456")
    );
    assert_eq!(cg_file(&dirs, "pids.max").as_deref(), Some("100"));
    let listed = h.json(&["branch", "list"]);
    assert_eq!(listed[0]["compute"]["memory"], 256u64 << 20, "{listed:#}");
    assert_eq!(groups_of(&listed[0]), dirs);

    // The postmaster and every process it forked, and nothing else, are in
    // every directory of the group: they were born there.
    let data_dir = PathBuf::from(b["data_dir"].as_str().unwrap());
    let mut db = connect(&dsn_of(&b));
    exec(&mut db, "SELECT 1"); // one more backend, forked after start
    let mut servers: Vec<i32> = processes_under(&h.root)
        .into_iter()
        .filter(|(_, cwd)| *cwd == data_dir)
        .map(|(pid, _)| pid)
        .collect();
    servers.sort();
    assert!(
        servers.len() >= 5,
        "postmaster, background processes, a backend: {servers:?}"
    );
    assert!(servers.contains(&(b["pid"].as_i64().unwrap() as i32)));
    for dir in &dirs {
        let mut inside = procs_in(dir);
        inside.sort();
        assert_eq!(inside, servers, "processes in {}", dir.display());
    }
    let mut su = h.branch_superuser("lim", "postgres");
    assert_eq!(
        text(&mut su, "SELECT current_setting('restart_after_crash')"),
        "off",
        "out of memory, a limited branch stops instead of re-initialising"
    );

    // Sources run in a group of their own with four times the branches' share.
    let source = h.json(&["source", "info", "shop"]);
    let source_dirs = groups_of(&source);
    assert!(!source_dirs.is_empty(), "{source:#}");
    assert!(procs_in(&source_dirs[0]).contains(&(source["pid"].as_i64().unwrap() as i32)));
    let cpu_dir = |dirs: &[PathBuf]| -> PathBuf {
        dirs.iter()
            .find(|d| d.join("cpu.shares").exists())
            .expect("a cpu directory")
            .clone()
    };
    let shares = |dir: &Path| std::fs::read_to_string(dir.join("cpu.shares")).unwrap();
    assert_eq!(
        shares(cpu_dir(&source_dirs).parent().unwrap()).trim(),
        "4096"
    );
    assert_eq!(shares(cpu_dir(&dirs).parent().unwrap()).trim(), "1024");
    assert_eq!(
        cpu_dir(&dirs).parent().unwrap().parent(),
        cpu_dir(&source_dirs).parent().unwrap().parent(),
        "side by side, not under one parent"
    );
    drop(source);

    // A branch without limits runs in a group too (under the branches'
    // share), unlimited, and re-initialises itself after a crash as usual.
    let free = h.create_branch("free", "shop", &[]);
    assert_eq!(free["compute"]["cpu"], Value::Null);
    let free_dirs = groups_of(&free);
    assert_eq!(
        cg_file(&free_dirs, "cpu.cfs_quota_us").as_deref(),
        Some("-1")
    );
    assert_eq!(cg_file(&free_dirs, "pids.max").as_deref(), Some("max"));
    let mut su = h.branch_superuser("free", "postgres");
    assert_eq!(
        text(&mut su, "SELECT current_setting('restart_after_crash')"),
        "on"
    );

    // Defaults per source, overridden per branch; `none` removes one.
    let limits = h.json(&[
        "source",
        "limits",
        "shop",
        "--branch-cpu",
        "0.25",
        "--branch-memory",
        "128M",
    ]);
    assert_eq!(limits["branch"]["cpu"], 0.25, "{limits:#}");
    assert_eq!(
        h.json(&["source", "info", "shop"])["branch_limits"]["memory"],
        128u64 << 20
    );
    let d = h.create_branch("dflt", "shop", &[]);
    assert_eq!(
        (d["compute"]["cpu"].clone(), d["compute"]["memory"].clone()),
        (json!(0.25), json!(128u64 << 20))
    );
    assert_eq!(
        cg_file(&groups_of(&d), "cpu.cfs_quota_us").as_deref(),
        Some("25000")
    );
    let o = h.create_branch("over", "shop", &["--memory", "none", "--cpu", "1"]);
    assert_eq!(
        (o["compute"]["cpu"].clone(), o["compute"]["memory"].clone()),
        (json!(1.0), Value::Null)
    );
    let cleared = h.json(&[
        "source",
        "limits",
        "shop",
        "--branch-cpu",
        "none",
        "--branch-memory",
        "none",
    ]);
    assert_eq!(
        cleared["branch"],
        json!({ "cpu": null, "memory": null, "pids": null })
    );
    assert_eq!(
        h.json(&["source", "info", "shop"])["branch_limits"]["cpu"],
        Value::Null
    );

    // Stop removes the group, start makes it again; delete removes it.
    let stopped = h.json(&["branch", "stop", "lim"]);
    assert!(groups_of(&stopped).is_empty(), "{stopped:#}");
    for dir in &dirs {
        assert!(
            !dir.exists(),
            "{} outlived its stopped server",
            dir.display()
        );
    }
    let started = h.json(&["branch", "start", "lim"]);
    let again = groups_of(&started);
    assert_eq!(again, dirs, "the same place, found again");
    assert_eq!(
        cg_file(&again, "cpu.cfs_quota_us").as_deref(),
        Some("50000")
    );
    assert_groups_settled(&h);
    drop((db, su));
    for name in ["lim", "free", "dflt", "over"] {
        h.ok(&["branch", "delete", name]);
    }
    for dir in dirs.iter().chain(&free_dirs) {
        assert!(
            !dir.exists(),
            "{} outlived its deleted branch",
            dir.display()
        );
    }
    assert!(
        !branches_dir_of(&source_dirs[0]).exists(),
        "the empty branches group goes with the last branch"
    );
    assert_groups_settled(&h);
    h.assert_settled();

    // The HTTP API takes the same limits, names a bad field, and shows them.
    let s = Serve::start(&h, &["--idle-stop", "0"]);
    let (st, body) = s.post(
        "/v1/branches",
        json!({ "name": "api", "from": "shop", "cpu": 0.5, "memory": "256M", "pids": 64 }),
    );
    assert_eq!(st.as_u16(), 201, "{body:#}");
    assert_eq!(body["compute"]["cpu"], 0.5);
    assert_eq!(
        cg_file(&groups_of(&body), "memory.limit_in_bytes").as_deref(),
        Some("268435456")
    );
    let (st, info) = s.get("/v1/branches/api");
    assert_eq!(st.as_u16(), 200);
    assert_eq!(info["compute"]["pids"], 64);
    assert!(
        info["compute"]["usage"]["memory_bytes"].as_u64().unwrap() > 0,
        "{info:#}"
    );
    for (field, value) in [
        ("cpu", json!(0)),
        ("cpu", json!("abc")),
        ("memory", json!("1K")),
        ("pids", json!(true)),
    ] {
        let (st, body) = s.post(
            "/v1/branches",
            json!({ "name": "bad", "from": "shop", field: value }),
        );
        assert_eq!(st.as_u16(), 400, "{field}={value}: {body:#}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("'{field}'")), "{message}");
    }

    // The source's limits for new branches, through the API as through
    // `source limits`; a refused change changes nothing.
    let limits = "/v1/sources/shop/limits";
    let (st, body) = s.patch(
        limits,
        json!({ "branch_cpu": "0.25", "branch_memory": 300 * 1024 * 1024 }),
    );
    assert_eq!(st.as_u16(), 200, "{body:#}");
    assert_eq!(body["branch"]["cpu"], 0.25, "{body:#}");
    assert_eq!(body["branch"]["memory"], 300 * 1024 * 1024);
    let (st, body) = s.get(limits);
    assert_eq!(st.as_u16(), 200);
    assert_eq!(body["branch"]["cpu"], 0.25, "{body:#}");
    assert_eq!(h.json(&["source", "limits", "shop"])["branch"]["cpu"], 0.25);
    let (st, made) = s.post(
        "/v1/branches",
        json!({ "name": "inherits", "from": "shop" }),
    );
    assert_eq!(st.as_u16(), 201, "{made:#}");
    assert_eq!(made["compute"]["cpu"], 0.25, "{made:#}");
    for (field, value) in [
        ("branch_cpu", json!(0)),
        ("branch_pids", json!("many")),
        // XFS here: no quotas, so a size of their own cannot be enforced.
        ("branch_max_size", json!("2G")),
    ] {
        let (st, body) = s.patch(limits, json!({ field: value, "branch_memory": "none" }));
        assert_eq!(st.as_u16(), 400, "{field}={value}: {body:#}");
        assert_eq!(
            s.get(limits).1["branch"]["memory"],
            300 * 1024 * 1024,
            "{field}: the refused change left the limits as they were"
        );
    }
    let (st, body) = s.patch(
        limits,
        json!({ "branch_cpu": "none", "branch_memory": "none" }),
    );
    assert_eq!(st.as_u16(), 200, "{body:#}");
    assert!(body["branch"]["cpu"].is_null(), "{body:#}");

    // A branch's own limits change while it runs (its group gets them at
    // once), through the CLI and the API; a stopped one gets them at start.
    let running = groups_of(&h.json(&["branch", "info", "api"]));
    let set = h.json(&["branch", "set", "api", "--cpu", "0.25"]);
    assert_eq!(set["compute"]["cpu"], 0.25, "{set:#}");
    assert_eq!(
        cg_file(&running, "cpu.cfs_quota_us").as_deref(),
        Some("25000")
    );
    let (st, body) = s.patch("/v1/branches/api", json!({ "memory": "none", "pids": 50 }));
    assert_eq!(st.as_u16(), 200, "{body:#}");
    assert!(body["compute"]["memory"].is_null(), "{body:#}");
    assert_eq!(cg_file(&running, "pids.max").as_deref(), Some("50"));
    let e = h.fails(&["branch", "set", "api", "--cpu", "0", "--ttl", "1h"]);
    assert_eq!(e.code, "invalid_argument", "{e:?}");
    let info = h.json(&["branch", "info", "api"]);
    assert!(
        info["expires_at"].is_null() && info["compute"]["cpu"] == 0.25,
        "a refused limit changed nothing: {info:#}"
    );
    // An agent cannot lift the limits it is held to: they are an admin's.
    let bot = h.json(&[
        "agent", "create", "bot", "--source", "shop", "--policy", "branch",
    ]);
    let bot = As {
        serve: &s,
        token: bot["api_token"].as_str().unwrap().to_string(),
    };
    let (st, body) = bot.post(
        "/v1/branches",
        json!({ "name": "bots", "from": "shop", "ttl": "1h", "cpu": "0.25" }),
    );
    assert_eq!(st.as_u16(), 201, "{body:#}");
    let (st, body) = bot.send(
        reqwest::Method::PATCH,
        "/v1/branches/bots",
        Some(json!({ "cpu": "none" })),
    );
    assert_eq!(st.as_u16(), 403, "{body:#}");
    let (st, body) = bot.send(
        reqwest::Method::PATCH,
        limits,
        Some(json!({ "branch_cpu": "none" })),
    );
    assert_eq!(st.as_u16(), 403, "{body:#}");
    assert_eq!(
        h.json(&["branch", "info", "bots"])["compute"]["cpu"],
        0.25,
        "the agent's branch keeps its limit"
    );
    h.ok(&["branch", "delete", "bots"]);

    h.ok(&["branch", "stop", "api"]);
    h.json(&["branch", "set", "api", "--pids", "40"]);
    let started = h.json(&["branch", "start", "api"]);
    assert_eq!(
        cg_file(&groups_of(&started), "pids.max").as_deref(),
        Some("40")
    );
    drop(s);
    h.ok(&["branch", "delete", "api"]);
    h.ok(&["branch", "delete", "inherits"]);
}

#[test]
fn a_quarter_cpu_is_a_quarter_cpu() {
    let h = TestHome::new(Pool::Xfs, "cgcpu");
    h.create_source("shop");
    let b = h.create_branch("hog", "shop", &["--cpu", "0.25"]);
    let dsn = dsn_of(&b);
    // Two sessions that would each take a whole CPU, for a bounded time.
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let dsn = dsn.clone();
            std::thread::spawn(move || {
                let mut db = connect(&dsn);
                let _ = db.batch_execute(
                    "SET statement_timeout = '12s'; SELECT count(*) FROM generate_series(1, 10000000000)",
                );
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let usage = |h: &TestHome| -> (u64, u64, Instant) {
        let u = &h.branch("hog")["compute"]["usage"];
        (
            u["cpu_usec"].as_u64().expect("cpu usage"),
            u["nr_throttled"].as_u64().expect("throttle count"),
            Instant::now(),
        )
    };
    let (cpu0, _, t0) = usage(&h);
    std::thread::sleep(Duration::from_secs(6));
    let (cpu1, throttled, t1) = usage(&h);
    let share = (cpu1 - cpu0) as f64 / (t1 - t0).as_micros() as f64;
    eprintln!(
        "two busy sessions under --cpu 0.25 used {share:.3} CPU, throttled {throttled} times"
    );
    assert!(throttled > 0, "the quota never throttled the branch");
    assert!(
        share <= 0.25 * 1.2,
        "two busy sessions used {share:.3} CPU under a 0.25 limit"
    );
    assert!(
        share > 0.02,
        "the busy sessions did not run at all ({share:.3} CPU)"
    );
    for t in hogs {
        t.join().unwrap();
    }
    h.ok(&["branch", "delete", "hog"]);
    assert_groups_settled(&h);
}

#[test]
fn out_of_memory_takes_the_branch_only_and_start_brings_it_back() {
    let h = TestHome::new(Pool::Xfs, "cgoom");
    h.create_source("shop");
    load_items(&mut connect(&h.source_dsn("shop")), "base", 100);
    let source_pid = h.json(&["source", "info", "shop"])["pid"].clone();
    let b = h.create_branch("greedy", "shop", &["--memory", "256M"]);
    let dsn = dsn_of(&b);
    load_items(&mut connect(&dsn), "mine", 10);

    // The source keeps answering while the branch runs out of memory.
    let source_dsn = h.source_dsn("shop");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut db = connect(&source_dsn);
            let mut answered = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(tagged(&mut db, "base"), 100, "the source failed a query");
                answered += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            answered
        })
    };

    // An in-memory sort of about 1.5 GB.
    let mut db = connect(&dsn);
    let err = db
        .batch_execute(
            "SET work_mem = '2GB'; SELECT count(*) FROM (SELECT g, md5(g::text) AS m \
             FROM generate_series(1, 20000000) g ORDER BY m) s",
        )
        .expect_err("a sort of 1.5 GB in 256 MB");
    eprintln!("the greedy session saw: {}", describe(&err));
    let crashed = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        h.branch("greedy")["status"] == "crashed"
    });
    let info = h.branch("greedy");
    assert!(crashed, "the branch did not go down: {info:#}");
    assert!(
        info["compute"]["oom_kills"].as_u64().unwrap() >= 1,
        "{info:#}"
    );
    let log = std::fs::read_to_string(info["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("was terminated by signal 9"), "{log}");
    assert!(log.contains("restart_after_crash is off"), "{log}");
    let human = h.ok(&["branch", "info", "greedy"]);
    assert!(human.contains("pgfork branch start greedy"), "{human}");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = watcher.join().expect("the source answered every query");
    assert!(answered > 10, "the watcher barely ran");
    let source = h.json(&["source", "info", "shop"]);
    assert_eq!(source["status"], "running");
    assert_eq!(source["pid"], source_pid, "the source was never restarted");
    assert_eq!(
        cg_file(&groups_of(&source), "memory.oom_control")
            .map(|t| t.lines().any(|l| l == "oom_kill 0")),
        Some(true),
        "the kernel killed nothing of the source"
    );

    let started = h.json(&["branch", "start", "greedy"]);
    assert_eq!(started["status"], "running");
    assert!(
        started["compute"]["oom_kills"].as_u64().unwrap() >= 1,
        "remembered"
    );
    assert_eq!(tagged(&mut connect(&dsn), "mine"), 10);
    assert_groups_settled(&h);
    h.ok(&["branch", "delete", "greedy"]);
    h.assert_settled();
}

#[test]
fn bad_or_unenforceable_limits_are_refused_and_leave_nothing() {
    let h = TestHome::new(Pool::Xfs, "cgbad");
    let source = h.create_source("shop");
    h.snapshot("shop");
    let branches_dir = branches_dir_of(&groups_of(&source)[0]);

    for (args, flag) in [
        (&["--cpu", "0"][..], "--cpu"),
        (&["--cpu", "abc"], "--cpu"),
        (&["--cpu", "0.0001"], "--cpu"),
        (&["--cpu", "2000"], "--cpu"),
        (&["--memory", "1K"], "--memory"),
        (&["--memory", "lots"], "--memory"),
        (&["--pids", "2"], "--pids"),
    ] {
        let mut all = vec!["branch", "create", "nope", "--from", "shop"];
        all.extend_from_slice(args);
        let e = h.fails(&all);
        assert_eq!(e.code, "invalid_argument", "{args:?}: {}", e.message);
        assert!(e.message.contains(flag), "{args:?}: {}", e.message);
    }
    let e = h.fails(&["source", "limits", "shop", "--branch-memory", "3M"]);
    assert!(e.message.contains("--branch-memory"), "{}", e.message);

    // Without cgroups: doctor says so, a limit is refused (never skipped),
    // and a branch without limits runs unlimited.
    let out = without_cgroups(&h, &["doctor"]);
    let doctor = json_of(&out);
    let check = common::doctor_check(&doctor, "compute limits");
    assert_eq!(check["status"], "warn", "{check:#}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("branches run without compute limits"),
        "{check:#}"
    );
    for args in [
        &[
            "branch", "create", "nope", "--from", "shop", "--memory", "256M",
        ][..],
        &["branch", "create", "nope", "--from", "shop", "--cpu", "0.5"],
        &["source", "limits", "shop", "--branch-pids", "100"],
    ] {
        let out = without_cgroups(&h, args);
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
        let e = json_of(&out);
        assert_eq!(e["error"]["code"], "compute_unavailable", "{e:#}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains("controller"), "{message}");
        assert!(message.contains("pgfork doctor"), "{message}");
    }
    // A source default that cannot be enforced here refuses the create too.
    h.ok(&["source", "limits", "shop", "--branch-memory", "256M"]);
    let out = without_cgroups(&h, &["branch", "create", "nope", "--from", "shop"]);
    let e = json_of(&out);
    assert_eq!(e["error"]["code"], "compute_unavailable", "{e:#}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("source limits"),
        "{e:#}"
    );
    h.ok(&["source", "limits", "shop", "--branch-memory", "none"]);

    let out = without_cgroups(&h, &["branch", "create", "plain", "--from", "shop"]);
    let plain = json_of(&out);
    assert_eq!(plain["status"], "running", "{plain:#}");
    assert!(
        groups_of(&plain).is_empty(),
        "no cgroups, no group: {plain:#}"
    );
    h.ok(&["branch", "delete", "plain"]);

    assert_eq!(h.json(&["branch", "list"]), json!([]));
    assert!(entries(&h.pool_dir().join("branches")).is_empty());
    assert!(!branches_dir.exists(), "a refused branch left a group");
    assert_eq!(
        h.recorded_cgroups(),
        groups_of(&h.json(&["source", "info", "shop"])),
        "a pgfork that could not see the groups forgot none"
    );
    assert_groups_settled(&h);
    h.assert_settled();
}

#[test]
fn groups_left_by_killed_pgfork_or_by_hand_are_removed() {
    let h = TestHome::new(Pool::Xfs, "cgorphan");
    let source = h.create_source("shop");
    h.snapshot("shop");
    let branches_dir = branches_dir_of(&groups_of(&source)[0]);

    // pgfork killed with the limited branch's server up in its group.
    h.crash_at(
        "branch-create:after-start",
        &[
            "branch", "create", "doomed", "--from", "shop@1", "--memory", "256M",
        ],
    );
    assert!(
        h.recorded_cgroups().iter().any(|p| p.ends_with("doomed")),
        "recorded before it was made"
    );
    assert_eq!(h.json(&["branch", "list"]), json!([]), "reconciled");
    assert!(!branches_dir.join("doomed").exists());

    // A group no row records, and a recorded one of a branch that is gone.
    std::fs::create_dir_all(branches_dir.join("ghost")).expect("mkdir in the cgroup tree");
    let gone = branches_dir.join("gone");
    std::fs::create_dir(&gone).unwrap();
    let db = rusqlite::Connection::open(h.root.join("meta.db")).unwrap();
    db.execute(
        "INSERT INTO cgroups (path, kind, name) VALUES (?1, 'branch', 'gone')",
        [gone.to_string_lossy()],
    )
    .unwrap();
    drop(db);
    let doctor = h.json(&["doctor"]);
    let stray = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "control groups")
        .unwrap_or_else(|| panic!("doctor names the stray group: {doctor:#}"))
        .clone();
    assert!(
        stray["detail"].as_str().unwrap().contains("gone"),
        "{stray:#}"
    );
    let out = h.run(&["branch", "list"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("removed control group"), "{said}");
    assert!(!gone.exists() && !branches_dir.join("ghost").exists());
    assert!(!branches_dir.exists());
    assert_groups_settled(&h);
    h.assert_settled();
}
