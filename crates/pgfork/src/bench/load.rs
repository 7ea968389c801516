//! Bench sources: one local source per pgbench scale, loaded once with
//! `pgbench -i` and reused while it holds that scale.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pgfork_engine::{Engine, SourceInfo};

use super::conn::AppConn;
use super::progress::BenchProgress;
use super::stats::millis;

/// The source the benchmark uses for `scale`.
pub fn source_name(scale: u32) -> String {
    format!("bench-s{scale}")
}

/// Whether `name` is one of the benchmark's sources.
pub fn is_bench_source(name: &str) -> bool {
    name.strip_prefix("bench-s")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// A bench source ready to be snapshotted.
pub struct Loaded {
    /// The source.
    pub info: SourceInfo,
    /// Its application connection.
    pub app: AppConn,
    /// Whether it already held this scale.
    pub reused: bool,
    /// Time of `pgbench -i`, when run.
    pub load_ms: Option<f64>,
    /// Size of the application database.
    pub database_bytes: u64,
}

/// Creates (or reuses) the source for `scale` and loads it if needed. A
/// source it creates is added to `created` at once, so that it is cleaned
/// up even if loading fails.
pub fn ensure(
    engine: &mut Engine,
    scale: u32,
    progress: &BenchProgress,
    created: &mut Vec<String>,
) -> Result<Loaded> {
    let name = source_name(scale);
    let exists = engine.source_list()?.iter().any(|s| s.name == name);
    let info = if exists {
        engine.source_start(&name)?
    } else {
        progress.step(format!("creating source {name}"));
        created.push(name.clone());
        engine.source_create(&name)?
    };
    let app = AppConn::parse(&info.dsn_with_password().context("source DSN")?)?;
    let reused = loaded_scale(&app) == Some(scale);
    let load_ms = if reused {
        None
    } else {
        let began = Instant::now();
        pgbench_init(engine, &app, scale, progress)?;
        Some(millis(began.elapsed()))
    };
    let database_bytes = database_size(&app)?;
    Ok(Loaded {
        info,
        app,
        reused,
        load_ms,
        database_bytes,
    })
}

/// The scale a database holds, if `pgbench -i` completed in it (the
/// primary keys are its last step).
fn loaded_scale(app: &AppConn) -> Option<u32> {
    let mut client = app.connect().ok()?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pgbench_branches)::int,
                    to_regclass('pgbench_accounts_pkey') IS NOT NULL",
            &[],
        )
        .ok()?;
    let (branches, keyed): (i32, bool) = (row.get(0), row.get(1));
    keyed.then_some(branches as u32)
}

fn database_size(app: &AppConn) -> Result<u64> {
    let mut client = app.connect()?;
    let size: i64 = client
        .query_one("SELECT pg_database_size(current_database())", &[])?
        .get(0);
    Ok(size as u64)
}

/// `pgbench -i -s SCALE` as the application role. Its progress lines go to
/// the spinner; the tail is kept for the error message.
fn pgbench_init(
    engine: &Engine,
    app: &AppConn,
    scale: u32,
    progress: &BenchProgress,
) -> Result<()> {
    let bins = &engine.config().bins;
    if !bins.has("pgbench") {
        bail!(
            "pgbench not found in {}: install the PostgreSQL client tools (postgresql-client, postgresql-contrib)",
            bins.dir.display()
        );
    }
    let mut cmd = Command::new(bins.tool("pgbench"));
    cmd.args(["-i", "-s", &scale.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    app.apply_env(&mut cmd);
    progress.step(format!("pgbench -i -s {scale}"));
    let mut child = cmd.spawn().context("run pgbench -i")?;
    let stderr = child.stderr.take().expect("piped");
    let mut tail: Vec<String> = Vec::new();
    // pgbench ends progress lines with '\r' on a terminal and '\n' otherwise.
    for chunk in BufReader::new(stderr).split(b'\n') {
        let chunk = chunk.context("read pgbench output")?;
        for line in String::from_utf8_lossy(&chunk).split('\r') {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            progress.step(format!("pgbench -i -s {scale}: {line}"));
            tail.push(line.to_string());
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().context("wait for pgbench -i")?;
    if !status.success() {
        bail!(
            "pgbench -i -s {scale} failed ({status}):\n{}",
            tail.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_source_names() {
        assert_eq!(source_name(500), "bench-s500");
        assert!(is_bench_source("bench-s10"));
        assert!(!is_bench_source("bench-s"));
        assert!(!is_bench_source("bench-shop"));
        assert!(!is_bench_source("shop"));
    }
}
