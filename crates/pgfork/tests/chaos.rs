//! The chaos run (issue 12): for a bounded time, a seeded random mix of
//! branch creates, writes into branches, resets, deletes, snapshots and
//! promotes, through the CLI and the HTTP API at once, while pgfork's own
//! processes (CLI commands mid-operation, the daemon) and random
//! postmasters (branches', seal and view servers', the source's) are
//! killed with SIGKILL, and the pool is filled to the brim for a while.
//! A writer commits a hash-chained ledger into the source throughout, and
//! policy-proxy agents read it and write in dry-run (audited).
//!
//! Afterwards, as a user would (`pgfork doctor`, then any command, which
//! reconciles; then `source start` and `branch start` of every branch), the
//! invariants must hold:
//!
//! - the ledger holds every acknowledged commit, nothing that was refused,
//!   and an unbroken checksum chain; the source holds every note of every
//!   acknowledged promote, no note nobody wrote and no dry-run write;
//! - each branch that was acknowledged made and never asked to go exists,
//!   none acknowledged deleted does, and each holds every note it
//!   acknowledged since its last reset;
//! - the home holds exactly what meta.db says ([`TestHome::assert_settled`]:
//!   directories vs rows, no half-done object, no orphan process, socket
//!   directory, log or port), no stray pgfork process, extra mount, loop
//!   device or socket file, and (where pgfork runs servers in control
//!   groups) one group per running server and none of a server that is
//!   gone; `pgfork doctor` reports no failure;
//! - `pg_amcheck` is clean on the source and on every branch, and every
//!   branch starts and answers on its DSN;
//! - `pgfork audit --verify` holds, though the daemon whose proxy wrote the
//!   log was killed mid-batch;
//! - no pgfork process panicked, exited with an undocumented status or
//!   printed an error that is not the documented JSON.
//!
//! `PGFORK_CHAOS_SECS` (default 75) sets the length of the chaos phase,
//! `PGFORK_CHAOS_SEED` replays a run's operation sequence (the seed is
//! printed first; timings, and so interleavings, differ between runs), and
//! `PGFORK_CHAOS_FS` (`xfs`, the default, or `btrfs`) the pool image's
//! filesystem. `scripts/chaos.sh SECONDS [SEED]` runs it for longer.

mod common;
mod daemon;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use common::*;
use daemon::Serve;
use reqwest::Method;
use serde_json::{Value, json};

/// The source every branch comes from.
const SOURCE: &str = "chaos";
/// Size of the pool image: small, so that filling it is quick.
const POOL_IMAGE: &str = "4G";
/// Threads driving operations.
const WORKERS: u64 = 3;
/// Branches alive at most at once (each is a postmaster on the home's ports).
const MAX_BRANCHES: usize = 7;
/// A pgfork command running longer than this is hung: a bug.
const HUNG: Duration = Duration::from_secs(240);
/// The daemon's options: its reaper deletes expired branches every 5 s.
const SERVE_ARGS: &[&str] = &["--reap-every", "5s"];
/// The branch the proxy makes for the branch agent on its first session.
const AGENT_BRANCH: &str = "agentb";
/// What a note of the dry-run agent is called: none may ever persist.
const DRY_PREFIX: &str = "dry-";

#[test]
fn chaos_run() {
    let settings = Settings::from_env();
    eprintln!(
        "\n=== chaos run: seed {} (PGFORK_CHAOS_SEED={} replays its operations), {} s, {} pool image ===\n",
        settings.seed, settings.seed, settings.secs, settings.fs
    );
    let h = TestHome::bare(Pool::Plain, "chaos");
    let proxy_port = h.ports.1;
    let range = format!("{}-{}", h.ports.0, h.ports.1 - 1);
    let report = h.json(&[
        "init",
        "--ports",
        &range,
        "--pool-image",
        POOL_IMAGE,
        "--fs",
        settings.fs,
    ]);
    assert_eq!(report["filesystem"], settings.fs, "{report:#}");
    assert_eq!(report["copy_on_write"], true, "{report:#}");

    h.create_source(SOURCE);
    let source_dsn = h.source_dsn(SOURCE);
    let mut src = connect(&source_dsn);
    exec(
        &mut src,
        "CREATE TABLE ledger (seq bigint PRIMARY KEY, val bigint NOT NULL, chain text NOT NULL);
         CREATE TABLE notes (id text PRIMARY KEY, branch text NOT NULL, body text NOT NULL);",
    );
    load_items(&mut src, "base", 2000);
    drop(src);
    h.snapshot(SOURCE);
    let reader = agent_secret(&h, "reader", "read-only");
    let tester = agent_secret(&h, "tester", "dry-run");
    let builder = {
        let out = h.json(&[
            "agent",
            "create",
            "builder",
            "--source",
            SOURCE,
            "--policy",
            "branch",
            "--branch",
            AGENT_BRANCH,
        ]);
        out["secret"].as_str().expect("secret").to_string()
    };
    let listen = format!("127.0.0.1:{proxy_port}");
    let serve = Serve::try_start(&h, &listen, SERVE_ARGS).unwrap_or_else(|e| panic!("{e}"));

    let started = Instant::now();
    let ctx = Chaos {
        h: &h,
        seed: settings.seed,
        started,
        deadline: started + Duration::from_secs(settings.secs),
        stop: AtomicBool::new(false),
        model: Mutex::new(Model {
            branches: BTreeMap::from([(
                AGENT_BRANCH.to_string(),
                BranchModel {
                    external: true,
                    ..BranchModel::default()
                },
            )]),
            ..Model::default()
        }),
        api: Mutex::new(Some(Api::of(&serve))),
        serve: Mutex::new(Some(serve)),
        proxy_listen: listen,
        source_dsn,
        log: Mutex::new(Vec::new()),
        anomalies: Mutex::new(Vec::new()),
        stats: Mutex::new(BTreeMap::new()),
        ledger: Mutex::new(Ledger::default()),
        agent_statements: AtomicU64::new(0),
        dry_seq: AtomicU64::new(0),
        last_source_stop: Mutex::new(started),
    };
    std::thread::scope(|s| {
        let ctx = &ctx;
        for w in 0..WORKERS {
            s.spawn(move || ctx.guarded(|| ctx.worker(w)));
        }
        s.spawn(move || ctx.guarded(|| ctx.ledger_writer()));
        s.spawn(move || ctx.guarded(|| ctx.agents([&reader, &tester, &builder])));
        s.spawn(move || ctx.guarded(|| ctx.monkey()));
        s.spawn(move || ctx.guarded(|| ctx.filler(settings.secs)));
    });
    ctx.note(format!(
        "chaos phase over after {:.1} s; settling",
        started.elapsed().as_secs_f64()
    ));
    let failures = ctx.settle_and_check(proxy_port);
    ctx.summary();
    if !failures.is_empty() {
        panic!(
            "\n\nchaos run with seed {} ({}, {} s) broke {} invariant(s):\n\n- {}\n\n\
             Replay: PGFORK_CHAOS_FS={} scripts/chaos.sh {} {}\n",
            settings.seed,
            settings.fs,
            settings.secs,
            failures.len(),
            failures.join("\n- "),
            settings.fs,
            settings.secs,
            settings.seed
        );
    }
}

/// A reset cut short (pgfork killed once the branch's data was removed),
/// then several commands at once, each reconciling first: one of them
/// finishes the reset, none fails, and the branch starts again with its
/// snapshot's data. Found by the chaos run: they all finished it at once,
/// one removing the directory while another cloned into it, and failed
/// with "Directory not empty" or "No such file", leaving a branch that did
/// not start.
#[test]
fn concurrent_reconciles_finish_an_interrupted_reset_once() {
    let h = TestHome::new(Pool::Xfs, "recon");
    h.create_source("rc");
    load_items(&mut connect(&h.source_dsn("rc")), "base", 100_000);
    h.snapshot("rc");
    for round in 0..3 {
        let name = format!("r{round}");
        let dsn = dsn_of(&h.create_branch(&name, "rc@1", &[]));
        load_items(&mut connect(&dsn), "scratch", 10);
        h.crash_at("branch-reset:after-remove", &["branch", "reset", &name]);
        let outputs: Vec<_> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..6)
                .map(|_| s.spawn(|| h.output(&mut h.command(&["--json", "branch", "list"]))))
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for out in &outputs {
            assert!(
                out.status.success(),
                "a command reconciling at the same time as others failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let info = h.branch(&name);
        assert_eq!(info["status"], "stopped", "{info:#}");
        assert_eq!(h.json(&["branch", "start", &name])["status"], "running");
        let mut db = connect(&dsn);
        assert_eq!(tagged(&mut db, "base"), 100_000);
        assert_eq!(tagged(&mut db, "scratch"), 0);
        h.assert_settled();
    }
}

/// `branch start` SIGKILLed the moment its postmaster is ready, before it
/// set the branch's password, on a branch whose interrupted reset the
/// reconcile finished (so its data holds the snapshot's password): the
/// next `branch start` brings it back with its own DSN working. Found by
/// the chaos run: the reconcile recorded the server as running, `branch
/// start` of a running branch does nothing, and the DSN was refused
/// (`password authentication failed`) until someone stopped the branch.
#[test]
fn a_start_killed_before_the_password_is_set_leaves_no_branch_refusing_its_dsn() {
    let h = TestHome::new(Pool::Xfs, "armkill");
    h.create_source("ak");
    load_items(&mut connect(&h.source_dsn("ak")), "base", 10);
    h.snapshot("ak");
    for round in 0..3 {
        let name = format!("a{round}");
        let dsn = dsn_of(&h.create_branch(&name, "ak@1", &[]));
        h.crash_at("branch-reset:after-remove", &["branch", "reset", &name]);
        assert_eq!(h.branch(&name)["status"], "stopped");
        let pidfile = h
            .pool_dir()
            .join("branches")
            .join(&name)
            .join("postmaster.pid");
        let mut start = h
            .command(&["branch", "start", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgfork");
        let ready = poll_until(Duration::from_secs(60), Duration::from_micros(200), || {
            fs::read_to_string(&pidfile)
                .is_ok_and(|t| t.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
        });
        let _ = start.kill();
        let _ = start.wait();
        assert!(ready, "the branch's postmaster never said it was ready");
        assert_eq!(h.json(&["branch", "start", &name])["status"], "running");
        let mut db = try_connect(&dsn).unwrap_or_else(|e| {
            panic!(
                "round {round}: the branch refuses its DSN: {}",
                describe(&e)
            )
        });
        assert_eq!(tagged(&mut db, "base"), 10);
        h.assert_settled();
    }
}

/// What the environment asks of the run.
#[derive(Debug, Clone, Copy)]
struct Settings {
    secs: u64,
    seed: u64,
    fs: &'static str,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let secs = var("PGFORK_CHAOS_SECS").map_or(75, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("PGFORK_CHAOS_SECS={v} is not a number of seconds"))
        });
        assert!(secs >= 10, "PGFORK_CHAOS_SECS must be at least 10");
        let seed = match var("PGFORK_CHAOS_SEED") {
            Some(v) => {
                let v = v.trim();
                match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => v.parse(),
                }
                .unwrap_or_else(|_| panic!("PGFORK_CHAOS_SEED={v} is not a number"))
            }
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                // Short enough to type.
                (nanos ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000_000
            }
        };
        let fs = match var("PGFORK_CHAOS_FS").as_deref() {
            None | Some("xfs") => "xfs",
            Some("btrfs") => "btrfs",
            Some(other) => panic!("PGFORK_CHAOS_FS={other}: xfs or btrfs"),
        };
        Settings { secs, seed, fs }
    }
}

