//! `pgfork bench rehearse`: what a rehearsal costs over running the same
//! migration with `psql -f` on a branch.
//!
//! Each round, interleaved: `pgfork rehearse` of the file (branch made,
//! statements run and observed, lints, schema diff, branch deleted), then
//! the plain way: a branch made, `psql -X -v ON_ERROR_STOP=1 -f FILE` on
//! it, the branch deleted. Both totals are timed, and so are the parts
//! that run the statements: the rehearsal's statement times summed, and
//! psql's wall time.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pgfork_engine::{BranchCreate, Engine, RehearseRequest, Severity};
use serde::Serialize;

use super::conn::AppConn;
use super::load;
use super::progress::BenchProgress;
use super::stats::{Summary, millis};
use crate::cli::RehearseBenchArgs;
use crate::output;

const BRANCH: &str = "bench-psql";

/// The migration used when no file is given: a column, an index, a
/// rewrite of the smallest table, an update.
const DEFAULT_MIGRATION: &str = "\
ALTER TABLE pgbench_accounts ADD COLUMN note text;
CREATE INDEX pgbench_accounts_bid ON pgbench_accounts (bid);
ALTER TABLE pgbench_branches ALTER COLUMN bbalance TYPE bigint;
UPDATE pgbench_tellers SET tbalance = tbalance + 1;
";

#[derive(Debug, Serialize)]
struct Report {
    scale: u32,
    database_bytes: u64,
    file: String,
    statements: usize,
    rounds: usize,
    rehearse_total: Summary,
    plain_total: Summary,
    total_ratio: f64,
    rehearse_statements: Summary,
    psql: Summary,
    statements_ratio: f64,
}

/// Runs the rehearsal benchmark on the home `engine` has open.
pub fn run(engine: Engine, args: RehearseBenchArgs, json: bool) -> Result<()> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let (file, sql) = match &args.file {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?,
        ),
        None => ("(built-in migration)".to_string(), DEFAULT_MIGRATION.into()),
    };
    let progress = Arc::new(BenchProgress::new(json));
    let home = engine.home().clone();
    drop(engine);
    let mut engine = Engine::open(home, progress.clone())?;
    let mut created = Vec::new();
    let result = measure(&mut engine, &args, &file, &sql, &progress, &mut created);
    let _ = engine.branch_delete(BRANCH, true);
    if !args.keep_source {
        for name in &created {
            let _ = engine.source_delete(name, true);
        }
    }
    progress.finish();
    let report = result?;
    if json {
        output::json(&report);
        return Ok(());
    }
    println!(
        "rehearse against psql -f on a branch: {} ({} statements), pgbench scale {} ({:.0} MB), {} rounds",
        report.file,
        report.statements,
        report.scale,
        report.database_bytes as f64 / 1e6,
        report.rounds
    );
    output::table(
        &["", "pgfork rehearse", "branch + psql -f", "ratio"],
        vec![
            vec![
                "whole run, p50".into(),
                format!("{:.0} ms", report.rehearse_total.p50_ms),
                format!("{:.0} ms", report.plain_total.p50_ms),
                format!("{:.2}x", report.total_ratio),
            ],
            vec![
                "statements, p50".into(),
                format!("{:.0} ms", report.rehearse_statements.p50_ms),
                format!("{:.0} ms", report.psql.p50_ms),
                format!("{:.2}x", report.statements_ratio),
            ],
        ],
    );
    Ok(())
}

fn measure(
    engine: &mut Engine,
    args: &RehearseBenchArgs,
    file: &str,
    sql: &str,
    progress: &BenchProgress,
    created: &mut Vec<String>,
) -> Result<Report> {
    let loaded = load::ensure(engine, args.scale, progress, created)?;
    let source = loaded.info.name.clone();
    progress.step(format!("snapshot of {source}"));
    engine.snapshot_create(&source)?;
    let path =
        std::env::temp_dir().join(format!("pgfork-bench-rehearse-{}.sql", std::process::id()));
    std::fs::write(&path, sql).context("write the migration for psql")?;
    let psql = engine.config().bins.tool("psql");
    let (mut rehearse_total, mut plain_total, mut statements_ms, mut psql_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut statements = 0;
    for round in 1..=args.rounds {
        progress.step(format!("round {round} of {}: rehearse", args.rounds));
        let began = Instant::now();
        let report = engine.rehearse(&RehearseRequest {
            from: source.clone(),
            file: file.to_string(),
            sql: sql.to_string(),
            fresh: false,
            keep: false,
            fail_on: Severity::Error,
            max_lock_ms: None,
        })?;
        rehearse_total.push(millis(began.elapsed()));
        if report.statements.iter().any(|s| s.error.is_some()) {
            bail!(
                "the migration fails in its rehearsal ({:?}): benchmark one that applies",
                report.reasons
            );
        }
        statements = report.statements.len();
        statements_ms.push(report.statements.iter().map(|s| s.ms).sum());

        progress.step(format!(
            "round {round} of {}: branch and psql -f",
            args.rounds
        ));
        let began = Instant::now();
        let info = engine.branch_create(&BranchCreate {
            name: BRANCH.into(),
            from: source.clone(),
            ..BranchCreate::default()
        })?;
        let app = AppConn::parse(&info.dsn_with_password().context("branch DSN")?)?;
        let mut cmd = Command::new(&psql);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        app.apply_env(&mut cmd);
        let ran = Instant::now();
        let out = cmd.output().context("run psql")?;
        psql_ms.push(millis(ran.elapsed()));
        if !out.status.success() {
            bail!(
                "psql -f failed on the branch: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        engine.branch_delete(BRANCH, true)?;
        plain_total.push(millis(began.elapsed()));
    }
    let _ = std::fs::remove_file(&path);
    let summary = |v: &[f64]| Summary::of_ms(v).expect("at least one round");
    let (rt, pt, rs, ps) = (
        summary(&rehearse_total),
        summary(&plain_total),
        summary(&statements_ms),
        summary(&psql_ms),
    );
    Ok(Report {
        scale: args.scale,
        database_bytes: loaded.database_bytes,
        file: file.to_string(),
        statements,
        rounds: args.rounds,
        total_ratio: rt.p50_ms / pt.p50_ms,
        statements_ratio: rs.p50_ms / ps.p50_ms,
        rehearse_total: rt,
        plain_total: pt,
        rehearse_statements: rs,
        psql: ps,
    })
}
