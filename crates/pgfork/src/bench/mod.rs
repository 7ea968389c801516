//! `pgfork bench`: branch creation measured on real data against the
//! other ways of copying a database, on the pool of the home it is given.
//!
//! Per pgbench scale: a source is loaded (or reused), snapshotted, and
//! branched N times, each timed from spawning `pgfork branch create` to the
//! first successful query on a new connection; storage per branch, delete
//! times and baselines (`cp -a`, `CREATE DATABASE ... TEMPLATE`,
//! `pg_dump | pg_restore`) follow. Then, once: how many branches can be
//! alive at once and their memory, and pgbench TPS on a branch against its
//! source. Everything it makes is removed at the end (sources too, unless
//! `--keep-sources`).

pub mod api;
mod baselines;
mod child;
mod conn;
pub mod dashboard;
pub mod diff_cost;
mod interrupt;
mod live;
mod load;
pub mod neighbours;
mod production;
mod progress;
pub mod rehearse;
mod render;
mod report;
mod scale;
pub mod sources;
mod stats;
mod sweep;
mod system;
mod targets;
mod tps;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use pgfork_engine::Engine;
use pgfork_pool::space;

use crate::cli::BenchArgs;
use crate::output;
use child::Pgfork;
use progress::BenchProgress;
use report::{Header, Report, Settings, SizeRatio};

/// State shared by the phases of a run.
pub(crate) struct Ctx {
    engine: Engine,
    cli: Pgfork,
    progress: Arc<BenchProgress>,
    args: BenchArgs,
    /// Sources this run created: deleted at the end unless `--keep-sources`.
    created_sources: Vec<String>,
}

/// Runs the benchmark on the home `engine` has open.
pub fn run(engine: Engine, args: BenchArgs, json: bool) -> Result<()> {
    validate(&args)?;
    interrupt::install();
    let progress = Arc::new(BenchProgress::new(json));
    let home = engine.home().clone();
    drop(engine);
    // Opened again with the benchmark's own progress, so that engine stages
    // (initdb, sealing) show in its spinner rather than in a second one.
    let engine = Engine::open(home.clone(), progress.clone())?;
    let cli = Pgfork::new(home.root())?;
    let mut ctx = Ctx {
        engine,
        cli,
        progress: progress.clone(),
        args,
        created_sources: Vec::new(),
    };
    let header = header(&ctx)?;

    let (removed, mut warnings) = sweep::sweep(&mut ctx.engine);
    if !removed.is_empty() {
        pgfork_engine::Progress::warn(
            progress.as_ref(),
            &format!(
                "removed leftovers of an interrupted run: {}",
                removed.join(", ")
            ),
        );
    }

    let result = phases(&mut ctx, header);

    progress.step("cleaning up");
    let (_, more) = sweep::sweep(&mut ctx.engine);
    warnings.extend(more);
    if !ctx.args.keep_sources {
        for name in std::mem::take(&mut ctx.created_sources) {
            progress.step(format!("deleting source {name}"));
            if let Err(e) = ctx.engine.source_delete(&name, true) {
                warnings.push(format!("delete source {name}: {e}"));
            }
        }
    }
    for w in &warnings {
        pgfork_engine::Progress::warn(progress.as_ref(), &format!("cleanup: {w}"));
    }
    progress.finish();

    let report = result?;
    if let Some(path) = &ctx.args.json_out {
        let text = serde_json::to_string_pretty(&report).expect("serialisable");
        std::fs::write(path, text + "\n")
            .with_context(|| format!("write the JSON report to {}", path.display()))?;
    }
    if json {
        output::json(&report);
    } else {
        render::print(&report);
    }
    Ok(())
}

fn validate(args: &BenchArgs) -> Result<()> {
    if args.scales.is_empty() || args.scales.contains(&0) {
        bail!("--scales needs one or more pgbench scale factors above 0 (e.g. 10,500)");
    }
    if args.branches == 0 {
        bail!("--branches must be at least 1");
    }
    Ok(())
}

/// Every phase, in order; the first hard failure stops the run (the caller
/// cleans up either way).
fn phases(ctx: &mut Ctx, mut header: Header) -> Result<Report> {
    let mut scales = ctx.args.scales.clone();
    scales.sort_unstable();
    scales.dedup();
    let mut done = Vec::new();
    for scale in scales {
        done.push(scale::run(ctx, scale)?);
        interrupt::check()?;
    }
    let (first, last) = (&done[0], &done[done.len() - 1]);
    let source_conf =
        std::fs::read_to_string(first.source.data_dir.join("pgfork.conf")).unwrap_or_default();
    header.settings = Settings {
        branch: settings_in(&first.branch_conf),
        source: settings_in(&source_conf),
    };
    let size_ratio = (done.len() > 1).then(|| SizeRatio {
        small_scale: first.report.scale,
        large_scale: last.report.scale,
        small_bytes: first.report.database_bytes,
        large_bytes: last.report.database_bytes,
        ratio: last.report.create.p50_ms / first.report.create.p50_ms.max(0.001),
    });

    let progress = ctx.progress.clone();
    interrupt::check()?;
    let live = (ctx.args.max_live > 0).then(|| {
        live::run(
            &mut ctx.engine,
            &ctx.cli,
            &first.snapshot,
            first.report.scale,
            ctx.args.max_live,
            &progress,
        )
    });
    interrupt::check()?;
    let tps = if ctx.args.tps_seconds > 0 {
        Some(tps::run(
            &mut ctx.engine,
            &ctx.cli,
            &first.source,
            &first.snapshot,
            first.report.scale,
            ctx.args.tps_seconds,
            &progress,
        )?)
    } else {
        None
    };

    let mut report = Report {
        header,
        scales: done.into_iter().map(|d| d.report).collect(),
        size_ratio,
        live,
        tps,
        targets: Vec::new(),
    };
    report.targets = targets::checks(&report);
    Ok(report)
}

fn header(ctx: &Ctx) -> Result<Header> {
    let config = ctx.engine.config();
    let pool = ctx.engine.home().pool();
    let filesystem = space::fs_magic(&pool)
        .map(space::fs_name)
        .unwrap_or("unknown");
    Ok(Header {
        pgfork: env!("CARGO_PKG_VERSION"),
        started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        driver: config.driver.name().to_string(),
        filesystem: filesystem.to_string(),
        copy_on_write: config.driver.is_copy_on_write(),
        pool,
        pool_image: config.image.map(|f| f.name().to_string()),
        postgres: config.bins.version.to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_total_bytes: system::meminfo("MemTotal").unwrap_or(0),
        kernel: system::kernel(),
        branches_per_scale: ctx.args.branches,
        // Read from the servers' own pgfork.conf once they exist.
        settings: Settings::default(),
    })
}

/// The settings that bear on the figures, read from a server's own
/// `pgfork.conf`, so the report cannot drift from what actually ran.
fn settings_in(pgfork_conf: &str) -> String {
    const KEYS: [&str; 5] = [
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "shared_buffers",
        "max_connections",
    ];
    pgfork_conf
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .filter(|(k, _)| KEYS.contains(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_picked_from_pgfork_conf() {
        let conf = "# Written by pgfork\nport = 1\nfsync = off\nsynchronous_commit = on\nshared_buffers = 16MB\n";
        assert_eq!(
            settings_in(conf),
            "fsync=off, synchronous_commit=on, shared_buffers=16MB"
        );
    }
}
