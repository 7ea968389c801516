//! Running `pgfork` itself, as a user would, for the timed operations: a
//! figure must include process start, opening meta.db and the reconcile
//! that every command runs, not only the engine call.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::conn::{AppConn, PATIENCE, first_query};

/// Label on every branch the benchmark makes, so that leftovers of an
/// interrupted run are found and deleted by the next one.
pub const BENCH_LABEL: &str = "pgfork-bench=1";

/// The `pgfork` binary that is running, on the same home.
pub struct Pgfork {
    exe: PathBuf,
    home: PathBuf,
}

/// What `branch create --json` printed, plus our own stopwatch.
#[derive(Debug, Clone)]
pub struct Created {
    /// Branch name.
    pub name: String,
    /// Postmaster pid (leads the branch's process group).
    pub pid: Option<i32>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Command start to the first successful `SELECT 1` on a new connection.
    pub to_query: Duration,
    /// Failed connection attempts before that (expected: 0).
    pub retries: u32,
    /// The engine's own split.
    pub timings: EngineTimings,
}

/// `timings` of `branch create --json`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct EngineTimings {
    /// Cloning the snapshot.
    pub clone_ms: u64,
    /// Starting the postmaster until it accepted a connection.
    pub start_ms: u64,
    /// The whole engine call.
    pub total_ms: u64,
}

#[derive(Deserialize)]
struct CreatedJson {
    dsn: String,
    pid: Option<i32>,
    data_dir: PathBuf,
    timings: Option<EngineTimings>,
}

impl Pgfork {
    /// This very binary, pointed at `home`.
    pub fn new(home: &Path) -> Result<Pgfork> {
        Ok(Pgfork {
            exe: std::env::current_exe().context("find the pgfork binary")?,
            home: home.to_path_buf(),
        })
    }

    /// Runs `pgfork --home HOME --json ARGS` and returns its JSON output.
    pub fn run(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = Command::new(&self.exe)
            .arg("--home")
            .arg(&self.home)
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", self.exe.display()))?;
        json_output(&out, args)
    }

    /// Creates a branch of `from` and times it from spawning the command to
    /// the first successful query on a new connection to the DSN it printed.
    pub fn create_branch(&self, name: &str, from: &str) -> Result<Created> {
        let began = Instant::now();
        let value = self.run(&[
            "branch",
            "create",
            name,
            "--from",
            from,
            "--label",
            BENCH_LABEL,
        ])?;
        let created: CreatedJson =
            serde_json::from_value(value).context("read the output of branch create")?;
        let conn = AppConn::parse(&created.dsn)?;
        let retries = first_query(&conn, PATIENCE)
            .with_context(|| format!("first query on branch {name}"))?;
        Ok(Created {
            name: name.to_string(),
            pid: created.pid,
            data_dir: created.data_dir,
            to_query: began.elapsed(),
            retries,
            timings: created.timings.unwrap_or_default(),
        })
    }

    /// Deletes a branch; returns how long the command took.
    pub fn delete_branch(&self, name: &str) -> Result<Duration> {
        let began = Instant::now();
        self.run(&["branch", "delete", name])?;
        Ok(began.elapsed())
    }
}

/// The JSON a `pgfork --json ARGS` run printed, or its error (the JSON
/// error's message, else its stderr) if it failed.
pub fn json_output(out: &std::process::Output, args: &[&str]) -> Result<serde_json::Value> {
    let value: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() {
        let message = value
            .as_ref()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        bail!("pgfork {}: {message}", args.join(" "));
    }
    value.with_context(|| format!("pgfork {} printed no JSON", args.join(" ")))
}
