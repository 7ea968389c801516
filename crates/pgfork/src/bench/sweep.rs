//! Leaving nothing behind: what the benchmark makes is found again by its
//! marks (branch label, database prefix, source names, a fixed copy
//! directory) and removed, at the end of a run and at the start of the
//! next one in case a run was interrupted.

use std::collections::BTreeMap;

use anyhow::Result;
use pgfork_engine::Engine;

use super::baselines::{DB_PREFIX, drop_database, remove_copy, superuser};
use super::child::BENCH_LABEL;
use super::load::is_bench_source;

/// Removes bench branches, baseline copies and databases, and the
/// snapshots of bench sources that no branch uses. Returns what it removed;
/// failures are collected as warnings rather than stopping the sweep.
pub fn sweep(engine: &mut Engine) -> (Vec<String>, Vec<String>) {
    let mut removed = Vec::new();
    let mut warnings = Vec::new();
    let (key, value) = BENCH_LABEL.split_once('=').expect("KEY=VALUE");
    let labels = BTreeMap::from([(key.to_string(), value.to_string())]);
    match engine.branch_list(&labels) {
        Ok(branches) => {
            for b in branches {
                match engine.branch_delete(&b.name, true) {
                    Ok(d) => removed.extend(d),
                    Err(e) => warnings.push(format!("delete branch {}: {e}", b.name)),
                }
            }
        }
        Err(e) => warnings.push(format!("list bench branches: {e}")),
    }
    if let Err(e) = remove_copy(engine.home()) {
        warnings.push(format!("remove the baseline copy: {e:#}"));
    }
    let sources = engine.source_list().unwrap_or_default();
    for src in sources.iter().filter(|s| is_bench_source(&s.name)) {
        if src.status == "running" {
            match bench_databases(src) {
                Ok(names) => {
                    for name in names {
                        match drop_database(src, &name) {
                            Ok(()) => removed.push(format!("database {name} in {}", src.name)),
                            Err(e) => warnings.push(format!("{e:#}")),
                        }
                    }
                }
                Err(e) => warnings.push(format!("{e:#}")),
            }
        }
        for snap in engine.snapshot_list(Some(&src.name)).unwrap_or_default() {
            if snap.branches.is_empty() {
                match engine.snapshot_delete(&snap.id, false) {
                    Ok(d) => removed.extend(d),
                    Err(e) => warnings.push(format!("delete snapshot {}: {e}", snap.id)),
                }
            }
        }
    }
    (removed, warnings)
}

fn bench_databases(src: &pgfork_engine::SourceInfo) -> Result<Vec<String>> {
    let rows = superuser(src)?.query(
        "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
        &[&DB_PREFIX],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
