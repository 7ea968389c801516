//! `pgfork bench api`: branch creation over the HTTP API against the CLI,
//! in the same run on the same snapshot, and a burst of concurrent creates.
//!
//! - Sequential: N creates by `pgfork branch create` and N by `POST
//!   /v1/branches`, interleaved (so that drift in the machine's load hits
//!   both alike), each timed from the start of the command or request to
//!   the first successful query on a new connection to the DSN it returned.
//!   Each branch is deleted (untimed) before the next create, so every
//!   create sees the same number of live branches.
//! - Concurrent: M creates sent at once; each is timed to its response, and
//!   the burst from the first request to the last response gives the
//!   throughput.
//!
//! The daemon is this binary's own `pgfork serve`, started on a free
//! loopback port for the run and stopped after it.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pgfork_engine::Engine;
use serde::Serialize;

use super::child::{BENCH_LABEL, Pgfork};
use super::conn::{AppConn, PATIENCE, first_query};
use super::stats::{Summary, millis};
use crate::cli::BenchApiArgs;
use crate::output;

/// The source the benchmark branches (made if missing, kept if it existed).
const SOURCE: &str = "bench-api";

/// The report.
#[derive(Debug, Serialize)]
pub struct ApiReport {
    /// Driver of the pool.
    pub driver: String,
    /// Snapshot branched.
    pub snapshot: String,
    /// Load averages (1 min) before and after: was the machine quiet?
    pub load_before: f64,
    /// See `load_before`.
    pub load_after: f64,
    /// CLI creates, command start to first query.
    pub cli_to_query: Summary,
    /// HTTP creates, request start to first query.
    pub http_to_query: Summary,
    /// HTTP creates, request start to response.
    pub http_to_response: Summary,
    /// HTTP p50 over CLI p50, minus one, in percent (target: at most 10).
    pub http_vs_cli_p50_percent: f64,
    /// Creates sent at once.
    pub concurrent: usize,
    /// How many of them succeeded.
    pub concurrent_ok: usize,
    /// Their latencies, request to response (successes only).
    pub concurrent_latency: Option<Summary>,
    /// From the first request to the last response.
    pub concurrent_wall_ms: f64,
    /// Successful creates per second over that time.
    pub concurrent_per_second: f64,
    /// Error codes of the failures, if any.
    pub concurrent_errors: Vec<String>,
}

/// The 1-minute load average.
pub(super) fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// This binary's `pgfork serve`, killed on drop.
pub(super) struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Daemon {
    /// Starts `pgfork serve` on `home` on a free loopback port.
    pub fn start(home: &std::path::Path) -> Result<Daemon> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--home")
            .arg(home)
            .args(["serve", "--listen", "127.0.0.1:0", "--idle-stop", "0"])
            .args(["--reap-every", "1h"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start pgfork serve")?;
        let mut stderr = std::io::BufReader::new(child.stderr.take().context("stderr")?);
        let mut line = String::new();
        stderr.read_line(&mut line)?;
        let Some(url) = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        else {
            let _ = child.kill();
            bail!("pgfork serve did not start: {line}");
        };
        let url = url.to_string();
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Ok(Daemon { child, url })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

struct Api {
    http: reqwest::blocking::Client,
    url: String,
    token: String,
}

impl Api {
    /// Creates a branch; the response time and the DSN, or the error code.
    fn create(&self, name: &str, from: &str) -> Result<(Duration, String), String> {
        let (key, value) = BENCH_LABEL.split_once('=').expect("KEY=VALUE");
        let began = Instant::now();
        let resp = self
            .http
            .post(format!("{}/v1/branches", self.url))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "name": name, "from": from, "labels": { key: value } }))
            .send()
            .map_err(|e| format!("request: {e}"))?;
        let took = began.elapsed();
        let status = resp.status();
        let body: serde_json::Value = resp.json().map_err(|e| format!("response: {e}"))?;
        if status != reqwest::StatusCode::CREATED {
            return Err(body["error"]["code"].as_str().unwrap_or("?").to_string());
        }
        Ok((took, body["dsn"].as_str().unwrap_or_default().to_string()))
    }
}

