//! `pgfork bench sources`: sources copied from a real database.
//!
//! A production stand-in (a cluster outside the pool) is loaded with
//! pgbench data and a table of fake personal data; then:
//! - physical: replication lag (sampled on the primary, `replay_lag`) while
//!   pgbench writes to it, and `branch create --fresh` timed to the first
//!   query on the new branch;
//! - logical: `source add --mode logical` against plain
//!   `pg_dump -Fc | pg_restore` of the same database into a fresh cluster;
//! - masking: the time masking adds to a snapshot, per GB masked.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pgfork_engine::{BranchCreate, CreateTimings, Engine, Mode, SourceAdd};
use serde::Serialize;

use super::conn::{AppConn, PATIENCE, first_query};
use super::production::Production;
use super::progress::BenchProgress;
use super::stats::{Summary, millis};
use crate::cli::SourcesBenchArgs;
use crate::output;

const PHYSICAL: &str = "bench-physical";
const LOGICAL: &str = "bench-logical";

#[derive(Debug, Serialize)]
struct Report {
    scale: u32,
    database_bytes: u64,
    basebackup_ms: f64,
    lag_seconds: Option<Summary>,
    fresh_branch: Option<Summary>,
    /// Parts of `--fresh`: the snapshot (wait for replay, clone the
    /// standby, seal), the branch's clone, its start.
    fresh_snapshot: Option<Summary>,
    fresh_clone: Option<Summary>,
    fresh_start: Option<Summary>,
    logical_import_ms: f64,
    dump_restore_ms: f64,
    import_speed_ratio: f64,
    masked_bytes: u64,
    masking_ms: f64,
    masking_seconds_per_gb: f64,
}

/// Runs the sources benchmark on the home `engine` has open.
pub fn run(engine: Engine, args: SourcesBenchArgs, json: bool) -> Result<()> {
    let progress = Arc::new(BenchProgress::new(json));
    let home = engine.home().clone();
    drop(engine);
    let mut engine = Engine::open(home, progress.clone())?;
    let result = measure(&mut engine, &args, &progress);
    for name in [PHYSICAL, LOGICAL] {
        let _ = engine.source_delete(name, true);
    }
    progress.finish();
    let r = result?;
    if json {
        output::json(&r);
        return Ok(());
    }
    println!(
        "sources from a production stand-in: pgbench scale {} ({:.2} GB), {} driver",
        r.scale,
        r.database_bytes as f64 / 1e9,
        engine.config().driver
    );
    let ms = |s: &Option<Summary>| {
        s.map(|s| format!("p50 {:.0} ms, p99 {:.0} ms (n={})", s.p50_ms, s.p99_ms, s.n))
    };
    output::fields(&[
        (
            "base backup (physical add)",
            format!("{:.1} s", r.basebackup_ms / 1000.0),
        ),
        (
            "replication lag under pgbench",
            r.lag_seconds
                .map(|s| format!("p50 {:.3} s, p99 {:.3} s (n={})", s.p50_ms, s.p99_ms, s.n))
                .unwrap_or("-".into()),
        ),
        (
            "branch create --fresh",
            ms(&r.fresh_branch).unwrap_or("-".into()),
        ),
        (
            "  of which: snapshot (replay wait, clone, seal)",
            ms(&r.fresh_snapshot).unwrap_or("-".into()),
        ),
        (
            "  of which: branch clone",
            ms(&r.fresh_clone).unwrap_or("-".into()),
        ),
        (
            "  of which: branch start",
            ms(&r.fresh_start).unwrap_or("-".into()),
        ),
        (
            "logical import (source add)",
            format!("{:.1} s", r.logical_import_ms / 1000.0),
        ),
        (
            "pg_dump -Fc | pg_restore",
            format!("{:.1} s", r.dump_restore_ms / 1000.0),
        ),
        (
            "import speed / pg_dump|pg_restore speed",
            format!("{:.2}", r.import_speed_ratio),
        ),
        (
            "masked",
            format!(
                "{:.2} GB in {:.1} s: {:.1} s per GB",
                r.masked_bytes as f64 / 1e9,
                r.masking_ms / 1000.0,
                r.masking_seconds_per_gb
            ),
        ),
    ]);
    Ok(())
}