/// SplitMix64: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// True with probability `percent`/100.
    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize].clone())
    }

    fn weighted<T: Copy>(&mut self, items: &[(T, u64)]) -> T {
        let total: u64 = items.iter().map(|(_, w)| w).sum();
        let mut at = self.below(total);
        for (item, w) in items {
            if at < *w {
                return *item;
            }
            at -= w;
        }
        items[0].0
    }
}

/// How an operation ended, as its caller saw it.
#[derive(Debug, Clone)]
enum Outcome {
    /// Acknowledged: exit code 0 / HTTP 2xx, with its JSON.
    Ok(Value),
    /// Refused the documented way (exit code 1 / HTTP 4xx-5xx with a code).
    Refused { code: String, message: String },
    /// No answer: the process was killed, the daemon died, the connection
    /// broke. Whether it happened is unknown.
    Lost(String),
}

impl Outcome {
    fn short(&self) -> String {
        match self {
            Outcome::Ok(_) => "ok".into(),
            Outcome::Refused { code, message } => {
                let m: String = message.chars().take(160).collect();
                format!("refused {code}: {}", m.replace('\n', " "))
            }
            Outcome::Lost(why) => format!("lost ({why})"),
        }
    }

    fn kind(&self) -> String {
        match self {
            Outcome::Ok(_) => "ok".into(),
            Outcome::Refused { code, .. } => code.clone(),
            Outcome::Lost(_) => "lost".into(),
        }
    }
}

/// How a CLI command is interrupted.
#[derive(Debug, Clone, Copy)]
enum Kill {
    No,
    /// SIGKILL after this long, if it still runs.
    After(Duration),
    /// `PGFORK_FAILPOINT`: pgfork kills itself at this point, if reached.
    Failpoint(&'static str),
}

/// The daemon's HTTP endpoint and token of the moment.
#[derive(Clone)]
struct Api {
    url: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Api {
    fn of(s: &Serve) -> Api {
        Api {
            url: s.url.clone(),
            token: s.token.clone(),
            http: s.http.clone(),
        }
    }
}

/// What the test knows of one branch name.
#[derive(Default)]
struct BranchModel {
    /// The branch it was made from (directly or through its snapshot).
    parent: Option<String>,
    /// Its DSN, with the password.
    dsn: Option<String>,
    /// `branch create` was acknowledged.
    created: bool,
    /// Deletes that may have removed it (its own, or a forced one of an
    /// ancestor), not counting those refused before anything was done.
    delete_attempts: u32,
    /// An acknowledged delete listed it as deleted.
    deleted: bool,
    /// A command said it does not exist (only for picking targets).
    absent: bool,
    /// Notes whose commit was acknowledged since its last reset began.
    definite: BTreeSet<String>,
    /// The branch that fills the pool: left to the filler.
    hog: bool,
    /// Its `branch create` is running: not a target yet (its DSN does not
    /// work until the create has set the password).
    creating: bool,
    /// An operation raced others on it: its notes are not checked, and its
    /// promotes require nothing of the source.
    tainted: bool,
    /// Made with a TTL: the daemon's reaper may delete it any time.
    ttl: bool,
    /// The proxy makes it, for the branch agent: no worker's target.
    external: bool,
    /// Held by the thread operating on it (writes, resets, promotes...).
    lock: Arc<Mutex<()>>,
}

#[derive(Default)]
struct Model {
    branches: BTreeMap<String, BranchModel>,
    /// Every note id any branch write tried to commit.
    written: BTreeSet<String>,
    /// Notes an acknowledged promote carried: the source must hold them.
    required: BTreeMap<String, String>,
    /// Snapshot ids taken (`ORIGIN@N`) and the branch each was taken of.
    snapshots: Vec<(String, Option<String>)>,
    note_seq: u64,
}

/// The source writer's record of its commits.
#[derive(Default)]
struct Ledger {
    /// seq -> val of acknowledged commits.
    acked: BTreeMap<i64, i64>,
    /// Every (seq, val) ever sent.
    sent: BTreeSet<(i64, i64)>,
    /// (seq, val) refused by the server with the connection intact: not
    /// committed.
    refused: BTreeSet<(i64, i64)>,
    /// (seq, val) whose fate is unknown (the connection broke).
    in_doubt: BTreeSet<(i64, i64)>,
    reconnects: u64,
    source_starts: u64,
}

struct Chaos<'a> {
    h: &'a TestHome,
    seed: u64,
    started: Instant,
    deadline: Instant,
    stop: AtomicBool,
    model: Mutex<Model>,
    api: Mutex<Option<Api>>,
    serve: Mutex<Option<Serve>>,
    proxy_listen: String,
    source_dsn: String,
    log: Mutex<Vec<String>>,
    anomalies: Mutex<Vec<String>>,
    stats: Mutex<BTreeMap<String, u64>>,
    ledger: Mutex<Ledger>,
    agent_statements: AtomicU64,
    dry_seq: AtomicU64,
    last_source_stop: Mutex<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Write,
    Reset,
    Delete,
    Snapshot,
    SnapshotDelete,
    Promote,
    StopStart,
    SourceRestart,
}

/// A worker's own state.
struct Worker {
    id: u64,
    rng: Rng,
    names: u64,
}

impl Worker {
    fn new_name(&mut self) -> String {
        self.names += 1;
        format!("w{}n{}", self.id, self.names)
    }

    /// Most commands run to the end; some are SIGKILLed at a random moment
    /// or at one of pgfork's failpoints on their path.
    fn kill_plan(&mut self, points: &[&'static str]) -> Kill {
        let roll = self.rng.below(100);
        if roll < 15 {
            Kill::After(self.rng.ms(5, 1500))
        } else if roll < 23 && !points.is_empty() {
            Kill::Failpoint(self.rng.pick(points).expect("a point"))
        } else {
            Kill::No
        }
    }
}

impl Chaos<'_> {
    fn done(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || Instant::now() >= self.deadline
    }

