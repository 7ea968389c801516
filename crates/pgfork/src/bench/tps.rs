//! pgbench tpcb-like on a branch against its source: what a branch's
//! settings (fsync off, small shared_buffers) mean for write throughput.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use pgfork_engine::{Engine, SourceInfo};

use super::child::Pgfork;
use super::conn::AppConn;
use super::progress::BenchProgress;
use super::report::{TpsReport, TpsRun};

/// pgbench clients.
const CLIENTS: u32 = 4;
/// pgbench threads (one per core of a small machine).
const THREADS: u32 = 2;

/// Runs pgbench for `seconds` on a new branch of `snapshot`, then on its
/// source; deletes the branch.
pub fn run(
    engine: &mut Engine,
    cli: &Pgfork,
    source: &SourceInfo,
    snapshot: &str,
    scale: u32,
    seconds: u32,
    progress: &BenchProgress,
) -> Result<TpsReport> {
    let name = "bench-tps";
    progress.step("tps: creating a branch");
    cli.create_branch(name, snapshot)?;
    let branch = engine
        .branch_info(name)?
        .dsn_with_password()
        .context("branch DSN")
        .and_then(|d| AppConn::parse(&d));
    let on_branch = branch.map(|conn| {
        progress.step(format!("tps: pgbench -T {seconds} on the branch"));
        measured(pgbench(engine, &conn, seconds))
    });
    let deleted = engine.branch_delete(name, true);
    let on_branch = on_branch?;
    deleted?;

    progress.step(format!("tps: pgbench -T {seconds} on the source"));
    let app = AppConn::parse(&source.dsn_with_password().context("source DSN")?)?;
    let on_source = measured(pgbench(engine, &app, seconds));
    let ratio = match (on_branch.tps(), on_source.tps()) {
        (Some(b), Some(s)) if s > 0.0 => Some(b / s),
        _ => None,
    };
    Ok(TpsReport {
        scale,
        seconds,
        clients: CLIENTS,
        threads: THREADS,
        branch: on_branch,
        source: on_source,
        ratio,
    })
}

fn measured(result: Result<(f64, Option<f64>)>) -> TpsRun {
    match result {
        Ok((tps, latency_ms)) => TpsRun::Measured { tps, latency_ms },
        Err(e) => TpsRun::Failed {
            error: format!("{e:#}"),
        },
    }
}

/// `pgbench -c 4 -j 2 -T seconds` (tpcb-like, which vacuums its tables first).
pub(super) fn pgbench(engine: &Engine, conn: &AppConn, seconds: u32) -> Result<(f64, Option<f64>)> {
    let mut cmd = Command::new(engine.config().bins.tool("pgbench"));
    cmd.args([
        "-c",
        &CLIENTS.to_string(),
        "-j",
        &THREADS.to_string(),
        "-T",
        &seconds.to_string(),
    ])
    .stdin(Stdio::null());
    conn.apply_env(&mut cmd);
    let out = cmd.output().context("run pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&text).with_context(|| format!("no tps in pgbench output:\n{text}"))
}

/// Reads `tps = N (without initial connection time)` and
/// `latency average = N ms` from pgbench's report.
fn parse(report: &str) -> Option<(f64, Option<f64>)> {
    let number = |line: &str, prefix: &str| -> Option<f64> {
        line.strip_prefix(prefix)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let tps = report.lines().find_map(|l| number(l, "tps = "))?;
    let latency = report.lines().find_map(|l| number(l, "latency average = "));
    Some((tps, latency))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_15_report() {
        let report = "transaction type: <builtin: TPC-B (sort of)>\nscaling factor: 10\n\
            number of transactions actually processed: 12345\nlatency average = 3.241 ms\n\
            initial connection time = 12.5 ms\ntps = 1234.567890 (without initial connection time)\n";
        assert_eq!(parse(report), Some((1234.56789, Some(3.241))));
        assert_eq!(parse("nothing"), None);
    }
}
