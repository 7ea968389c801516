//! `pgfork bench`: branch creation measured against baselines.

use anyhow::{Result, bail};
use pgfork_engine::Engine;

use crate::cli::BenchArgs;

/// Runs the benchmark on the home `engine` has open.
pub fn run(_engine: Engine, _args: BenchArgs, _json: bool) -> Result<()> {
    bail!("pgfork bench is being written in this session")
}
