//! `pgfork bench diff`: what `pgfork diff` costs as the change grows, on a
//! large database, against a full comparison of every table.
//!
//! A pgbench source (scale 330 is about 5 GB) is snapshotted and branched;
//! for each change size N the branch is reset, N rows of pgbench_accounts
//! spread evenly over the whole table are updated (each in its own page,
//! the worst case for a page-based diff), and the diff is timed. The full
//! comparison (ordered scans of every table on both sides) is timed once:
//! its cost does not depend on N.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pgfork_engine::{BranchCreate, DiffReport, DiffRequest, Engine};
use serde::Serialize;

use super::conn::AppConn;
use super::load;
use super::progress::BenchProgress;
use super::stats::millis;
use crate::cli::DiffBenchArgs;
use crate::output;

const BRANCH: &str = "bench-diff";

/// One change size's figures.
#[derive(Debug, Serialize)]
struct Row {
    changed_rows: u32,
    diff_ms: f64,
    pages_read: u64,
    rows_found: u64,
    full_ms: Option<f64>,
    full_over_diff: Option<f64>,
}

/// The whole report.
#[derive(Debug, Serialize)]
struct Report {
    scale: u32,
    database_bytes: u64,
    driver: String,
    full_comparison_ms: Option<f64>,
    rows: Vec<Row>,
}

fn changed(report: &DiffReport) -> (u64, u64) {
    let data = report.data.as_ref();
    let rows = data
        .map(|d| {
            d.tables
                .iter()
                .map(|t| t.inserted + t.updated + t.deleted)
                .sum()
        })
        .unwrap_or(0);
    let pages = data
        .map(|d| d.tables.iter().map(|t| t.pages).sum())
        .unwrap_or(0);
    (rows, pages)
}

/// Runs the diff benchmark on the home `engine` has open.
pub fn run(engine: Engine, args: DiffBenchArgs, json: bool) -> Result<()> {
    if args.changes.is_empty() || args.changes.contains(&0) {
        bail!("--changes needs positive row counts, e.g. 1000,10000,100000");
    }
    let progress = Arc::new(BenchProgress::new(json));
    let home = engine.home().clone();
    drop(engine);
    let mut engine = Engine::open(home, progress.clone())?;
    let mut created = Vec::new();
    let result = measure(&mut engine, &args, &progress, &mut created);
    // Leave nothing of this run behind, whatever happened.
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
        "pgfork diff on a pgbench database of scale {} ({:.1} GB), {} driver",
        report.scale,
        report.database_bytes as f64 / 1e9,
        report.driver
    );
    if let Some(full) = report.full_comparison_ms {
        println!(
            "full comparison of every table (ordered scans): {:.0} ms",
            full
        );
    }
    output::table(
        &[
            "changed rows",
            "pgfork diff",
            "pages read",
            "rows found",
            "full / diff",
        ],
        report
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.changed_rows.to_string(),
                    format!("{:.0} ms", r.diff_ms),
                    r.pages_read.to_string(),
                    r.rows_found.to_string(),
                    r.full_over_diff
                        .map(|x| format!("{x:.1}x"))
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect(),
    );
    Ok(())
}

fn measure(
    engine: &mut Engine,
    args: &DiffBenchArgs,
    progress: &BenchProgress,
    created: &mut Vec<String>,
) -> Result<Report> {
    let loaded = load::ensure(engine, args.scale, progress, created)?;
    let source = loaded.info.name.clone();
    progress.step(format!("snapshot of {source}"));
    let snapshot = engine.snapshot_create(&source)?;
    let _ = engine.branch_delete(BRANCH, true);
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("pgfork-bench".to_string(), "1".to_string());
    let branch = engine.branch_create(&BranchCreate {
        name: BRANCH.into(),
        from: snapshot.id.clone(),
        labels,
        ..BranchCreate::default()
    })?;
    let app = AppConn::parse(&branch.dsn_with_password().context("branch DSN")?)?;
    let accounts = args.scale as u64 * 100_000;
    let mut rows = Vec::new();
    let mut full_ms = None;
    for (i, &n) in args.changes.iter().enumerate() {
        if i > 0 {
            progress.step("resetting the branch");
            engine.branch_reset(BRANCH)?;
        }
        let step = (accounts / n as u64).max(1);
        progress.step(format!("updating {n} rows spread over pgbench_accounts"));
        let mut client = app.connect()?;
        let updated = client.execute(
            &format!("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % {step} = 1 AND aid <= {}", step * n as u64),
            &[],
        )?;
        drop(client);
        progress.step(format!("pgfork diff with {updated} changed rows"));
        let req = DiffRequest {
            target: BRANCH.into(),
            schema: true,
            data: true,
            limit: 0,
            ..DiffRequest::default()
        };
        let began = Instant::now();
        let report = engine.diff(&req)?;
        let diff_ms = millis(began.elapsed());
        let (found, pages) = changed(&report);
        if found != updated {
            bail!("the diff found {found} changed rows, but {updated} were updated");
        }
        if i == 0 && !args.skip_full {
            progress.step("full comparison of every table");
            let began = Instant::now();
            let full = engine.diff(&DiffRequest {
                full: true,
                ..req.clone()
            })?;
            full_ms = Some(millis(began.elapsed()));
            if changed(&full).0 != updated {
                bail!(
                    "the full comparison found {} changed rows, but {updated} were updated",
                    changed(&full).0
                );
            }
        }
        progress.note(&format!(
            "{n} rows: diff {diff_ms:.0} ms, {pages} pages read"
        ));
        rows.push(Row {
            changed_rows: n,
            diff_ms,
            pages_read: pages,
            rows_found: found,
            full_ms,
            full_over_diff: full_ms.map(|f| f / diff_ms),
        });
    }
    engine.branch_delete(BRANCH, true)?;
    Ok(Report {
        scale: args.scale,
        database_bytes: loaded.database_bytes,
        driver: engine.config().driver.to_string(),
        full_comparison_ms: full_ms,
        rows,
    })
}
