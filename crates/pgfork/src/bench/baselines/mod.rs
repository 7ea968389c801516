//! Baselines: other ways to get a writable copy of the same data, each
//! timed once to its first successful query and compared to pgfork's p50.

mod copy;
mod dump;
mod template;

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use pgfork_engine::{Engine, SourceInfo};

pub use copy::remove_copy;
pub use template::{DB_PREFIX, drop_database, superuser};

use super::conn::AppConn;
use super::progress::BenchProgress;
use super::report::{Baseline, Outcome};
use super::stats::millis;
use super::system::syncfs;

/// What the baselines copy.
pub struct Inputs<'a> {
    /// The engine (binaries, OS user, home).
    pub engine: &'a Engine,
    /// The source whose database is copied.
    pub source: &'a SourceInfo,
    /// Its application connection.
    pub app: &'a AppConn,
    /// The snapshot pgfork branched from (what `cp -a` copies).
    pub snapshot_dir: &'a Path,
    /// `pgfork.conf` of a branch, for starting copies the same way.
    pub branch_conf: &'a str,
    /// pgfork's p50 at this scale, for the ratios.
    pub pgfork_p50_ms: f64,
    /// Skip pg_dump | pg_restore.
    pub skip_dump: bool,
}

/// Runs every baseline once, in order, and never fails as a whole: a
/// failed baseline is reported as such.
pub fn run_all(inputs: &Inputs, progress: &BenchProgress) -> Vec<Baseline> {
    let pg15 = inputs.source.pg_major >= 15;
    let mut out = Vec::new();
    let mut run = |key, label, note, f: &dyn Fn() -> Result<(Duration, Option<Duration>)>| {
        progress.step(format!("baseline: {label}"));
        let outcome = match f() {
            Ok((to_query, copy)) => Outcome::Measured {
                to_query_ms: millis(to_query),
                copy_ms: copy.map(millis),
                ratio_to_pgfork_p50: millis(to_query) / inputs.pgfork_p50_ms.max(0.001),
            },
            Err(e) => Outcome::Failed {
                error: format!("{e:#}"),
            },
        };
        // Write back what this baseline left dirty (untimed), so that its
        // writeback is not charged to the next one.
        let _ = syncfs(&inputs.engine.home().pool());
        if let Outcome::Measured { to_query_ms, .. } = &outcome {
            progress.note(&format!(
                "  {label}: {}",
                super::render::duration(*to_query_ms)
            ));
        }
        out.push(Baseline {
            key,
            label,
            note,
            outcome,
        });
    };
    run(
        "cp_full",
        "cp -a --reflink=never, start",
        "full byte copy of the snapshot directory in the pool, then postgres started on it",
        &|| {
            copy::copy_and_start(
                inputs.engine,
                inputs.snapshot_dir,
                inputs.app,
                inputs.branch_conf,
                false,
            )
            .map(|(q, c)| (q, Some(c)))
        },
    );
    run(
        "cp_default",
        "cp -a (reflink=auto), start",
        "coreutils 9 default: clones blocks where the filesystem can, like pgfork's reflink driver",
        &|| {
            copy::copy_and_start(
                inputs.engine,
                inputs.snapshot_dir,
                inputs.app,
                inputs.branch_conf,
                true,
            )
            .map(|(q, c)| (q, Some(c)))
        },
    );
    if pg15 {
        run(
            "template_wal_log",
            "CREATE DATABASE TEMPLATE (WAL_LOG)",
            "PostgreSQL 15 default strategy: copies block by block through the WAL",
            &|| {
                template::create_database(inputs.source, inputs.app, Some("WAL_LOG"))
                    .map(|d| (d, None))
            },
        );
        run(
            "template_file_copy",
            "CREATE DATABASE TEMPLATE (FILE_COPY)",
            "copies the files, with a checkpoint before and after",
            &|| {
                template::create_database(inputs.source, inputs.app, Some("FILE_COPY"))
                    .map(|d| (d, None))
            },
        );
    } else {
        run(
            "template",
            "CREATE DATABASE TEMPLATE",
            "copies the files, with a checkpoint before and after",
            &|| template::create_database(inputs.source, inputs.app, None).map(|d| (d, None)),
        );
    }
    if inputs.skip_dump {
        out.push(Baseline {
            key: "dump_restore",
            label: "pg_dump -Fc | pg_restore",
            note: "logical copy into a new database of the source cluster, one stream",
            outcome: Outcome::Skipped {
                reason: "--skip-dump".into(),
            },
        });
    } else {
        run(
            "dump_restore",
            "pg_dump -Fc | pg_restore",
            "logical copy into a new database of the source cluster, one stream",
            &|| dump::dump_restore(inputs.engine, inputs.source, inputs.app).map(|d| (d, None)),
        );
    }
    out
}
