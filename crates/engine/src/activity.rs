//! When each branch was last in use, kept in one place for every pgfork
//! process: `branches.active_at_ms` in meta.db. Whoever sees a branch in
//! use records it there ([`touch`]): the engine when a branch is made,
//! started or reset, the proxy for its sessions, the API and MCP for
//! requests about a branch, the reaper for sessions it finds. The reaper
//! and the proxy's idle stop read it back ([`Engine::branch_idle`]), so
//! that use one of them saw keeps the branch awake for the others, and a
//! restarted `serve` remembers it.
//!
//! Writes are throttled to one per branch per process every
//! [`WRITE_EVERY`], so that a busy proxy does not write meta.db per
//! session; the process itself remembers every use, so its own readers
//! see the newest (others see it at most [`WRITE_EVERY`] late).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgfork_pg::untrusted::session::Endpoint;
use pgfork_pool::meta::BranchRow;
use pgfork_pool::{Home, Meta};

use crate::view::BranchInfo;
use crate::{Engine, EngineError, Result};

/// Longest time between two writes of one branch's activity by one process.
pub const WRITE_EVERY: Duration = Duration::from_secs(1);

/// What this process knows of a branch's use.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The latest use seen.
    used: SystemTime,
    /// When it was last written to meta.db.
    written: Option<Instant>,
}

/// Uses seen by this process, by home and branch.
static SEEN: Mutex<Option<HashMap<(PathBuf, String), Seen>>> = Mutex::new(None);