/// The snapshot to branch: the latest of `source`, made with a little
/// data if the source is new. Returns it and whether we made the source.
pub(super) fn prepare(engine: &mut Engine, source: &str) -> Result<(String, bool)> {
    let made = match engine.source_info(source) {
        Ok(_) => false,
        Err(e) if e.is_not_found() => {
            let info = engine.source_create(source)?;
            let conn = AppConn::parse(&info.dsn_with_password().unwrap_or_default())?;
            conn.connect()?.batch_execute(
                "CREATE TABLE accounts (id bigint PRIMARY KEY, balance numeric NOT NULL, note text);
                 INSERT INTO accounts SELECT g, g * 10, md5(g::text) FROM generate_series(1, 100000) g;",
            )?;
            true
        }
        Err(e) => return Err(e.into()),
    };
    let snapshot = engine.snapshot_create(source)?.id;
    Ok((snapshot, made))
}

/// Runs the benchmark on the home `engine` has open.
pub fn run(mut engine: Engine, args: BenchApiArgs, json: bool) -> Result<()> {
    if args.creates == 0 {
        bail!("--creates must be at least 1");
    }
    let Some(token) = args.token.clone() else {
        bail!(
            "the API token is needed: pass --token or set PGFORK_TOKEN (pgfork init printed it; \
             `pgfork token rotate` makes a new one)"
        );
    };
    let config = engine.config().clone();
    let room = usize::from(config.ports.1 - config.ports.0);
    if room < args.concurrent + 5 {
        bail!(
            "the port range {}-{} is too small for {} branches at once: pgfork init --ports MIN-MAX",
            config.ports.0,
            config.ports.1,
            args.concurrent
        );
    }
    if let Some(max) = config.max_branches_per_source
        && (max as usize) < args.concurrent + 2
    {
        bail!(
            "the quota of {max} branches per source is below --concurrent; raise it (pgfork init --max-branches-per-source 0)"
        );
    }
    let home = engine.home().root().to_path_buf();
    let load_before = loadavg();
    let (snapshot, made_source) = prepare(&mut engine, SOURCE)?;
    let result = measure(&mut engine, &home, &token, &snapshot, &args);
    // Whatever happened, no bench branch is left.
    let (key, value) = BENCH_LABEL.split_once('=').expect("KEY=VALUE");
    let labels = std::collections::BTreeMap::from([(key.to_string(), value.to_string())]);
    for b in engine.branch_list(&labels).unwrap_or_default() {
        let _ = engine.branch_delete(&b.name, true);
    }
    if made_source && !args.keep_source {
        engine.source_delete(SOURCE, true)?;
    }
    let mut report = result?;
    report.driver = config.driver.name().to_string();
    report.load_before = load_before;
    report.load_after = loadavg();
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    if json {
        output::json(&report);
    } else {
        print(&report);
    }
    Ok(())
}