    /// Runs a thread's body; a panic in it ends the chaos phase for all.
    fn guarded(&self, body: impl FnOnce()) {
        struct StopOnPanic<'b>(&'b AtomicBool);
        impl Drop for StopOnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
        }
        let _guard = StopOnPanic(&self.stop);
        // A panic of the test's own code ends the chaos phase, but the home
        // is still checked (and the panic reported with the rest).
        if let Err(e) = std::panic::catch_unwind(AssertUnwindSafe(body)) {
            self.stop.store(true, Ordering::SeqCst);
            self.anomaly(format!("a thread of the test panicked: {}", panic_text(&e)));
        }
    }

    /// Sleeps up to `d`, waking early when the run ends.
    fn nap(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.done() {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
    }

    fn note(&self, line: String) {
        let line = format!("[{:7.2}] {line}", self.started.elapsed().as_secs_f64());
        eprintln!("{line}");
        lock(&self.log).push(line);
    }

    fn anomaly(&self, what: String) {
        self.note(format!("ANOMALY: {what}"));
        lock(&self.anomalies).push(what);
    }

    fn count(&self, key: String) {
        *lock(&self.stats).entry(key).or_default() += 1;
    }

    // --- pgfork, through the CLI and the API ---------------------------------

    /// `pgfork --json ARGS`, interrupted as `kill` says.
    fn cli(&self, args: &[&str], kill: Kill) -> Outcome {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let mut cmd = self.h.command(&all);
        if let Kill::Failpoint(point) = kill {
            cmd.env(FAILPOINT_ENV, point);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn pgfork");
        let drain = |mut pipe: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                let _ = tx.send(buf);
            });
            rx
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
        let began = Instant::now();
        let kill_at = match kill {
            Kill::After(d) => Some(began + d),
            _ => None,
        };
        let mut killed = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for pgfork") {
                break status;
            }
            let now = Instant::now();
            if kill_at.is_some_and(|t| now >= t) {
                let _ = child.kill();
                killed = true;
                break child.wait().expect("reap pgfork");
            }
            if now - began > HUNG {
                self.anomaly(format!(
                    "pgfork {} hung for {:?}: killed",
                    args.join(" "),
                    HUNG
                ));
                let _ = child.kill();
                break child.wait().expect("reap pgfork");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // A killed pgfork's children may hold the pipes a little longer.
        let read = |rx: mpsc::Receiver<Vec<u8>>| {
            rx.recv_timeout(Duration::from_secs(10))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| "<pipe held open by a child of pgfork>".into())
        };
        let (out, err) = (read(stdout), read(stderr));
        let what = format!("pgfork {}", args.join(" "));
        if err.contains("panicked at") {
            self.anomaly(format!("{what} panicked: {}", err.trim()));
        }
        match (status.code(), status.signal()) {
            (_, Some(libc::SIGKILL)) if killed => Outcome::Lost("killed".into()),
            (_, Some(libc::SIGKILL)) if matches!(kill, Kill::Failpoint(_)) => {
                Outcome::Lost("killed itself at the failpoint".into())
            }
            (Some(0), _) => match serde_json::from_str(&out) {
                Ok(v) => Outcome::Ok(v),
                Err(e) => {
                    self.anomaly(format!("{what} succeeded but printed no JSON ({e}): {out}"));
                    Outcome::Lost("no JSON".into())
                }
            },
            (Some(1), _) => match serde_json::from_str::<Value>(&out) {
                Ok(v) if v["error"]["code"].is_string() => Outcome::Refused {
                    code: v["error"]["code"].as_str().unwrap_or_default().into(),
                    message: v["error"]["message"].as_str().unwrap_or_default().into(),
                },
                // promote prints its report, then fails, when it found
                // conflicts.
                Ok(v) if v["conflicts"].is_array() => Outcome::Refused {
                    code: "conflicts".into(),
                    message: v.to_string(),
                },
                _ => {
                    self.anomaly(format!(
                        "{what} failed without a JSON error:\nstdout: {out}\nstderr: {err}"
                    ));
                    Outcome::Lost("no JSON error".into())
                }
            },
            _ => {
                self.anomaly(format!(
                    "{what} ended with {status} (not 0, 1 or our SIGKILL):\nstdout: {out}\nstderr: {err}"
                ));
                Outcome::Lost(format!("{status}"))
            }
        }
    }

    /// An HTTP request to the daemon running now.
    fn api(&self, method: Method, path: &str, body: Option<Value>) -> Outcome {
        let Some(api) = lock(&self.api).clone() else {
            return Outcome::Lost("the daemon is down".into());
        };
        let mut req = api
            .http
            .request(method.clone(), format!("{}{path}", api.url))
            .bearer_auth(&api.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = match req.send() {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                self.anomaly(format!("API {method} {path} timed out"));
                return Outcome::Lost("timeout".into());
            }
            Err(e) => return Outcome::Lost(format!("http: {e}")),
        };
        let status = resp.status();
        let text = match resp.text() {
            Ok(t) => t,
            Err(e) => return Outcome::Lost(format!("http body: {e}")),
        };
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Outcome::Ok(value);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // The daemon was restarted with a new token in between.
            return Outcome::Refused {
                code: "unauthorized".into(),
                message: "token of a daemon since restarted".into(),
            };
        }
        match value["error"]["code"].as_str() {
            Some(code) => Outcome::Refused {
                code: code.into(),
                message: value["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
            },
            None => {
                self.anomaly(format!(
                    "API {method} {path}: {status} without a JSON error: {text}"
                ));
                Outcome::Lost(format!("{status}"))
            }
        }
    }

    /// Runs one operation through the CLI or the API, at random.
    fn either(
        &self,
        w: &mut Worker,
        cli: &[&str],
        points: &[&'static str],
        api: Option<(Method, String, Option<Value>)>,
    ) -> (Outcome, String) {
        match api {
            Some((method, path, body)) if w.rng.percent(50) && lock(&self.api).is_some() => {
                let via = format!("api {method} {path}");
                (self.api(method, &path, body), via)
            }
            _ => {
                let kill = w.kill_plan(points);
                let via = match kill {
                    Kill::No => "cli".to_string(),
                    Kill::After(d) => format!("cli, kill -9 after {} ms", d.as_millis()),
                    Kill::Failpoint(p) => format!("cli, failpoint {p}"),
                };
                (self.cli(cli, kill), via)
            }
        }
    }

    fn record(&self, w: &Worker, op: &str, target: &str, via: &str, outcome: &Outcome) {
        self.count(format!("{op}: {}", outcome.kind()));
        self.note(format!(
            "w{} {op} {target} [{via}]: {}",
            w.id,
            outcome.short()
        ));
    }

    // --- the model ------------------------------------------------------------

    /// Branches that may exist and are not the filler's, for picking.
    fn candidates(&self) -> Vec<String> {
        lock(&self.model)
            .branches
            .iter()
            .filter(|(_, b)| !b.deleted && !b.absent && !b.hog && !b.creating && !b.external)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Runs `f` holding the operation lock of branch `name`, if free.
    fn with_branch<R>(&self, name: &str, f: impl FnOnce() -> R) -> Option<R> {
        let l = lock(&self.model).branches.get(name)?.lock.clone();
        let _held = l.try_lock().ok()?;
        Some(f())
    }

    /// An operation is about to race others on `name`: from now on which
    /// notes it holds is not known.
    fn taint(&self, name: &str) {
        if let Some(b) = lock(&self.model).branches.get_mut(name) {
            b.tainted = true;
        }
    }

    /// Every branch made from `name`, at any depth, as far as the test knows.
    fn descendants(m: &Model, name: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut queue = vec![name.to_string()];
        while let Some(p) = queue.pop() {
            for (n, b) in &m.branches {
                if b.parent.as_deref() == Some(p.as_str()) && !found.contains(n) {
                    found.push(n.clone());
                    queue.push(n.clone());
                }
            }
        }
        found
    }

    fn mark_absent_if_unknown(&self, name: &str, outcome: &Outcome) {
        if let Outcome::Refused { code, .. } = outcome
            && code == "unknown_branch"
            && let Some(b) = lock(&self.model).branches.get_mut(name)
        {
            b.absent = true;
        }
    }

    /// The branch's DSN, asked for if the test does not know it.
    fn dsn_of(&self, w: &mut Worker, name: &str) -> Option<String> {
        if let Some(d) = lock(&self.model)
            .branches
            .get(name)
            .and_then(|b| b.dsn.clone())
        {
            return Some(d);
        }
        let path = format!("/v1/branches/{name}/dsn");
        let (outcome, _) = self.either(
            w,
            &["branch", "dsn", name],
            &[],
            Some((Method::GET, path, None)),
        );
        self.mark_absent_if_unknown(name, &outcome);
        let dsn = match outcome {
            Outcome::Ok(v) => v["dsn"].as_str().map(str::to_string)?,
            _ => return None,
        };
        if let Some(b) = lock(&self.model).branches.get_mut(name) {
            b.dsn = Some(dsn.clone());
        }
        Some(dsn)
    }

    // --- the workers ----------------------------------------------------------

    fn worker(&self, id: u64) {
        let mut w = Worker {
            id,
            rng: Rng::new(self.seed, id + 1),
            names: 0,
        };
        while !self.done() {
            let live = self.candidates().len();
            let op = w.rng.weighted(&[
                (Op::Create, if live < MAX_BRANCHES { 6 } else { 0 }),
                (Op::Write, if live > 0 { 10 } else { 0 }),
                (Op::Reset, if live > 0 { 3 } else { 0 }),
                (Op::Delete, if live > 2 { 4 } else { 0 }),
                (Op::Snapshot, 3),
                (Op::SnapshotDelete, 3),
                (Op::Promote, if live > 0 { 3 } else { 0 }),
                (Op::StopStart, if live > 0 { 2 } else { 0 }),
                (Op::SourceRestart, 1),
            ]);
            match op {
                Op::Create => self.op_create(&mut w),
                Op::Snapshot if w.rng.percent(50) => self.op_snapshot(&mut w, None),
                Op::SnapshotDelete => self.op_snapshot_delete(&mut w),
                Op::SourceRestart => self.op_source_restart(&mut w),
                _ => {
                    let Some(name) = w.rng.pick(&self.candidates()) else {
                        continue;
                    };
                    let run = |w: &mut Worker| match op {
                        Op::Write => {
                            self.op_write(w, &name);
                        }
                        Op::Reset => self.op_reset(w, &name),
                        Op::Delete => self.op_delete(w, &name),
                        Op::Snapshot => self.op_snapshot(w, Some(&name)),
                        Op::Promote => self.op_promote(w, &name),
                        _ => self.op_stop_start(w, &name),
                    };
                    // Mostly one operation at a time on a branch, so that what
                    // it must hold is known; sometimes one that races the
                    // others on it, after which its content is not checked.
                    let ran = if w.rng.percent(20) {
                        self.taint(&name);
                        run(&mut w);
                        Some(())
                    } else {
                        self.with_branch(&name, || run(&mut w))
                    };
                    if ran.is_none() {
                        // Someone else is on it: give them a moment.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }

    fn op_create(&self, w: &mut Worker) {
        let name = w.new_name();
        let roll = w.rng.below(10);
        let snapshot = if (5..7).contains(&roll) {
            w.rng.pick(&lock(&self.model).snapshots)
        } else {
            None
        };
        let parent_branch = if roll >= 7 {
            w.rng.pick(&self.candidates())
        } else {
            None
        };
        // Some expire while the run goes on: the daemon's reaper deletes them.
        let ttl = w
            .rng
            .percent(15)
            .then(|| format!("{}s", 10 + w.rng.below(30)));
        let create = |from: &str, parent: Option<String>, w: &mut Worker| {
            lock(&self.model).branches.insert(
                name.clone(),
                BranchModel {
                    parent,
                    creating: true,
                    ttl: ttl.is_some(),
                    ..BranchModel::default()
                },
            );
            let mut points = vec![
                "branch-create:after-insert",
                "branch-create:after-clone",
                "branch-create:after-start",
            ];
            if !from.contains('@') && from != SOURCE {
                points.push("snapshot-create:before-seal");
                points.push("snapshot-create:during-backup");
            }
            let mut args = vec!["branch", "create", &name, "--from", from];
            let mut body = json!({ "name": name, "from": from });
            if let Some(t) = &ttl {
                args.extend(["--ttl", t]);
                body["ttl"] = json!(t);
            }
            let (outcome, via) = self.either(
                w,
                &args,
                &points,
                Some((Method::POST, "/v1/branches".into(), Some(body))),
            );
            let mut target = format!("{name} from {from}");
            if let Some(t) = &ttl {
                target = format!("{target} --ttl {t}");
            }
            lock(&self.model)
                .branches
                .get_mut(&name)
                .expect("registered")
                .creating = false;
            if let Outcome::Ok(v) = &outcome {
                let mut m = lock(&self.model);
                let b = m.branches.get_mut(&name).expect("registered");
                b.created = true;
                b.dsn = v["dsn"].as_str().map(str::to_string);
                target = format!("{target} (port {}, pid {})", v["port"], v["pid"]);
            }
            self.record(w, "create", &target, &via, &outcome);
        };
        match (snapshot, parent_branch) {
            (Some((id, parent)), _) => create(&id, parent, w),
            (None, Some(p)) => {
                let done = self.with_branch(&p, || create(&p, Some(p.clone()), w));
                if done.is_none() {
                    create(SOURCE, None, w);
                }
            }
            (None, None) => create(SOURCE, None, w),
        }
    }

    /// Commits a few notes into a branch; a crashed or stopped branch is
    /// started (sometimes) instead.
    fn op_write(&self, w: &mut Worker, name: &str) -> bool {
        let Some(dsn) = self.dsn_of(w, name) else {
            return false;
        };
        let n = 1 + w.rng.below(5);
        let ids: Vec<String> = {
            let mut m = lock(&self.model);
            let ids: Vec<String> = (0..n)
                .map(|_| {
                    m.note_seq += 1;
                    format!("{name}-{}-{}", w.id, m.note_seq)
                })
                .collect();
            m.written.extend(ids.iter().cloned());
            ids
        };
        let result = (|| -> Result<(), postgres::Error> {
            let mut c = quick_connect(&dsn)?;
            let mut tx = c.transaction()?;
            for id in &ids {
                tx.execute(
                    "INSERT INTO notes (id, branch, body) VALUES ($1, $2, md5($1))",
                    &[id, &name],
                )?;
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                if let Some(b) = lock(&self.model).branches.get_mut(name) {
                    b.definite.extend(ids.iter().cloned());
                }
                self.count("write: ok".into());
                self.note(format!(
                    "w{} write {name}: {} notes committed",
                    w.id,
                    ids.len()
                ));
                true
            }
            Err(e) => {
                self.count("write: failed".into());
                self.note(format!("w{} write {name}: {}", w.id, describe(&e)));
                if e.code() == Some(&postgres::error::SqlState::INVALID_PASSWORD) {
                    self.diagnose_login(name, &dsn);
                }
                // Read it again next time: a start may move it to another port.
                if let Some(b) = lock(&self.model).branches.get_mut(name) {
                    b.dsn = None;
                }
                if w.rng.percent(60) {
                    self.start_branch(w, name);
                }
                false
            }
        }
    }

    /// A branch refused its own DSN's password: who answered on its port?
    fn diagnose_login(&self, name: &str, dsn: &str) {
        let port: u16 = dsn
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let fresh = match self.cli(&["branch", "dsn", name], Kill::No) {
            Outcome::Ok(v) => v["dsn"].as_str().map(str::to_string),
            Outcome::Refused { code, .. } if code == "unknown_branch" => {
                // Deleted under the write (by a racing delete or the
                // reaper); its port may serve another branch by now.
                self.note(format!("branch {name} is gone"));
                return;
            }
            _ => None,
        };
        if fresh.as_deref().is_some_and(|f| f != dsn) {
            self.note(format!(
                "branch {name} has moved since its DSN was read (a start took another port): {} now",
                redact(fresh.as_deref().unwrap_or_default())
            ));
            return;
        }
        // A create or reset sets the password right after its server is up:
        // a login racing it is refused for a moment. Only a branch that
        // keeps refusing its DSN is broken.
        let logs_in = poll_until(Duration::from_secs(3), Duration::from_millis(200), || {
            quick_connect(dsn).is_ok()
        });
        let running = match self.cli(&["branch", "info", name], Kill::No) {
            Outcome::Ok(v) => v["status"] == "running",
            _ => false,
        };
        if !logs_in && !running {
            // Killed, stopped or reset meanwhile: nothing to conclude.
            self.note(format!(
                "branch {name} refused its DSN's password, then stopped running"
            ));
            return;
        }
        if logs_in {
            self.count("write: password refused while (re)starting".into());
            self.note(format!(
                "branch {name} refused its DSN's password for a moment (a create, start or reset racing the login)"
            ));
            return;
        }
        let info = match self.cli(&["branch", "info", name], Kill::No) {
            Outcome::Ok(v) => format!(
                "branch info: status {}, port {}, pid {}, op {}",
                v["status"], v["port"], v["pid"], v["op"]
            ),
            other => other.short(),
        };
        let listener = match listener_of(port) {
            Some((pid, cwd)) => format!("pid {pid} ({}) in {}", comm(pid), cwd.display()),
            None => "nobody".into(),
        };
        self.anomaly(format!(
            "branch {name} refused the password of its DSN (port {port}): {info}; listening on port {port}: {listener}"
        ));
    }

    fn start_branch(&self, w: &mut Worker, name: &str) {
        let (outcome, via) = self.either(
            w,
            &["branch", "start", name],
            &[],
            Some((Method::POST, format!("/v1/branches/{name}/start"), None)),
        );
        self.mark_absent_if_unknown(name, &outcome);
        self.record(w, "start", name, &via, &outcome);
    }

    fn op_reset(&self, w: &mut Worker, name: &str) {
        // Whatever the outcome, what it held may be gone.
        if let Some(b) = lock(&self.model).branches.get_mut(name) {
            b.definite.clear();
        }
        let (outcome, via) = self.either(
            w,
            &["branch", "reset", name],
            &["branch-reset:after-remove"],
            Some((Method::POST, format!("/v1/branches/{name}/reset"), None)),
        );
        self.mark_absent_if_unknown(name, &outcome);
        self.record(w, "reset", name, &via, &outcome);
    }

    fn op_delete(&self, w: &mut Worker, name: &str) {
        let force = w.rng.percent(35);
        {
            let mut m = lock(&self.model);
            let mut hit = vec![name.to_string()];
            if force {
                hit.extend(Self::descendants(&m, name));
            }
            for n in hit {
                if let Some(b) = m.branches.get_mut(&n) {
                    b.delete_attempts += 1;
                }
            }
        }
        let mut args = vec!["branch", "delete", name];
        if force {
            args.push("--force");
        }
        let path = format!(
            "/v1/branches/{name}{}",
            if force { "?force=true" } else { "" }
        );
        let (outcome, via) = self.either(w, &args, &[], Some((Method::DELETE, path, None)));
        let mut m = lock(&self.model);
        match &outcome {
            Outcome::Ok(v) => {
                for item in v["deleted"].as_array().into_iter().flatten() {
                    if let Some(b) = item
                        .as_str()
                        .and_then(|s| s.strip_prefix("branch "))
                        .and_then(|n| m.branches.get_mut(n))
                    {
                        b.deleted = true;
                    }
                }
            }
            Outcome::Refused { code, message } => {
                // Refused before anything was done: it is still there.
                let untouched = code == "has_dependents"
                    || (code == "busy" && message.contains(&format!("branch '{name}'")));
                if untouched && let Some(b) = m.branches.get_mut(name) {
                    b.delete_attempts -= 1;
                }
                if code == "unknown_branch"
                    && let Some(b) = m.branches.get_mut(name)
                {
                    b.absent = true;
                }
            }
            Outcome::Lost(_) => {}
        }
        drop(m);
        let what = if force {
            format!("{name} --force")
        } else {
            name.to_string()
        };
        self.record(w, "delete", &what, &via, &outcome);
    }

    fn op_snapshot(&self, w: &mut Worker, of: Option<&str>) {
        let of = of.unwrap_or(SOURCE);
        let (outcome, via) = self.either(
            w,
            &["snapshot", "create", of],
            &[
                "snapshot-create:before-seal",
                "snapshot-create:during-backup",
            ],
            Some((
                Method::POST,
                "/v1/snapshots".into(),
                Some(json!({ "of": of })),
            )),
        );
        if let Outcome::Ok(v) = &outcome
            && let Some(id) = v["id"].as_str()
        {
            let parent = v["parent_branch"].as_str().map(str::to_string);
            lock(&self.model).snapshots.push((id.to_string(), parent));
        }
        self.record(w, "snapshot", of, &via, &outcome);
    }

    /// Deletes a snapshot: mostly an old one no branch uses, as a user
    /// prunes them (every promote and every branch of a branch makes one,
    /// and each holds at least a WAL segment of its own); sometimes any one
    /// the test took.
    fn op_snapshot_delete(&self, w: &mut Worker) {
        let id = if w.rng.percent(75) {
            let (listed, _) = self.either(
                w,
                &["snapshot", "list"],
                &[],
                Some((Method::GET, "/v1/snapshots".into(), None)),
            );
            let Outcome::Ok(v) = listed else {
                return;
            };
            let unused: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["status"] == "ready")
                .filter(|s| s["branches"].as_array().is_some_and(|b| b.is_empty()))
                .filter_map(|s| s["id"].as_str().map(str::to_string))
                .collect();
            // Listed oldest first: one of the older half.
            let older = unused.len().div_ceil(2);
            let Some(id) = w.rng.pick(&unused[..older]) else {
                return;
            };
            id
        } else {
            let Some((id, _)) = w.rng.pick(&lock(&self.model).snapshots) else {
                return;
            };
            id
        };
        let (outcome, via) = self.either(
            w,
            &["snapshot", "delete", &id],
            &[],
            Some((Method::DELETE, format!("/v1/snapshots/{id}"), None)),
        );
        if matches!(&outcome, Outcome::Ok(_))
            || matches!(&outcome, Outcome::Refused { code, .. } if code == "unknown_snapshot")
        {
            lock(&self.model).snapshots.retain(|(s, _)| *s != id);
        }
        self.record(w, "snapshot delete", &id, &via, &outcome);
    }

    /// A small change (one note), then `pgfork promote BRANCH --yes`.
    fn op_promote(&self, w: &mut Worker, name: &str) {
        self.op_write(w, name);
        let kill = if w.rng.percent(20) {
            Kill::After(w.rng.ms(50, 3000))
        } else {
            Kill::No
        };
        let outcome = self.cli(&["promote", name, "--yes"], kill);
        match &outcome {
            Outcome::Ok(v) if v["applied"] == true => {
                let mut m = lock(&self.model);
                let carried: Vec<String> = m
                    .branches
                    .get(name)
                    .filter(|b| !b.tainted)
                    .map(|b| b.definite.iter().cloned().collect())
                    .unwrap_or_default();
                for id in carried {
                    m.required.insert(id, name.to_string());
                }
            }
            Outcome::Ok(v) => {
                self.anomaly(format!("promote {name} succeeded without applying: {v:#}"))
            }
            Outcome::Refused { code, message } if code == "conflicts" => {
                // Notes are only ever inserted, with ids no other branch
                // writes: three sides can never disagree.
                self.anomaly(format!("promote {name} found conflicts: {message}"))
            }
            _ => {}
        }
        self.mark_absent_if_unknown(name, &outcome);
        let via = match kill {
            Kill::After(d) => format!("cli, kill -9 after {} ms", d.as_millis()),
            _ => "cli".into(),
        };
        self.record(w, "promote", name, &via, &outcome);
    }

    fn op_stop_start(&self, w: &mut Worker, name: &str) {
        let verb = if w.rng.percent(50) { "stop" } else { "start" };
        let (outcome, via) = self.either(
            w,
            &["branch", verb, name],
            &[],
            Some((Method::POST, format!("/v1/branches/{name}/{verb}"), None)),
        );
        self.mark_absent_if_unknown(name, &outcome);
        self.record(w, verb, name, &via, &outcome);
    }

    /// `source stop` (the ledger writer starts it again).
    fn op_source_restart(&self, w: &mut Worker) {
        {
            let mut last = lock(&self.last_source_stop);
            if last.elapsed() < Duration::from_secs(15) {
                return;
            }
            *last = Instant::now();
        }
        let kill = w.kill_plan(&[]);
        let outcome = self.cli(&["source", "stop", SOURCE], kill);
        self.record(
            w,
            "source stop",
            SOURCE,
            &format!("cli, {kill:?}"),
            &outcome,
        );
    }

    // --- the source's ledger ----------------------------------------------------

    /// Commits hash-chained rows into the source, one per transaction,
    /// recording which commits were acknowledged; starts the source again
    /// when it is down (killed, stopped, crashed on a full pool).
    fn ledger_writer(&self) {
        let mut rng = Rng::new(self.seed, 100);
        let mut client: Option<postgres::Client> = None;
        let mut next = 1i64;
        let mut prev = String::from("genesis");
        let mut down_since: Option<Instant> = None;
        while !self.done() {
            let Some(c) = client.as_mut() else {
                match self.ledger_connect() {
                    Ok((c, seq, chain)) => {
                        next = seq + 1;
                        prev = chain;
                        client = Some(c);
                        lock(&self.ledger).reconnects += 1;
                        if let Some(t) = down_since.take() {
                            self.note(format!(
                                "ledger: source back after {:.1} s, continuing at seq {next}",
                                t.elapsed().as_secs_f64()
                            ));
                        }
                    }
                    Err(e) => {
                        let since = *down_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_millis(700) {
                            self.medic(&e);
                        }
                        self.nap(Duration::from_millis(300));
                    }
                }
                continue;
            };
            let val = (rng.next() >> 2) as i64;
            lock(&self.ledger).sent.insert((next, val));
            let result = c.query_one(
                "INSERT INTO ledger (seq, val, chain)
                 VALUES ($1, $2, md5($3::text || ':' || $1::bigint::text || ':' || $2::bigint::text))
                 RETURNING chain",
                &[&next, &val, &prev],
            );
            match result {
                Ok(row) => {
                    lock(&self.ledger).acked.insert(next, val);
                    prev = row.get(0);
                    next += 1;
                }
                Err(e) if !c.is_closed() && e.as_db_error().is_some() => {
                    // Refused with the session intact (a full disk, say):
                    // not committed. The same seq is tried again.
                    lock(&self.ledger).refused.insert((next, val));
                    self.note(format!("ledger: seq {next} refused: {}", describe(&e)));
                    self.nap(Duration::from_millis(200));
                }
                Err(e) => {
                    lock(&self.ledger).in_doubt.insert((next, val));
                    self.note(format!(
                        "ledger: seq {next} in doubt, the connection broke: {}",
                        describe(&e)
                    ));
                    client = None;
                }
            }
            std::thread::sleep(rng.ms(5, 25));
        }
    }

    /// A new ledger session, once no earlier one is left on the server
    /// (so the last row is final), with the last seq and chain.
    fn ledger_connect(&self) -> Result<(postgres::Client, i64, String), String> {
        let mut config: postgres::Config = self.source_dsn.parse().expect("DSN parses");
        config
            .connect_timeout(Duration::from_secs(5))
            .application_name("chaos-ledger");
        let mut c = config.connect(postgres::NoTls).map_err(|e| describe(&e))?;
        let settled = wait_until(Duration::from_secs(30), || {
            c.query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE application_name = 'chaos-ledger' AND pid <> pg_backend_pid()",
                &[],
            )
            .is_ok_and(|r| r.get::<_, i64>(0) == 0)
        });
        if !settled {
            return Err("an earlier ledger session is still on the source".into());
        }
        let last = c
            .query_opt(
                "SELECT seq, chain FROM ledger ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .map_err(|e| describe(&e))?;
        Ok(match last {
            Some(r) => (c, r.get(0), r.get(1)),
            None => (c, 0, "genesis".into()),
        })
    }

    /// Starts the source if it is not running.
    fn medic(&self, why: &str) {
        let status = match self.cli(&["source", "info", SOURCE], Kill::No) {
            Outcome::Ok(v) => v["status"].as_str().unwrap_or_default().to_string(),
            other => other.short(),
        };
        if status == "running" {
            return;
        }
        let outcome = self.cli(&["source", "start", SOURCE], Kill::No);
        lock(&self.ledger).source_starts += 1;
        self.count(format!("source start: {}", outcome.kind()));
        let why: String = why.chars().take(100).collect();
        self.note(format!(
            "ledger: source is {status} ({why}); source start: {}",
            outcome.short()
        ));
    }

    // --- agents through the daemon's proxy ---------------------------------------

    /// Through the proxy of the daemon (which the monkey kills): a
    /// read-only agent reading the ledger, a dry-run agent writing notes
    /// that must never stay, and a branch agent writing notes into the
    /// branch the proxy makes for it. The audit log they fill must still
    /// verify.
    fn agents(&self, secrets: [&str; 3]) {
        const AGENTS: [&str; 3] = ["reader", "tester", "builder"];
        let mut rng = Rng::new(self.seed, 200);
        let mut sessions: [Option<postgres::Client>; 3] = [None, None, None];
        while !self.done() {
            let i = rng.below(3) as usize;
            if sessions[i].is_none() {
                let url = format!(
                    "postgres://{}:{}@{}/{SOURCE}",
                    AGENTS[i], secrets[i], self.proxy_listen
                );
                sessions[i] = quick_connect(&url).ok();
                if sessions[i].is_none() {
                    self.nap(Duration::from_millis(300));
                    continue;
                }
            }
            let c = sessions[i].as_mut().expect("session");
            let result = match i {
                0 => c
                    .query_one("SELECT count(*), max(seq) FROM ledger", &[])
                    .map(|_| ()),
                1 => {
                    let id = format!(
                        "{DRY_PREFIX}{}",
                        self.dry_seq.fetch_add(1, Ordering::SeqCst)
                    );
                    c.execute(
                        "INSERT INTO notes (id, branch, body) VALUES ($1, 'dry-run', 'never kept')",
                        &[&id],
                    )
                    .map(|_| ())
                }
                _ => {
                    let id = {
                        let mut m = lock(&self.model);
                        m.note_seq += 1;
                        let id = format!("{AGENT_BRANCH}-{}", m.note_seq);
                        m.written.insert(id.clone());
                        id
                    };
                    c.execute(
                        "INSERT INTO notes (id, branch, body) VALUES ($1, $2, md5($1))",
                        &[&id, &AGENT_BRANCH],
                    )
                    .map(|_| ())
                }
            };
            match result {
                Ok(()) => {
                    self.agent_statements.fetch_add(1, Ordering::SeqCst);
                    self.count(format!("agent {}: ok", AGENTS[i]));
                }
                Err(e) => {
                    self.count(format!("agent {}: failed", AGENTS[i]));
                    if i == 2 {
                        self.note(format!("agent builder: {}", describe(&e)));
                    }
                    sessions[i] = None;
                }
            }
            std::thread::sleep(rng.ms(20, 120));
        }
    }

    // --- the monkey ---------------------------------------------------------------

    /// Kills postmasters and the daemon at random moments.
    fn monkey(&self) {
        let mut rng = Rng::new(self.seed, 300);
        let mut last_source_kill = self.started;
        let mut last_usage = self.started;
        while !self.done() {
            if last_usage.elapsed() > Duration::from_secs(10) {
                last_usage = Instant::now();
                let (free, total) = space(&self.h.pool_dir());
                self.note(format!(
                    "pool: {} MiB used of {} MiB; {} snapshot and {} branch directories",
                    (total - free) >> 20,
                    total >> 20,
                    entries(&self.h.pool_dir().join("snapshots")).len(),
                    entries(&self.h.pool_dir().join("branches")).len()
                ));
            }
            self.nap(rng.ms(1200, 3500));
            if self.done() {
                break;
            }
            let postmasters = postmasters(&self.h.root);
            let of = |kind: &str| -> Vec<(i32, PathBuf)> {
                postmasters
                    .iter()
                    .filter(|(_, k, _)| k == kind)
                    .map(|(p, _, d)| (*p, d.clone()))
                    .collect()
            };
            let roll = rng.below(100);
            if roll < 40 {
                if let Some((pid, dir)) = rng.pick(&of("branch")) {
                    self.kill9(pid, &format!("the postmaster of branch {}", leaf(&dir)));
                }
            } else if roll < 50 {
                if let Some((pid, dir)) = rng.pick(&of("other")) {
                    self.kill9(pid, &format!("the postmaster of {}", dir.display()));
                }
            } else if roll < 62 {
                if last_source_kill.elapsed() > Duration::from_secs(15)
                    && let Some((pid, _)) = rng.pick(&of("source"))
                {
                    self.kill9(pid, "the source's postmaster");
                    last_source_kill = Instant::now();
                }
            } else if roll < 82 {
                self.restart_serve(&mut rng);
            }
        }
    }

    fn kill9(&self, pid: i32, what: &str) {
        // SAFETY: kill(2) of a postmaster of this test's home.
        let sent = unsafe { libc::kill(pid, libc::SIGKILL) } == 0;
        let kind = if what.contains("branch") {
            "a branch's postmaster"
        } else if what.contains("source") {
            "the source's postmaster"
        } else {
            "a seal or view postmaster"
        };
        self.count(format!("kill -9 {kind}"));
        self.note(format!(
            "monkey: kill -9 {what} (pid {pid}){}",
            if sent { "" } else { ": already gone" }
        ));
    }

    /// `kill -9` of the daemon (and its proxy), then a new one.
    fn restart_serve(&self, rng: &mut Rng) {
        let old = lock(&self.serve).take();
        *lock(&self.api) = None;
        if let Some(s) = old {
            let pid = s.pid();
            s.kill9();
            self.count("kill -9 serve".into());
            self.note(format!("monkey: kill -9 pgfork serve (pid {pid})"));
        }
        std::thread::sleep(rng.ms(0, 1500));
        let mut last = String::new();
        for _ in 0..5 {
            match Serve::try_start(self.h, &self.proxy_listen, SERVE_ARGS) {
                Ok(s) => {
                    self.note(format!("monkey: pgfork serve restarted at {}", s.url));
                    *lock(&self.api) = Some(Api::of(&s));
                    *lock(&self.serve) = Some(s);
                    return;
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        self.anomaly(format!(
            "pgfork serve does not start again after kill -9: {last}"
        ));
    }

    // --- a full pool -------------------------------------------------------------

    /// Fills the pool to the brim for a while, once per 100 s (the first
    /// time a third of the way in): sometimes a branch writes a big table
    /// first (until the pool is full or for 8 s), then a filler file takes
    /// whatever is left; both go again afterwards.
    fn filler(&self, secs: u64) {
        let mut rng = Rng::new(self.seed, 400);
        let mut at = Duration::from_secs(secs / 3);
        let mut cycle = 0;
        loop {
            let hold = rng.ms(6000, 10000);
            if self.started + at + hold + Duration::from_secs(5) > self.deadline {
                return;
            }
            self.nap((self.started + at).saturating_duration_since(Instant::now()));
            if self.done() {
                return;
            }
            cycle += 1;
            self.count("pool filled".into());
            let hog = rng.percent(50).then(|| self.hog(cycle));
            let pool = self.h.pool_dir();
            let files = fill(&pool);
            let free = space(&pool).0;
            self.note(format!(
                "filler: pool full ({} filler files, {free} bytes left); holding {:.1} s",
                files.len(),
                hold.as_secs_f64()
            ));
            std::thread::sleep(hold);
            for f in &files {
                let _ = fs::remove_file(f);
            }
            self.note(format!(
                "filler: filler removed ({} bytes free)",
                space(&pool).0
            ));
            if let Some(name) = hog {
                let gone =
                    poll_until(
                        Duration::from_secs(120),
                        Duration::from_secs(1),
                        || match self.cli(&["branch", "delete", &name, "--force"], Kill::No) {
                            Outcome::Ok(_) => true,
                            Outcome::Refused { code, .. } => code == "unknown_branch",
                            Outcome::Lost(_) => false,
                        },
                    );
                let mut m = lock(&self.model);
                if let Some(b) = m.branches.get_mut(&name) {
                    b.delete_attempts += 1;
                    b.deleted = gone;
                }
                drop(m);
                if !gone {
                    self.anomaly(format!(
                        "the hog branch {name} could not be deleted in 120 s"
                    ));
                }
                self.note(format!("filler: hog branch {name} deleted: {gone}"));
            }
            at += Duration::from_secs(100);
        }
    }

    /// A branch that writes a big table until the pool is full (or 8 s).
    fn hog(&self, cycle: u64) -> String {
        let name = format!("hog{cycle}");
        lock(&self.model).branches.insert(
            name.clone(),
            BranchModel {
                hog: true,
                ..BranchModel::default()
            },
        );
        let outcome = self.cli(&["branch", "create", &name, "--from", SOURCE], Kill::No);
        let Outcome::Ok(v) = &outcome else {
            self.note(format!("filler: hog branch {name}: {}", outcome.short()));
            return name;
        };
        if let Some(b) = lock(&self.model).branches.get_mut(&name) {
            b.created = true;
        }
        let dsn = dsn_of(v);
        let began = Instant::now();
        let mut written = 0u64;
        let result = (|| -> Result<(), postgres::Error> {
            let mut c = quick_connect(&dsn)?;
            c.batch_execute("CREATE TABLE big (g int, pad text)")?;
            while began.elapsed() < Duration::from_secs(8) {
                c.batch_execute(
                    "INSERT INTO big SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 20000) g",
                )?;
                written += 20000;
            }
            Ok(())
        })();
        self.note(format!(
            "filler: hog branch {name} wrote {written} rows in {:.1} s: {}",
            began.elapsed().as_secs_f64(),
            match result {
                Ok(()) => "stopped at 8 s".to_string(),
                Err(e) => describe(&e),
            }
        ));
        name
    }

    // --- afterwards ----------------------------------------------------------------

    /// Settles the home as a user would and checks every invariant;
    /// returns what broke.
    fn settle_and_check(&self, proxy_port: u16) -> Vec<String> {
        let h = self.h;
        let mut failures: Vec<String> = Vec::new();
        let mut check = |what: &str, f: &mut dyn FnMut()| {
            if let Err(e) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
                let msg = panic_text(&e);
                self.note(format!("INVARIANT BROKEN: {what}: {msg}"));
                failures.push(format!("{what}: {msg}"));
            }
        };

        // The daemon goes as an operator stops it: its proxy flushes the
        // audit log.
        drop(lock(&self.serve).take());
        *lock(&self.api) = None;
        check(
            "the proxy's port is free once the daemon is gone",
            &mut || {
                assert!(
                    wait_until(Duration::from_secs(10), || port_is_free(proxy_port)),
                    "port {proxy_port} is still held"
                );
            },
        );

        let doctor = h.run(&["--json", "doctor"]);
        self.note(format!(
            "doctor (before any command reconciled): {}",
            summarize_doctor(&doctor.stdout)
        ));
        let listed = h.run(&["--json", "branch", "list"]);
        let repaired = String::from_utf8_lossy(&listed.stderr).into_owned();
        self.note(format!(
            "first command after the run (reconciles): exit {}; {}",
            listed.status,
            if repaired.trim().is_empty() {
                "nothing repaired".to_string()
            } else {
                repaired.trim().replace('\n', " | ")
            }
        ));

        check("the source starts", &mut || {
            let out = h.json(&["source", "start", SOURCE]);
            assert_eq!(out["status"], "running", "{out:#}");
        });
        let names: Vec<String> = h
            .json(&["branch", "list"])
            .as_array()
            .expect("list")
            .iter()
            .map(|b| b["name"].as_str().expect("name").to_string())
            .collect();
        self.note(format!("surviving branches: {}", names.join(", ")));
        // What doctor tells a user to do: a branch whose data directory is
        // gone (a reset that failed after removing it, on the full pool) is
        // rebuilt from its snapshot with `branch reset`.
        for name in &names {
            if !h.pool_dir().join("branches").join(name).exists() {
                self.count("settle: branch reset of a branch without data".into());
                check(&format!("branch {name}, without data, resets"), &mut || {
                    let out = h.json(&["branch", "reset", name]);
                    self.note(format!(
                        "branch {name} had no data directory (doctor: branch reset): reset, {}",
                        out["status"]
                    ));
                    if let Some(b) = lock(&self.model).branches.get_mut(name) {
                        b.definite.clear();
                    }
                });
            }
        }
        for name in &names {
            check(&format!("branch {name} starts"), &mut || {
                let out = h.json(&["branch", "start", name]);
                assert_eq!(out["status"], "running", "{out:#}");
            });
        }

        check("the home holds exactly what meta.db says", &mut || {
            h.assert_settled()
        });
        check("no stray pgfork process, mount or loop device", &mut || {
            self.check_no_strays()
        });
        check("socket files belong to running servers", &mut || {
            self.check_sockets()
        });
        check("control groups belong to running servers", &mut || {
            self.check_cgroups()
        });
        check("doctor reports no failure", &mut || {
            let out = h.run(&["--json", "doctor"]);
            let v: Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
            let failed: Vec<&Value> = v["checks"]
                .as_array()
                .expect("checks")
                .iter()
                .filter(|c| c["status"] == "fail")
                .collect();
            assert!(failed.is_empty(), "{failed:#?}");
        });

        let source = h.json(&["source", "info", SOURCE]);
        check("pg_amcheck of the source", &mut || {
            let socket = PathBuf::from(source["socket_dir"].as_str().expect("socket_dir"));
            amcheck(&socket, port_of(&source)).unwrap_or_else(|e| panic!("{e}"));
        });
        for name in &names {
            check(&format!("pg_amcheck of branch {name}"), &mut || {
                let port = port_of(&h.branch(name));
                amcheck(&h.branch_socket(name), port).unwrap_or_else(|e| panic!("{e}"));
            });
        }

        check(
            "the ledger holds exactly the acknowledged commits",
            &mut || self.check_ledger(),
        );
        check(
            "the source's notes: every promoted one, no other",
            &mut || self.check_source_notes(),
        );
        check("branches the test knows exist, and no other", &mut || {
            self.check_existence(&names)
        });
        for name in &names {
            check(
                &format!("branch {name} answers and holds its notes"),
                &mut || self.check_branch_notes(name),
            );
        }
        check("audit --verify", &mut || {
            let v = h.json(&["audit", "--verify"]);
            assert_eq!(v["ok"], true, "{v:#}");
            let statements = self.agent_statements.load(Ordering::SeqCst);
            if statements > 0 {
                assert!(
                    v["records"].as_u64().is_some_and(|r| r > 0),
                    "{statements} agent statements, yet no audit record: {v:#}"
                );
            }
            self.note(format!(
                "audit: {} records verify ({statements} agent statements acknowledged)",
                v["records"]
            ));
        });
        for a in lock(&self.anomalies).iter() {
            failures.push(format!("during the run: {a}"));
        }
        failures
    }

    fn check_no_strays(&self) {
        let root = self.h.root.to_string_lossy().into_owned();
        let me = std::process::id() as i32;
        let servers: BTreeSet<i32> = processes_under(&self.h.root)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let mut strays = Vec::new();
        for entry in fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == me || servers.contains(&pid) || !is_running(pid) {
                continue;
            }
            let cmdline = fs::read(entry.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            if cmdline.contains(&root) {
                strays.push(format!("{pid} {}: {cmdline}", comm(pid)));
            }
        }
        assert!(
            strays.is_empty(),
            "processes still at work on the home: {strays:#?}"
        );
        let mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|mp| Path::new(mp).starts_with(&self.h.root))
            .collect();
        let pool = self.h.pool_dir().to_string_lossy().into_owned();
        assert_eq!(mounts, vec![pool], "mounts under the home");
        let image = self.h.root.join("pool.img");
        let loops = run_tool(Command::new("losetup").arg("-j").arg(&image));
        assert_eq!(
            loops.lines().filter(|l| !l.trim().is_empty()).count(),
            1,
            "loop devices on {}: {loops}",
            image.display()
        );
    }

    fn check_sockets(&self) {
        let mut served: BTreeSet<(PathBuf, u16)> = BTreeSet::new();
        let source = self.h.json(&["source", "info", SOURCE]);
        if source["status"] == "running" {
            served.insert((
                PathBuf::from(source["socket_dir"].as_str().expect("socket_dir")),
                port_of(&source),
            ));
        }
        for b in self.h.json(&["branch", "list"]).as_array().expect("list") {
            if b["status"] == "running" {
                let name = b["name"].as_str().expect("name");
                served.insert((self.h.branch_socket(name), port_of(b)));
            }
        }
        let run = self.h.root.join("run");
        for dir in entries(&run) {
            for file in entries(&run.join(&dir)) {
                let Some(port) = file
                    .strip_prefix(".s.PGSQL.")
                    .filter(|p| !p.ends_with(".lock"))
                else {
                    continue;
                };
                let port: u16 = port.parse().expect("socket port");
                assert!(
                    served.contains(&(run.join(&dir), port)),
                    "run/{dir}/{file} belongs to no running server"
                );
            }
        }
    }

    /// Where pgfork runs servers in control groups (compute limits): each
    /// running server sits in its own group, the source under the home's
    /// `pgfork-HOMEID-sources` and each branch under `pgfork-HOMEID-branches`,
    /// and no group is left of a server that is gone.
    fn check_cgroups(&self) {
        let source = self.h.json(&["source", "info", SOURCE]);
        let pid = source["pid"].as_i64().expect("the source runs") as i32;
        // `.../pgfork-HOMEID-sources/SOURCE` gives the hierarchy's
        // `.../pgfork-HOMEID` prefix, to which `-sources` and `-branches` add.
        let mut roots: BTreeSet<PathBuf> = BTreeSet::new();
        for (mount, rel) in cgroups_of(pid) {
            let suffix = format!("-sources/{SOURCE}");
            if let Some(prefix) = rel.strip_suffix(&suffix)
                && prefix
                    .rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with("pgfork-"))
            {
                roots.insert(mount.join(prefix.trim_start_matches('/')));
            }
        }
        if roots.is_empty() {
            self.note("control groups: pgfork runs no server in one here".into());
            return;
        }
        let running: BTreeMap<String, i32> = self
            .h
            .json(&["branch", "list"])
            .as_array()
            .expect("list")
            .iter()
            .filter(|b| b["status"] == "running")
            .map(|b| {
                (
                    b["name"].as_str().expect("name").to_string(),
                    b["pid"].as_i64().expect("pid") as i32,
                )
            })
            .collect();
        let dirs = |d: &Path| -> BTreeSet<String> {
            entries(d)
                .into_iter()
                .filter(|e| d.join(e).is_dir())
                .collect()
        };
        let names: BTreeSet<String> = running.keys().cloned().collect();
        let with = |root: &Path, kind: &str| {
            let mut p = root.as_os_str().to_owned();
            p.push(format!("-{kind}"));
            PathBuf::from(p)
        };
        for root in &roots {
            let branches = with(root, "branches");
            assert_eq!(
                dirs(&branches),
                names,
                "groups in {} vs the running branches",
                branches.display()
            );
            let sources = with(root, "sources");
            assert_eq!(
                dirs(&sources),
                BTreeSet::from([SOURCE.to_string()]),
                "groups in {}",
                sources.display()
            );
        }
        for (name, pid) in &running {
            let suffix = format!("-branches/{name}");
            assert!(
                cgroups_of(*pid)
                    .iter()
                    .any(|(_, rel)| rel.ends_with(&suffix)),
                "the postmaster of branch {name} is in none of its groups: {:?}",
                cgroups_of(*pid)
            );
        }
        self.note(format!(
            "control groups: {} branch groups and the source's beside {}",
            names.len(),
            roots
                .iter()
                .map(|t| t.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    fn check_ledger(&self) {
        let mut c = connect(&self.source_dsn);
        let rows: Vec<(i64, i64)> = c
            .query("SELECT seq, val FROM ledger ORDER BY seq", &[])
            .expect("read the ledger")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let broken = scalar(
            &mut c,
            "SELECT count(*) FROM (
               SELECT seq, chain, lag(seq) OVER w AS prev_seq,
                      md5(coalesce(lag(chain) OVER w, 'genesis') || ':' || seq::text || ':' || val::text) AS expected
                 FROM ledger WINDOW w AS (ORDER BY seq)) t
              WHERE chain <> expected OR seq <> coalesce(prev_seq, 0) + 1",
        );
        let l = lock(&self.ledger);
        let present: BTreeMap<i64, i64> = rows.iter().copied().collect();
        let missing: Vec<(&i64, &i64)> = l
            .acked
            .iter()
            .filter(|(s, v)| present.get(s) != Some(v))
            .collect();
        let foreign: Vec<&(i64, i64)> = rows.iter().filter(|r| !l.sent.contains(r)).collect();
        let refused: Vec<&(i64, i64)> = rows
            .iter()
            .filter(|r| l.refused.contains(r) && !l.acked.contains_key(&r.0))
            .collect();
        let unacked = rows
            .iter()
            .filter(|(s, _)| !l.acked.contains_key(s))
            .count();
        self.note(format!(
            "ledger: {} rows, {} acknowledged, {} in doubt ({} of them kept), {} refused, {} reconnects, {} source starts",
            rows.len(),
            l.acked.len(),
            l.in_doubt.len(),
            unacked,
            l.refused.len(),
            l.reconnects,
            l.source_starts
        ));
        assert_eq!(
            broken, 0,
            "{broken} ledger rows break the checksum chain or the sequence"
        );
        assert!(
            missing.is_empty(),
            "acknowledged commits missing (seq, val): {missing:?}"
        );
        assert!(foreign.is_empty(), "rows nobody wrote: {foreign:?}");
        assert!(
            refused.is_empty(),
            "commits the server refused are there: {refused:?}"
        );
        assert!(
            rows.iter()
                .filter(|(s, _)| !l.acked.contains_key(s))
                .all(|r| l.in_doubt.contains(r)),
            "unacknowledged rows that were never in doubt"
        );
        assert!(
            l.acked.len() > 10,
            "the writer hardly wrote: {} commits",
            l.acked.len()
        );
    }

    fn check_source_notes(&self) {
        let mut c = connect(&self.source_dsn);
        let notes = note_ids(&mut c);
        let m = lock(&self.model);
        let missing: Vec<(&String, &String)> = m
            .required
            .iter()
            .filter(|(id, _)| !notes.contains(*id))
            .collect();
        let foreign: Vec<&String> = notes.iter().filter(|n| !m.written.contains(*n)).collect();
        self.note(format!(
            "source: {} notes, {} required by acknowledged promotes",
            notes.len(),
            m.required.len()
        ));
        assert!(
            missing.is_empty(),
            "notes of acknowledged promotes missing (note, branch): {missing:?}"
        );
        assert!(
            foreign.is_empty(),
            "notes no branch wrote (a dry-run write kept?): {foreign:?}"
        );
    }

    fn check_existence(&self, names: &[String]) {
        let m = lock(&self.model);
        let exists: BTreeSet<&String> = names.iter().collect();
        let lost: Vec<&String> = m
            .branches
            .iter()
            .filter(|(n, b)| b.created && !b.ttl && b.delete_attempts == 0 && !exists.contains(n))
            .map(|(n, _)| n)
            .collect();
        let undead: Vec<&String> = m
            .branches
            .iter()
            .filter(|(n, b)| b.deleted && exists.contains(n))
            .map(|(n, _)| n)
            .collect();
        let unknown: Vec<&&String> = exists
            .iter()
            .filter(|n| !m.branches.contains_key(**n))
            .collect();
        assert!(
            lost.is_empty(),
            "acknowledged branches that are gone: {lost:?}"
        );
        assert!(
            undead.is_empty(),
            "acknowledged deletes that are still there: {undead:?}"
        );
        assert!(unknown.is_empty(), "branches nobody made: {unknown:?}");
    }

    fn check_branch_notes(&self, name: &str) {
        let external = lock(&self.model)
            .branches
            .get(name)
            .is_some_and(|b| b.external);
        // The proxy's branch has no TCP listener: read it over its socket.
        let mut c = if external {
            self.h.branch_superuser(name, SOURCE)
        } else {
            connect(&self.h.branch_dsn(name))
        };
        assert_eq!(scalar(&mut c, "SELECT 1"), 1);
        let notes = note_ids(&mut c);
        let m = lock(&self.model);
        let Some(b) = m.branches.get(name) else {
            return; // Reported by the existence check.
        };
        let missing: Vec<&String> = b
            .definite
            .iter()
            .filter(|n| !b.tainted && !notes.contains(*n))
            .collect();
        let foreign: Vec<&String> = notes.iter().filter(|n| !m.written.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "acknowledged notes missing: {missing:?}"
        );
        assert!(foreign.is_empty(), "notes nobody wrote: {foreign:?}");
    }

    fn summary(&self) {
        let stats = lock(&self.stats);
        let mut text = String::from("\n=== chaos run summary ===\n");
        for (k, v) in stats.iter() {
            text.push_str(&format!("{v:6}  {k}\n"));
        }
        let m = lock(&self.model);
        text.push_str(&format!(
            "branch names used: {}; notes written: {}; agent statements: {}; seed {}\n",
            m.branches.len(),
            m.written.len(),
            self.agent_statements.load(Ordering::SeqCst),
            self.seed
        ));
        eprintln!("{text}");
    }
}

/// Connects with a short timeout and a statement limit, so that a sick
/// server fails the operation instead of hanging the thread.
fn quick_connect(dsn: &str) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = dsn.parse().expect("DSN parses");
    config
        .connect_timeout(Duration::from_secs(5))
        .options("-c statement_timeout=30s");
    config.connect(postgres::NoTls)
}

fn note_ids(c: &mut postgres::Client) -> BTreeSet<String> {
    c.query("SELECT id FROM notes", &[])
        .expect("read notes")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn agent_secret(h: &TestHome, name: &str, policy: &str) -> String {
    let out = h.json(&[
        "agent", "create", name, "--source", SOURCE, "--policy", policy,
    ]);
    out["secret"].as_str().expect("secret").to_string()
}

fn leaf(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Postmasters working under `root`, as (pid, kind, data directory), kind
/// being `source`, `branch` or `other` (seal and view servers).
fn postmasters(root: &Path) -> Vec<(i32, String, PathBuf)> {
    let sources = root.join("pool/sources");
    let branches = root.join("pool/branches");
    processes_under(root)
        .into_iter()
        .filter(|(pid, _)| {
            let ppid = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rfind(')')
                        .and_then(|i| s[i + 1..].split_whitespace().nth(1).map(str::to_string))
                })
                .and_then(|p| p.parse::<i32>().ok());
            comm(*pid) == "postgres" && ppid.is_some_and(|pp| comm(pp) != "postgres")
        })
        .map(|(pid, cwd)| {
            let kind = if cwd.starts_with(&sources) {
                "source"
            } else if cwd.starts_with(&branches) {
                "branch"
            } else {
                "other"
            };
            (pid, kind.to_string(), cwd)
        })
        .collect()
}

/// The process listening on 127.0.0.1:`port` (or any address), with its
/// working directory.
fn listener_of(port: u16) -> Option<(i32, PathBuf)> {
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit_once(':')?.1;
        (u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == "0A")
            .then(|| f.get(9).map(|i| i.to_string()))
            .flatten()
    })?;
    let wanted = format!("socket:[{inode}]");
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == wanted) {
                let cwd = fs::read_link(entry.path().join("cwd")).unwrap_or_default();
                return Some((pid, cwd));
            }
        }
    }
    None
}

/// The control groups of process `pid`, as (mount point of the hierarchy,
/// path inside it), for the hierarchies mounted here.
fn cgroups_of(pid: i32) -> Vec<(PathBuf, String)> {
    let mounts: Vec<(PathBuf, String, BTreeSet<String>)> =
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let mut r = right.split(' ');
                let fstype = r.next()?.to_string();
                let options: BTreeSet<String> = r.nth(1)?.split(',').map(str::to_string).collect();
                let mount = PathBuf::from(left.split(' ').nth(4)?);
                (fstype == "cgroup" || fstype == "cgroup2").then_some((mount, fstype, options))
            })
            .collect();
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, rel) = (parts.next()?, parts.next()?, parts.next()?);
            let mount = mounts.iter().find(|(_, fstype, options)| {
                if controllers.is_empty() {
                    fstype == "cgroup2"
                } else {
                    fstype == "cgroup" && controllers.split(',').all(|c| options.contains(c))
                }
            })?;
            Some((mount.0.clone(), rel.to_string()))
        })
        .collect()
}