fn measure(
    engine: &mut Engine,
    args: &SourcesBenchArgs,
    progress: &BenchProgress,
) -> Result<Report> {
    for name in [PHYSICAL, LOGICAL] {
        let _ = engine.source_delete(name, true);
    }
    progress.step("starting the production stand-in");
    let prod = Production::start(engine, "prod")?;
    progress.step(format!("pgbench -i -s {} on production", args.scale));
    let status = Command::new(prod.tool("pgbench"))
        .args(["-i", "-q", "-s", &args.scale.to_string(), &prod.url("app")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("pgbench -i on the production stand-in failed");
    }
    progress.step(format!("{} rows of personal data", args.people));
    let mut app = prod.app()?;
    app.batch_execute(&format!(
        "CREATE TABLE people (id int PRIMARY KEY, email text, name text, phone text, note text);
         INSERT INTO people SELECT g, 'person' || g || '@corp.example', 'First' || g || ' Last' || g,
                '+44 20 ' || lpad(g::text, 8, '0'), repeat('x', 60) FROM generate_series(1, {}) g;
         ANALYZE",
        args.people
    ))?;
    let database_bytes: i64 = app
        .query_one("SELECT pg_database_size('shop')", &[])?
        .get(0);

    // Physical: base backup, then lag under load, with --fresh branches.
    progress.step("source add --mode physical (pg_basebackup)");
    let began = Instant::now();
    engine.source_add(&SourceAdd {
        name: PHYSICAL.into(),
        url: prod.url("replicator"),
        mode: Mode::Physical,
        refresh_every: None,
        role: Some("app".into()),
        save_password: false,
    })?;
    let basebackup_ms = millis(began.elapsed());
    let (lag, fresh) = lag_and_fresh(engine, &prod, args, progress)?;
    let part = |f: fn(&CreateTimings) -> u64| {
        Summary::of_ms(&fresh.parts.iter().map(|t| f(t) as f64).collect::<Vec<_>>())
    };
    let (fresh_snapshot, fresh_clone, fresh_start) = (
        part(|t| t.snapshot_ms.unwrap_or(0)),
        part(|t| t.clone_ms),
        part(|t| t.start_ms),
    );

    // Logical: the plain baseline first, then pgfork's import.
    progress.step("pg_dump -Fc | pg_restore (baseline)");
    let dump_restore_ms = dump_restore_baseline(&prod)?;
    progress.step("source add --mode logical");
    let began = Instant::now();
    engine.source_add(&SourceAdd {
        name: LOGICAL.into(),
        url: prod.url("app"),
        mode: Mode::Logical,
        refresh_every: None,
        role: None,
        save_password: false,
    })?;
    let logical_import_ms = millis(began.elapsed());

    // Masking: a masked snapshot against an unmasked one.
    progress.step("unmasked snapshot");
    let began = Instant::now();
    engine.snapshot_create_opts(LOGICAL, true)?;
    let unmasked_ms = millis(began.elapsed());
    let rules = std::env::temp_dir().join(format!("pgfork-bench-mask-{}.toml", std::process::id()));
    std::fs::File::create(&rules)?
        .write_all(b"[public.people]\nemail = \"email\"\nname = \"name\"\nphone = \"phone\"\n")?;
    engine.source_mask(LOGICAL, &rules)?;
    let _ = std::fs::remove_file(&rules);
    progress.step("masked snapshot");
    let began = Instant::now();
    engine.snapshot_create(LOGICAL)?;
    let masked_ms = millis(began.elapsed());
    let masked_bytes: i64 = app
        .query_one("SELECT pg_total_relation_size('people')", &[])?
        .get(0);
    let masking_ms = (masked_ms - unmasked_ms).max(0.0);
    // Gone before production is: a physical source drops its slot there.
    for name in [PHYSICAL, LOGICAL] {
        engine.source_delete(name, true)?;
    }
    Ok(Report {
        scale: args.scale,
        database_bytes: database_bytes as u64,
        basebackup_ms,
        lag_seconds: lag,
        fresh_branch: Summary::of(&fresh.total),
        fresh_snapshot,
        fresh_clone,
        fresh_start,
        logical_import_ms,
        dump_restore_ms,
        import_speed_ratio: dump_restore_ms / logical_import_ms,
        masked_bytes: masked_bytes as u64,
        masking_ms,
        masking_seconds_per_gb: (masking_ms / 1000.0) / (masked_bytes as f64 / 1e9),
    })
}

/// The `--fresh` branches made under load: each one's time to its first
/// query, and where the engine spent it.
#[derive(Default)]
struct FreshTimes {
    total: Vec<Duration>,
    parts: Vec<CreateTimings>,
}

/// Replication lag sampled every 100 ms on the primary while pgbench
/// writes, and `--fresh` branches made meanwhile.
fn lag_and_fresh(
    engine: &mut Engine,
    prod: &Production,
    args: &SourcesBenchArgs,
    progress: &BenchProgress,
) -> Result<(Option<Summary>, FreshTimes)> {
    progress.step(format!(
        "pgbench on production for {} s, sampling lag, --fresh branches",
        args.seconds
    ));
    let mut load = Command::new(prod.tool("pgbench"))
        .args([
            "-n",
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            &args.seconds.to_string(),
            &prod.url("app"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start pgbench")?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let mut client = prod.superuser()?;
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // replay_lag is NULL once the standby has caught up: 0.
                if let Ok(row) = client.query_one(
                    "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication",
                    &[],
                ) {
                    samples.push(row.get::<_, f64>(0));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };
    let mut fresh = FreshTimes::default();
    let deadline = Instant::now() + Duration::from_secs(args.seconds as u64);
    let mut n = 0;
    while Instant::now() < deadline && n < args.fresh {
        let name = format!("bench-fresh-{n}");
        let began = Instant::now();
        let info = engine.branch_create(&BranchCreate {
            name: name.clone(),
            from: PHYSICAL.into(),
            fresh: true,
            unmasked: true,
            ..BranchCreate::default()
        })?;
        first_query(
            &AppConn::parse(&info.dsn_with_password().context("dsn")?)?,
            PATIENCE,
        )?;
        fresh.total.push(began.elapsed());
        fresh.parts.extend(info.timings);
        engine.branch_delete(&name, true)?;
        // The snapshot --fresh made goes too: one per branch would pile up.
        if let Some(snap) = engine.snapshot_list(Some(PHYSICAL))?.last() {
            let _ = engine.snapshot_delete(&snap.id, false);
        }
        n += 1;
    }
    let _ = load.wait();
    stop.store(true, Ordering::Relaxed);
    let lag: Vec<f64> = sampler.join().unwrap_or_default();
    // Summaries are in "ms" units; lag is kept in seconds.
    Ok((Summary::of_ms(&lag), fresh))
}

/// `pg_dump -Fc | pg_restore` of production's database into a new
/// database of the production cluster: the plain way to copy a database.
fn dump_restore_baseline(prod: &Production) -> Result<f64> {
    let mut su = prod.superuser()?;
    su.batch_execute("DROP DATABASE IF EXISTS baseline")?;
    su.batch_execute("CREATE DATABASE baseline OWNER app")?;
    let began = Instant::now();
    let mut dump = Command::new(prod.tool("pg_dump"))
        .args(["-Fc", &prod.url("app")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let restore = Command::new(prod.tool("pg_restore"))
        .args(["-d", &prod.url("app").replace("/shop", "/baseline")])
        .stdin(dump.stdout.take().expect("piped"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let dumped = dump.wait()?;
    if !dumped.success() || !restore.success() {
        bail!("pg_dump | pg_restore baseline failed");
    }
    let elapsed = millis(began.elapsed());
    su.batch_execute("DROP DATABASE baseline")?;
    Ok(elapsed)
}
