//! One pgbench scale: load, snapshot, N timed branches, storage, delete
//! times, baselines.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgfork_engine::SourceInfo;

use super::baselines::{self, Inputs};
use super::child::Created;
use super::load;
use super::render::duration;
use super::report::{EngineSplit, ScaleReport, SnapshotFigures};
use super::stats::{Summary, millis};
use super::system::settled_used;
use super::{Ctx, interrupt};

/// What later phases need from a scale: its snapshot and source.
pub struct ScaleDone {
    /// The figures.
    pub report: ScaleReport,
    /// Snapshot id the branches were made from (kept until the end).
    pub snapshot: String,
    /// The source.
    pub source: SourceInfo,
    /// `pgfork.conf` of the first branch: the settings branches run with.
    pub branch_conf: String,
}

/// Runs the whole sequence for one scale.
pub fn run(ctx: &mut Ctx, scale: u32) -> Result<ScaleDone> {
    let progress = ctx.progress.clone();
    let n = ctx.args.branches;
    let loaded = load::ensure(&mut ctx.engine, scale, &progress, &mut ctx.created_sources)?;
    let name = loaded.info.name.clone();
    interrupt::check()?;

    progress.step(format!("scale {scale}: snapshot create {name}"));
    let began = Instant::now();
    let snap = ctx.engine.snapshot_create(&name)?;
    let snapshot = SnapshotFigures {
        id: snap.id.clone(),
        method: snap.method.clone(),
        seal_ms: snap.seal_ms,
        took_ms: millis(began.elapsed()),
    };

    let pool = ctx.engine.home().pool();
    let driver = ctx.engine.config().driver;
    let used_before = settled_used(&pool, driver)?;
    let mut created: Vec<Created> = Vec::with_capacity(n);
    for i in 1..=n {
        interrupt::check()?;
        let branch = format!("bench-s{scale}-{i:03}");
        progress.step(format!("scale {scale}: branch create {i}/{n}"));
        let c = ctx
            .cli
            .create_branch(&branch, &snap.id)
            .with_context(|| format!("scale {scale}: branch {i} of {n}"))?;
        progress.note(&format!(
            "scale {scale}: branch {i}/{n} answered after {}",
            duration(millis(c.to_query))
        ));
        created.push(c);
    }
    let used_after = settled_used(&pool, driver)?;
    let conf_path = created[0].data_dir.join("pgfork.conf");
    let branch_conf = std::fs::read_to_string(&conf_path)
        .with_context(|| format!("read {}", conf_path.display()))?;

    let mut deletes: Vec<Duration> = Vec::with_capacity(n);
    for (i, c) in created.iter().enumerate() {
        interrupt::check()?;
        progress.step(format!("scale {scale}: branch delete {}/{n}", i + 1));
        deletes.push(ctx.cli.delete_branch(&c.name)?);
    }

    let summary = |f: &dyn Fn(&Created) -> f64| {
        let v: Vec<f64> = created.iter().map(f).collect();
        Summary::of_ms(&v).expect("at least one branch")
    };
    let create = summary(&|c| millis(c.to_query));
    let engine = EngineSplit {
        clone: summary(&|c| c.timings.clone_ms as f64),
        start: summary(&|c| c.timings.start_ms as f64),
        total: summary(&|c| c.timings.total_ms as f64),
    };

    interrupt::check()?;
    let baselines = baselines::run_all(
        &Inputs {
            engine: &ctx.engine,
            source: &loaded.info,
            app: &loaded.app,
            snapshot_dir: &snap.data_dir,
            branch_conf: &branch_conf,
            pgfork_p50_ms: create.p50_ms,
            skip_dump: ctx.args.skip_dump,
        },
        &progress,
    );

    Ok(ScaleDone {
        report: ScaleReport {
            scale,
            source: name,
            reused_source: loaded.reused,
            load_ms: loaded.load_ms,
            database_bytes: loaded.database_bytes,
            snapshot,
            create,
            engine,
            connect_retries: created.iter().map(|c| c.retries).sum(),
            pool_used_before: used_before,
            pool_used_after: used_after,
            storage_per_branch_bytes: (used_after as i64 - used_before as i64) / n as i64,
            delete: Summary::of(&deletes).expect("at least one branch"),
            baselines,
        },
        snapshot: snap.id,
        source: loaded.info,
        branch_conf,
    })
}