/// (available, total) bytes of the filesystem of `dir`.
fn space(dir: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statvfs(3) into a zeroed struct we own.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0, "statvfs");
        (
            s.f_bavail as u64 * s.f_frsize as u64,
            s.f_blocks as u64 * s.f_frsize as u64,
        )
    }
}

/// Allocates every free byte of the filesystem of `dir` in filler files.
fn fill(dir: &Path) -> Vec<PathBuf> {
    use std::os::fd::AsRawFd;
    let mut files = Vec::new();
    for i in 0..32 {
        let (free, _) = space(dir);
        if free < 64 << 10 {
            break;
        }
        let path = dir.join(format!(".chaos-filler-{i}"));
        // A full filesystem may have no room left for one more inode.
        let Ok(f) = fs::File::create(&path) else {
            break;
        };
        files.push(path);
        let mut len = free;
        // SAFETY: fallocate(2) on a file we just made.
        while len >= 64 << 10 && unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as i64) } != 0 {
            len /= 2;
        }
    }
    files
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

fn summarize_doctor(stdout: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(stdout) else {
        return String::from_utf8_lossy(stdout).into_owned();
    };
    v["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] != "ok")
        .map(|c| format!("{} {}: {}", c["status"], c["name"], c["detail"]))
        .collect::<Vec<_>>()
        .join(" | ")
}
