//! How many branches can be alive at once, and what an idle one costs in
//! memory.

use std::time::Duration;

use pgfork_engine::Engine;

use super::child::{Created, Pgfork};
use super::conn::{AppConn, first_query};
use super::progress::BenchProgress;
use super::report::LiveReport;
use super::stats::{Summary, millis};
use super::system::{meminfo, server_pss};

/// Creates branches of `snapshot` one after another until `max` are alive
/// or one fails; checks that all answer; measures their memory; deletes them.
pub fn run(
    engine: &mut Engine,
    cli: &Pgfork,
    snapshot: &str,
    scale: u32,
    max: usize,
    progress: &BenchProgress,
) -> LiveReport {
    let before = meminfo("MemAvailable");
    let mut created: Vec<Created> = Vec::new();
    let mut first_error = None;
    for i in 1..=max {
        if let Err(e) = super::interrupt::check() {
            first_error = Some(e.to_string());
            break;
        }
        let name = format!("bench-live-{i:03}");
        progress.step(format!("live branches: creating {i}/{max}"));
        match cli.create_branch(&name, snapshot) {
            Ok(c) => created.push(c),
            Err(e) => {
                first_error = Some(format!("branch {i}: {e:#}"));
                // A half-made branch may remain if the command itself
                // failed oddly: the final sweep removes it by label.
                break;
            }
        }
    }
    progress.step(format!(
        "live branches: {} up, checking each answers",
        created.len()
    ));
    let answering = created.iter().filter(|c| answers(engine, &c.name)).count();
    // Let start-up work (autovacuum launcher, stats) settle into idleness.
    std::thread::sleep(Duration::from_secs(2));
    let after = meminfo("MemAvailable");
    let memory: Vec<(u64, usize)> = created
        .iter()
        .filter_map(|c| c.pid)
        .map(server_pss)
        .filter(|(_, n)| *n > 0)
        .collect();

    let times: Vec<Duration> = created.iter().map(|c| c.to_query).collect();
    let n = created.len();
    for (i, c) in created.iter().enumerate() {
        progress.step(format!("live branches: deleting {}/{n}", i + 1));
        if let Err(e) = engine.branch_delete(&c.name, true) {
            progress.note(&format!("warning: deleting {}: {e}", c.name));
        }
    }
    let pss: Vec<u64> = memory.iter().map(|(b, _)| *b).collect();
    LiveReport {
        scale,
        asked: max,
        created: n,
        answering,
        first_error,
        create: Summary::of(&times),
        last_create_ms: times.last().map(|d| millis(*d)),
        pss_per_branch_bytes: (!pss.is_empty()).then(|| pss.iter().sum::<u64>() / pss.len() as u64),
        pss_min_bytes: pss.iter().min().copied(),
        pss_max_bytes: pss.iter().max().copied(),
        processes_per_branch: (!memory.is_empty())
            .then(|| memory.iter().map(|(_, p)| *p).sum::<usize>() as f64 / memory.len() as f64),
        mem_available_before: before,
        mem_available_after: after,
        mem_available_drop_per_branch_bytes: match (before, after) {
            (Some(b), Some(a)) if n > 0 => Some((b as i64 - a as i64) / n as i64),
            _ => None,
        },
    }
}

/// Whether a branch answers a query on a new connection, now.
fn answers(engine: &Engine, name: &str) -> bool {
    let Ok(info) = engine.branch_info(name) else {
        return false;
    };
    let Some(dsn) = info.dsn_with_password() else {
        return false;
    };
    AppConn::parse(&dsn)
        .and_then(|c| first_query(&c, Duration::from_secs(5)))
        .is_ok()
}
