//! The figures one run produces, as printed with `--json`.

use std::path::PathBuf;

use serde::Serialize;

use super::stats::Summary;

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Machine, pool and settings.
    pub header: Header,
    /// One entry per pgbench scale.
    pub scales: Vec<ScaleReport>,
    /// p50 at the largest scale over p50 at the smallest (two scales or more).
    pub size_ratio: Option<SizeRatio>,
    /// Branches alive at once, and their memory.
    pub live: Option<LiveReport>,
    /// pgbench TPS on a branch against its source.
    pub tps: Option<TpsReport>,
    /// Each figure the issue sets a target for.
    pub targets: Vec<TargetCheck>,
}

/// What the run ran on.
#[derive(Debug, Serialize)]
pub struct Header {
    /// pgfork version.
    pub pgfork: &'static str,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// Clone driver of the pool.
    pub driver: String,
    /// Filesystem of the pool.
    pub filesystem: String,
    /// Whether clones share blocks.
    pub copy_on_write: bool,
    /// Pool directory.
    pub pool: PathBuf,
    /// Filesystem of the loop-mounted pool image, if the pool is one.
    pub pool_image: Option<String>,
    /// PostgreSQL version.
    pub postgres: String,
    /// CPUs available to this process.
    pub cpus: usize,
    /// RAM.
    pub mem_total_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// Branches timed per scale.
    pub branches_per_scale: usize,
    /// Server settings of branches and sources that matter to the figures.
    pub settings: Settings,
}

/// Durability and memory settings of the servers measured.
#[derive(Debug, Default, Serialize)]
pub struct Settings {
    /// Branches (from pgfork.conf of the Branch profile).
    pub branch: String,
    /// Sources (the Source profile).
    pub source: String,
}

/// Figures for one pgbench scale.
#[derive(Debug, Serialize)]
pub struct ScaleReport {
    /// pgbench scale factor.
    pub scale: u32,
    /// Source name.
    pub source: String,
    /// Whether an already loaded source was reused.
    pub reused_source: bool,
    /// Time of `pgbench -i` (when it was loaded now).
    pub load_ms: Option<f64>,
    /// `pg_database_size` of the application database.
    pub database_bytes: u64,
    /// The snapshot branches were made from.
    pub snapshot: SnapshotFigures,
    /// Command start to first successful query.
    pub create: Summary,
    /// The engine's own split of `branch create`.
    pub engine: EngineSplit,
    /// Failed first-query attempts over all branches (expected: 0).
    pub connect_retries: u32,
    /// Pool bytes in use before the branches (after sync).
    pub pool_used_before: u64,
    /// Pool bytes in use with the branches alive (after sync).
    pub pool_used_after: u64,
    /// (after - before) / branches; may be slightly negative from noise.
    pub storage_per_branch_bytes: i64,
    /// `branch delete` command times.
    pub delete: Summary,
    /// Other ways to get a copy of the same data.
    pub baselines: Vec<Baseline>,
}

/// How the snapshot was taken.
#[derive(Debug, Serialize)]
pub struct SnapshotFigures {
    /// Id (`bench-s10@3`).
    pub id: String,
    /// `atomic`, `online-backup` or `stopped`.
    pub method: Option<String>,
    /// Time spent sealing.
    pub seal_ms: Option<i64>,
    /// Time of the whole `snapshot create`.
    pub took_ms: f64,
}

/// Summaries of the timings `branch create --json` reports.
#[derive(Debug, Serialize)]
pub struct EngineSplit {
    /// Cloning the snapshot.
    pub clone: Summary,
    /// Starting the postmaster until it accepted a connection.
    pub start: Summary,
    /// The whole engine call.
    pub total: Summary,
}

/// One baseline measurement.
#[derive(Debug, Serialize)]
pub struct Baseline {
    /// Stable key for programs.
    pub key: &'static str,
    /// What was run.
    pub label: &'static str,
    /// How to read it.
    pub note: &'static str,
    /// The result.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Result of a baseline.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// Measured once.
    Measured {
        /// Command start to first successful query on the copy.
        to_query_ms: f64,
        /// Of which the copy itself (where that is a separate step).
        copy_ms: Option<f64>,
        /// `to_query_ms` over pgfork's p50 at this scale.
        ratio_to_pgfork_p50: f64,
    },
    /// Not run.
    Skipped {
        /// Why.
        reason: String,
    },
    /// Run and failed.
    Failed {
        /// The error.
        error: String,
    },
}

/// p50 at the largest scale over p50 at the smallest.
#[derive(Debug, Serialize)]
pub struct SizeRatio {
    /// Smallest scale.
    pub small_scale: u32,
    /// Largest scale.
    pub large_scale: u32,
    /// Database size at the smallest scale.
    pub small_bytes: u64,
    /// Database size at the largest scale.
    pub large_bytes: u64,
    /// The ratio.
    pub ratio: f64,
}

/// Branches alive at once.
#[derive(Debug, Serialize)]
pub struct LiveReport {
    /// Scale of the snapshot they were made from.
    pub scale: u32,
    /// How many were asked for (`--max-live`).
    pub asked: usize,
    /// How many were created.
    pub created: usize,
    /// How many answered a query once all were up.
    pub answering: usize,
    /// Why creation stopped early, if it did.
    pub first_error: Option<String>,
    /// Creation times as more and more branches were alive.
    pub create: Option<Summary>,
    /// Creation time of the last branch.
    pub last_create_ms: Option<f64>,
    /// Mean PSS of an idle branch (its postmaster and children).
    pub pss_per_branch_bytes: Option<u64>,
    /// Smallest branch PSS.
    pub pss_min_bytes: Option<u64>,
    /// Largest branch PSS.
    pub pss_max_bytes: Option<u64>,
    /// Mean number of processes per idle branch.
    pub processes_per_branch: Option<f64>,
    /// MemAvailable before creating them.
    pub mem_available_before: Option<u64>,
    /// MemAvailable with all of them alive.
    pub mem_available_after: Option<u64>,
    /// (before - after) / created.
    pub mem_available_drop_per_branch_bytes: Option<i64>,
}

/// pgbench tpcb-like on a branch and on its source.
#[derive(Debug, Serialize)]
pub struct TpsReport {
    /// Scale.
    pub scale: u32,
    /// Seconds of each run.
    pub seconds: u32,
    /// pgbench -c.
    pub clients: u32,
    /// pgbench -j.
    pub threads: u32,
    /// On the branch.
    pub branch: TpsRun,
    /// On the source.
    pub source: TpsRun,
    /// branch TPS / source TPS.
    pub ratio: Option<f64>,
}

/// One pgbench run.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum TpsRun {
    /// It ran.
    Measured {
        /// Transactions per second (without initial connection time).
        tps: f64,
        /// Mean latency.
        latency_ms: Option<f64>,
    },
    /// It failed.
    Failed {
        /// The error.
        error: String,
    },
}

impl TpsRun {
    /// The TPS, if measured.
    pub fn tps(&self) -> Option<f64> {
        match self {
            TpsRun::Measured { tps, .. } => Some(*tps),
            TpsRun::Failed { .. } => None,
        }
    }
}

/// A figure against its target.
#[derive(Debug, Serialize)]
pub struct TargetCheck {
    /// The figure.
    pub what: String,
    /// The target, as the issue states it.
    pub target: String,
    /// The measured value, formatted.
    pub value: String,
    /// Whether the target was met; `None` when not tested (a quick run
    /// asking for fewer live branches than the target).
    pub met: Option<bool>,
    /// Whether the target applies to this pool (targets are set for
    /// copy-on-write pools: btrfs and reflink).
    pub applies: bool,
}
