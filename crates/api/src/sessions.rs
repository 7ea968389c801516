//! Who is using a branch: client sessions counted from `pg_stat_activity`
//! (as the superuser, in the maintenance database), and the last time
//! anyone was seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use pgfork_engine::view::BranchInfo;
use pgfork_pg::untrusted::session::Endpoint;

/// Client sessions on a running branch, not counting pgfork's own
/// connections (application name `pgfork`) or this query's.
pub fn count(branch: &BranchInfo) -> Result<i64, postgres::Error> {
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

/// When each branch was last seen in use by this daemon: sessions found by
/// the reaper, or a request about it (create, start, reset, an MCP query).
#[derive(Debug, Default)]
pub struct Activity {
    seen: Mutex<HashMap<String, Instant>>,
}

impl Activity {
    /// Records use of `branch` now.
    pub fn touch(&self, branch: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(branch.to_string(), Instant::now());
    }

    /// When `branch` was last used, if this daemon saw it.
    pub fn last(&self, branch: &str) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(branch)
            .copied()
    }

    /// Forgets branches that no longer exist.
    pub fn retain(&self, names: &[&str]) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| names.contains(&k.as_str()));
    }
}