fn measure(
    engine: &mut Engine,
    home: &std::path::Path,
    token: &str,
    snapshot: &str,
    args: &BenchApiArgs,
) -> Result<ApiReport> {
    let daemon = Daemon::start(home)?;
    let api = Api {
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(600))
            .pool_max_idle_per_host(args.concurrent)
            .build()?,
        url: daemon.url.clone(),
        token: token.to_string(),
    };
    let cli = Pgfork::new(home)?;
    // One untimed create of each kind first: caches, the daemon's pool.
    for (i, http) in [(0, false), (1, true)] {
        let name = format!("bench-api-warm{i}");
        if http {
            api.create(&name, snapshot)
                .map_err(|c| anyhow::anyhow!("HTTP create failed: {c}"))?;
        } else {
            cli.create_branch(&name, snapshot)?;
        }
        engine.branch_delete(&name, true)?;
    }

    let mut cli_ms = Vec::new();
    let mut http_ms = Vec::new();
    let mut http_resp_ms = Vec::new();
    for i in 0..args.creates {
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for http in order {
            let name = format!("bench-api-{}{i}", if http { "h" } else { "c" });
            if http {
                let began = Instant::now();
                let (resp, dsn) = api
                    .create(&name, snapshot)
                    .map_err(|c| anyhow::anyhow!("HTTP create {name} failed: {c}"))?;
                first_query(&AppConn::parse(&dsn)?, PATIENCE)?;
                http_ms.push(millis(began.elapsed()));
                http_resp_ms.push(millis(resp));
            } else {
                cli_ms.push(millis(cli.create_branch(&name, snapshot)?.to_query));
            }
            engine.branch_delete(&name, true)?;
        }
    }

    // The burst: every thread waits at the barrier, then sends.
    let n = args.concurrent;
    let barrier = Arc::new(Barrier::new(n + 1));
    let api = Arc::new(api);
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, api, snapshot) = (barrier.clone(), api.clone(), snapshot.to_string());
            std::thread::spawn(move || {
                barrier.wait();
                api.create(&format!("bench-api-x{i}"), &snapshot)
                    .map(|(took, _)| took)
            })
        })
        .collect();
    barrier.wait();
    let began = Instant::now();
    let results: Vec<Result<Duration, String>> = workers
        .into_iter()
        .map(|w| w.join().unwrap_or_else(|_| Err("panicked".into())))
        .collect();
    let wall = began.elapsed();
    drop(daemon);
    let ok: Vec<f64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|d| millis(*d)))
        .collect();
    let mut errors: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    errors.sort();

    let cli_s = Summary::of_ms(&cli_ms).expect("samples");
    let http_s = Summary::of_ms(&http_ms).expect("samples");
    Ok(ApiReport {
        driver: String::new(),
        snapshot: snapshot.to_string(),
        load_before: 0.0,
        load_after: 0.0,
        http_vs_cli_p50_percent: ((http_s.p50_ms / cli_s.p50_ms - 1.0) * 1000.0).round() / 10.0,
        cli_to_query: cli_s,
        http_to_query: http_s,
        http_to_response: Summary::of_ms(&http_resp_ms).expect("samples"),
        concurrent: n,
        concurrent_ok: ok.len(),
        concurrent_latency: Summary::of_ms(&ok),
        concurrent_wall_ms: millis(wall),
        concurrent_per_second: ((ok.len() as f64 / wall.as_secs_f64()) * 100.0).round() / 100.0,
        concurrent_errors: errors,
    })
}

fn print(r: &ApiReport) {
    println!(
        "pgfork bench api: driver {}, snapshot {}, load average {:.2} before, {:.2} after",
        r.driver, r.snapshot, r.load_before, r.load_after
    );
    println!();
    println!(
        "branch create to first query ({} each, interleaved)",
        r.cli_to_query.n
    );
    output::table(
        &["via", "p50 ms", "p99 ms", "min ms", "max ms"],
        [
            ("CLI", &r.cli_to_query),
            ("HTTP", &r.http_to_query),
            ("HTTP (to response)", &r.http_to_response),
        ]
        .iter()
        .map(|(via, s)| {
            vec![
                via.to_string(),
                format!("{:.1}", s.p50_ms),
                format!("{:.1}", s.p99_ms),
                format!("{:.1}", s.min_ms),
                format!("{:.1}", s.max_ms),
            ]
        })
        .collect(),
    );
    println!(
        "HTTP p50 vs CLI p50: {:+.1} % (target: at most +10 %)",
        r.http_vs_cli_p50_percent
    );
    println!();
    println!(
        "{} creates at once: {} succeeded in {:.0} ms, {:.2} branches/s",
        r.concurrent, r.concurrent_ok, r.concurrent_wall_ms, r.concurrent_per_second
    );
    if let Some(s) = &r.concurrent_latency {
        println!(
            "latency to response: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            s.p50_ms, s.p99_ms, s.max_ms
        );
    }
    if !r.concurrent_errors.is_empty() {
        println!("failures: {}", r.concurrent_errors.join(", "));
    }
}
