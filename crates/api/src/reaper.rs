//! The reaper inside `pgfork serve`: on every pass it deletes branches
//! whose TTL has passed (the engine's gc), runs scheduled work that is due
//! (the engine's tick), stops running branches that have had no client
//! session for `idle_stop`, and deletes unprotected branches that have had
//! none for `idle_delete`. A second, slower loop samples how many bytes
//! each branch no longer shares with its snapshot, for the metrics.
//!
//! Idle time is the time since the branch was last in use, as every pgfork
//! process records it in meta.db (see [`pgfork_engine::activity`]): made,
//! started or woken, a proxy session, an API or MCP request, a session a
//! pass found. A branch with a client session is never idle. So what the
//! proxy saw keeps a branch awake here, and a restarted daemon remembers.

use std::collections::BTreeMap;
use std::time::Duration;

use pgfork_engine::{Engine, EngineError};

use crate::metrics::ReaperAction;
use pgfork_engine::Actor;

use crate::state::Shared;

/// When the reaper acts.
#[derive(Debug, Clone, Copy)]
pub struct ReaperOptions {
    /// Time between passes.
    pub every: Duration,
    /// Stop a running branch idle this long.
    pub idle_stop: Option<Duration>,
    /// Delete an unprotected branch idle this long.
    pub idle_delete: Option<Duration>,
}

/// How often unshared bytes are sampled (for the metrics and the
/// dashboard's storage charts): it reads every file's extent map.
const STORAGE_EVERY: Duration = Duration::from_secs(30);

/// Runs reaper passes until the task is dropped.
pub async fn run(shared: Shared, opts: ReaperOptions) {
    let mut timer = tokio::time::interval(opts.every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let s = shared.clone();
        let result = shared
            .engine_as(Actor::Admin("reaper".into()), move |e| {
                pass(e, &s, opts);
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::warn!("reaper pass: {}", e.message);
        }
    }
}

/// Samples unshared bytes of every branch until the task is dropped.
pub async fn sample_storage(shared: Shared) {
    let mut timer = tokio::time::interval(STORAGE_EVERY);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let metrics = shared.metrics.clone();
        let result = shared
            .engine_as(Actor::Admin("reaper".into()), move |e| {
                let mut sample = BTreeMap::new();
                for b in e.branch_list(&BTreeMap::new())? {
                    if let Ok(n) = e.branch_unshared_bytes(&b.name) {
                        sample.insert(b.name, n);
                    }
                }
                metrics.set_unshared(sample);
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::warn!("sampling branch storage: {}", e.message);
        }
    }
}

fn deleted_branches(list: &[String]) -> u64 {
    list.iter().filter(|d| d.starts_with("branch ")).count() as u64
}

/// One pass; failures are logged, never fatal.
fn pass(e: &mut Engine, s: &Shared, opts: ReaperOptions) {
    match e.gc() {
        Ok(report) => s
            .metrics
            .reaped(ReaperAction::TtlDelete, deleted_branches(&report.deleted)),
        Err(err) => tracing::warn!("reaper: gc: {err}"),
    }
    match e.tick() {
        Ok(report) => {
            for (what, why) in &report.errors {
                tracing::warn!("reaper: scheduled {what}: {why}");
            }
        }
        Err(err) => tracing::warn!("reaper: tick: {err}"),
    }
    if (opts.idle_stop.is_some() || opts.idle_delete.is_some())
        && let Err(err) = idle(e, s, opts)
    {
        tracing::warn!("reaper: idle branches: {err}");
    }
    reap_zombie_postmasters();
}

fn idle(e: &mut Engine, s: &Shared, opts: ReaperOptions) -> Result<(), EngineError> {
    for b in e.branch_list(&BTreeMap::new())? {
        let idle_for = match e.branch_idle(&b.name) {
            Ok(Some(idle)) => idle,
            // A client session is on it (now recorded as a use).
            Ok(None) => continue,
            // A branch that cannot be asked is not known to be idle.
            Err(err) => {
                tracing::debug!("reaper: sessions of {}: {err}", b.name);
                continue;
            }
        };
        let settled = b.status == "running" || b.status == "stopped" || b.status == "crashed";
        if let Some(limit) = opts.idle_delete
            && settled
            && !b.protected
            && idle_for >= limit
        {
            match e.branch_delete(&b.name, false) {
                Ok(_) => {
                    tracing::info!(
                        "reaper: deleted branch {} (idle {}s)",
                        b.name,
                        idle_for.as_secs()
                    );
                    s.metrics.reaped(ReaperAction::IdleDelete, 1);
                }
                Err(err) => tracing::info!("reaper: kept idle branch {}: {err}", b.name),
            }
            continue;
        }
        if let Some(limit) = opts.idle_stop
            && b.status == "running"
            && idle_for >= limit
        {
            match e.branch_stop(&b.name) {
                Ok(_) => {
                    tracing::info!(
                        "reaper: stopped branch {} (idle {}s)",
                        b.name,
                        idle_for.as_secs()
                    );
                    s.metrics.reaped(ReaperAction::IdleStop, 1);
                }
                Err(err) => tracing::info!("reaper: could not stop idle branch {}: {err}", b.name),
            }
        }
    }
    Ok(())
}

/// Postmasters this daemon started are its children: one that exits
/// because another pgfork process stopped or deleted its branch would stay
/// a zombie for the daemon's lifetime. Only exited `postgres` children are
/// reaped, so that no other child's exit status is taken from its waiter.
fn reap_zombie_postmasters() {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let mut fields = stat[close + 1..].split_ascii_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if comm == "postgres" && state == Some("Z") && ppid == Some(me.as_str()) {
            // SAFETY: waitpid on our own exited child, without blocking.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
    }
}