fn with_seen<T>(f: impl FnOnce(&mut HashMap<(PathBuf, String), Seen>) -> T) -> T {
    let mut guard = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

fn key(home: &Home, branch: &str) -> (PathBuf, String) {
    (home.root().to_path_buf(), branch.to_string())
}

/// Notes a use of `branch` now; returns its time if meta.db is due a write.
fn note(home: &Home, branch: &str) -> Option<SystemTime> {
    let now = SystemTime::now();
    with_seen(|seen| {
        let s = seen.entry(key(home, branch)).or_insert(Seen {
            used: now,
            written: None,
        });
        s.used = now;
        if s.written.is_some_and(|w| w.elapsed() < WRITE_EVERY) {
            return None;
        }
        s.written = Some(Instant::now());
        Some(now)
    })
}

/// Lets the next use be written again, after a write that failed.
fn unwritten(home: &Home, branch: &str) {
    with_seen(|seen| {
        if let Some(s) = seen.get_mut(&key(home, branch)) {
            s.written = None;
        }
    });
}

/// The latest use of `branch` this process saw, if any.
fn seen(home: &Home, branch: &str) -> Option<SystemTime> {
    with_seen(|seen| seen.get(&key(home, branch)).map(|s| s.used))
}

/// Forgets a branch (deleted): a new one of the same name starts afresh.
pub(crate) fn forget(home: &Home, branch: &str) {
    with_seen(|seen| seen.remove(&key(home, branch)));
}

/// Unix seconds of `t` (0 before the epoch).
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    unix_ms(t) / 1000
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Records that `branch` of `home` is in use now. Cheap: meta.db is
/// written at most once per [`WRITE_EVERY`] per branch by this process
/// (opened without an engine, so without a reconcile). An unknown branch
/// is left alone.
pub fn touch(home: &Home, branch: &str) -> Result<()> {
    let Some(at) = note(home, branch) else {
        return Ok(());
    };
    let written = Meta::open(&home.meta_db(), false)
        .and_then(|mut m| m.write(|c| BranchRow::touch(c, branch, unix_ms(at))));
    settle(home, branch, written)
}

/// [`touch`], for a request of `actor`: an agent's request about a branch
/// it may not use is no use of it (the request is refused as
/// unknown), so that nobody keeps another's branch from its idle stop.
pub fn touch_as(home: &Home, actor: &crate::Actor, branch: &str) -> Result<()> {
    if let crate::Actor::Agent(_) = actor {
        let meta = Meta::open(&home.meta_db(), false)?;
        let usable = BranchRow::get(meta.conn(), branch)?
            .is_some_and(|row| crate::scope::may_use(meta.conn(), actor, &row));
        if !usable {
            return Ok(());
        }
    }
    touch(home, branch)
}

/// After a write: a failed one is tried again at the next use rather than
/// a second later, and an unknown branch is not remembered.
fn settle(
    home: &Home,
    branch: &str,
    written: std::result::Result<bool, pgfork_pool::MetaError>,
) -> Result<()> {
    match written {
        Ok(true) => {}
        Ok(false) => forget(home, branch),
        Err(_) => unwritten(home, branch),
    }
    written.map(drop).map_err(EngineError::from)
}

/// Client sessions on a running branch, not counting pgfork's own
/// connections (application name `pgfork`) or this query's.
pub fn client_sessions(branch: &BranchInfo) -> std::result::Result<i64, postgres::Error> {
    // pg_stat_activity is cluster-wide: read it from the maintenance
    // database, where nothing of the agent's lives.
    let mut client = pgfork_pg::untrusted::session::maintenance(&Endpoint {
        socket_dir: branch.socket_dir.clone(),
        port: branch.port,
    })?;
    let row = client.query_one(
        "SELECT count(*) FROM pg_stat_activity
          WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
            AND coalesce(application_name, '') <> 'pgfork'",
        &[],
    )?;
    Ok(row.get(0))
}

impl Engine {
    /// Sessions agent `name` holds now: client sessions on its branch
    /// (policy `branch`), or its role's sessions on its source (read-only,
    /// dry-run). `None` when its server is not running, or its branches
    /// are per session.
    pub fn agent_sessions(&self, name: &str) -> Result<Option<i64>> {
        let agent = self.agent_info(name)?;
        let what = format!("counting the sessions of agent '{name}'");
        if agent.policy == "branch" {
            let Some(branch) = agent.branch.filter(|b| b != "per-session") else {
                return Ok(None);
            };
            return match self.branch_info(&branch) {
                Ok(info) if info.status == "running" => client_sessions(&info)
                    .map(Some)
                    .map_err(EngineError::sql(&what)),
                _ => Ok(None),
            };
        }
        let source = self.source_info(&agent.source)?;
        if source.status != "running" {
            return Ok(None);
        }
        let mut client = pgfork_pg::untrusted::session::maintenance(&Endpoint {
            socket_dir: source.socket_dir.clone(),
            port: source.port,
        })
        .map_err(EngineError::sql(&what))?;
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE usename = $1",
                &[&crate::agent_roles::role_name(name)],
            )
            .map_err(EngineError::sql(&what))?;
        Ok(Some(row.get(0)))
    }

    /// Records that branch `name` is in use now, as [`touch`] does. A
    /// failure is logged, never fatal: it only shortens the branch's idle
    /// time as others see it.
    pub fn touch_branch(&mut self, name: &str) {
        let Some(at) = note(&self.home, name) else {
            return;
        };
        let written = self.meta.write(|c| BranchRow::touch(c, name, unix_ms(at)));
        if let Err(e) = settle(&self.home, name, written) {
            tracing::warn!("recording activity of branch {name}: {e}");
        }
    }

    /// When a branch was last in use: the newest of what meta.db holds
    /// (whoever wrote it), what this process saw, and its creation.
    pub(crate) fn last_active(&self, row: &BranchRow) -> SystemTime {
        let stored = (row.active_at_ms.unwrap_or(0)).max(row.created_at.saturating_mul(1000));
        let stored = UNIX_EPOCH + Duration::from_millis(stored.max(0) as u64);
        seen(&self.home, &row.name).map_or(stored, |s| s.max(stored))
    }

    /// How long branch `name` has been idle. `None` while a client session
    /// is on it (a use, which is recorded); else the time since its last
    /// recorded use. An error if its running server cannot be asked: then
    /// it is not known to be idle.
    pub fn branch_idle(&mut self, name: &str) -> Result<Option<Duration>> {
        let info = self.branch_info(name)?;
        if info.status == "running" {
            let sessions = client_sessions(&info).map_err(EngineError::sql(&format!(
                "counting the sessions of branch '{name}'"
            )))?;
            if sessions > 0 {
                self.touch_branch(name);
                return Ok(None);
            }
        }
        // Read after the sessions, so that use recorded meanwhile counts.
        let row = self.branch_row(name)?;
        let last = self.last_active(&row);
        Ok(Some(
            SystemTime::now().duration_since(last).unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_throttled_but_every_use_is_seen() {
        let home = Home::resolve(Some(std::path::Path::new("/nonexistent/pgfork-activity")));
        let first = note(&home, "b1");
        assert!(first.is_some(), "the first use is written");
        assert!(
            note(&home, "b1").is_none(),
            "a second one within a second is not"
        );
        assert!(seen(&home, "b1").unwrap() >= first.unwrap());
        assert!(note(&home, "b2").is_some(), "branches are throttled apart");
        unwritten(&home, "b1");
        assert!(note(&home, "b1").is_some(), "a failed write is retried");
        forget(&home, "b1");
        assert!(seen(&home, "b1").is_none());
        // Touching a home that has no meta.db fails, and is retried.
        assert!(touch(&home, "b3").is_err());
        assert!(note(&home, "b3").is_some());
    }
}
