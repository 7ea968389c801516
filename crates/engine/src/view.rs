//! What commands show: sources, snapshots and branches as users see them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use pgfork_pool::meta::{BranchRow, Op, RunState, SnapshotRow, SourceRow};
use serde::Serialize;

use crate::CreateTimings;

/// A `postgres://` connection string. Its `Debug` hides the password, so
/// it cannot leak into logs by accident; [`Dsn::url`] reveals it.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    /// Host (always loopback).
    pub host: String,
    /// The unix socket directory instead, for a branch without TCP (one
    /// made for the proxy's agents; only root and pgfork can enter it).
    pub socket_dir: Option<PathBuf>,
    /// Port.
    pub port: u16,
    /// Role.
    pub user: String,
    /// Password.
    pub password: String,
    /// Database.
    pub database: String,
}

impl Dsn {
    /// The full URL, password included: a secret.
    pub fn url(&self) -> String {
        self.render(&self.password)
    }
    /// The URL with the password masked, for display and logs.
    pub fn redacted(&self) -> String {
        self.render("********")
    }
    fn render(&self, password: &str) -> String {
        match &self.socket_dir {
            Some(dir) => format!(
                "postgresql://{}:{password}@/{}?host={}&port={}",
                self.user,
                self.database,
                dir.display(),
                self.port
            ),
            None => format!(
                "postgres://{}:{password}@{}:{}/{}",
                self.user, self.host, self.port, self.database
            ),
        }
    }
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LAST_SECOND: i64 = 253_402_300_799;

/// Unix seconds as RFC 3339, or `None` before 1970 or after the year 9999
/// (which RFC 3339 cannot write).
pub fn try_timestamp(secs: i64) -> Option<String> {
    (0..=LAST_SECOND).contains(&secs).then(|| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs as u64)).to_string()
    })
}

/// Unix seconds as RFC 3339, clamped into the range it can write: never a
/// panic, whatever a row holds.
pub fn timestamp(secs: i64) -> String {
    try_timestamp(secs.clamp(0, LAST_SECOND)).unwrap_or_default()
}

fn status(op: Option<Op>, state: RunState, alive: bool) -> &'static str {
    match (op, state) {
        (Some(op), _) => op.kind.as_str(),
        (None, RunState::Running) if alive => "running",
        (None, RunState::Running) => "crashed",
        (None, RunState::Stopped) => "stopped",
    }
}

/// A branch as shown by `branch info` and `branch list`.
#[derive(Debug, Clone, Serialize)]
pub struct BranchInfo {
    /// Name.
    pub name: String,
    /// Source its data came from.
    pub source: String,
    /// Base snapshot (`reset` returns here).
    pub snapshot: String,
    /// Branch it was made from, if any.
    pub parent_branch: Option<String>,
    /// Who made it: `admin:NAME` or `agent:NAME` (null: before identities).
    pub created_by: Option<String>,
    /// `running`, `stopped`, `crashed`, or an operation in progress.
    pub status: &'static str,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Connection string (password masked unless asked for).
    pub dsn: String,
    /// Database name.
    pub database: String,
    /// Role the DSN logs in as (not a superuser).
    pub user: String,
    /// Postmaster pid while running.
    pub pid: Option<i32>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Unix socket directory (superuser access, for pgfork itself).
    pub socket_dir: PathBuf,
    /// Server log.
    pub log: PathBuf,
    /// Whether it listens on TCP (false: only the proxy reaches it, over
    /// the unix socket).
    pub tcp: bool,
    /// The OS uid its server runs as, when it has a sandbox uid of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_uid: Option<u32>,
    /// Creation time.
    pub created_at: String,
    /// Expiry time, if it has a TTL.
    pub expires_at: Option<String>,
    /// When it was last in use (made, started, a session, a request about
    /// it): its idle time counts from here.
    pub last_active_at: String,
    /// Whether `gc` leaves it alone.
    pub protected: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Timings of its creation (recorded for branches made since meta.db
    /// schema 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<CreateTimings>,
    /// Bytes that no longer share blocks with its base snapshot (storage
    /// growth). Walks every file, so only `branch info` fills it in (see
    /// [`crate::Engine::branch_unshared_bytes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unshared_bytes: Option<u64>,
    /// The most bytes it may hold of its own (`--max-size`), enforced by
    /// the filesystem; `unshared_bytes` is what it holds.
    pub max_size: Option<u64>,
    /// What is wrong with its stored row, and what to do, when part of it
    /// cannot be shown (the rest is shown as well as it can be).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// CPU, memory and process limits, its control groups, and what it
    /// uses (`branch info` only).
    pub compute: crate::ComputeInfo,
    #[serde(skip)]
    pub(crate) secret: Option<Dsn>,
}

/// What is wrong with a branch row that cannot be shown whole, and what
/// to do about it; `None` for a sound row.
fn row_error(
    row: &BranchRow,
    source: Option<&SourceRow>,
    snapshot: Option<&SnapshotRow>,
) -> Option<String> {
    let name = &row.name;
    let mut problems = row.problems.clone();
    if source.is_none() {
        problems.push(format!(
            "its source '{}' is missing from meta.db, so it has no connection string",
            row.source
        ));
    }
    if snapshot.is_none() {
        problems.push(format!(
            "its base snapshot (number {}) is missing from meta.db, so `pgfork branch reset {name}` cannot work",
            row.snapshot_id
        ));
    }
    if try_timestamp(row.created_at).is_none() {
        problems.push(format!(
            "its creation time (Unix {}) is out of range",
            row.created_at
        ));
    }
    if let Some(at) = row.expires_at.filter(|t| try_timestamp(*t).is_none()) {
        problems.push(format!(
            "its expiry (Unix {at}) is out of range (stored by a pgfork without TTL bounds), so it is \
             shown without one: `pgfork branch set {name} --ttl 7d` (or --no-ttl) stores a sound one"
        ));
    }
    (!problems.is_empty()).then(|| {
        format!(
            "{}; to remove it: `pgfork branch delete {name}`",
            problems.join("; ")
        )
    })
}

impl BranchInfo {
    /// A branch as shown: `source` and `snapshot` are its rows, if they
    /// still exist; whatever cannot be shown is said in `error`;
    /// `last_active` is in Unix seconds.
    pub(crate) fn new(
        row: &BranchRow,
        source: Option<&SourceRow>,
        snapshot: Option<&SnapshotRow>,
        (dir, socket_dir, log): (PathBuf, PathBuf, PathBuf),
        last_active: i64,
    ) -> Self {
        let alive = row.postmaster.is_some_and(|p| p.is_alive());
        let dsn = source.map(|source| Dsn {
            host: "127.0.0.1".into(),
            socket_dir: (!row.tcp).then(|| socket_dir.clone()),
            port: row.port,
            user: source.role.clone(),
            password: row.password.clone(),
            database: source.database.clone(),
        });
        BranchInfo {
            name: row.name.clone(),
            source: row.source.clone(),
            snapshot: snapshot
                .map(SnapshotRow::label)
                .unwrap_or_else(|| row.snapshot_id.to_string()),
            parent_branch: row.parent_branch.clone(),
            status: status(row.op, row.state, alive),
            port: row.port,
            dsn: dsn.as_ref().map(Dsn::redacted).unwrap_or_default(),
            database: source.map(|s| s.database.clone()).unwrap_or_default(),
            user: source.map(|s| s.role.clone()).unwrap_or_default(),
            pid: row.postmaster.filter(|_| alive).map(|p| p.pid),
            data_dir: dir,
            socket_dir,
            log,
            tcp: row.tcp,
            os_uid: row.uid,
            created_at: timestamp(row.created_at),
            expires_at: row.expires_at.and_then(try_timestamp),
            last_active_at: timestamp(last_active),
            protected: row.protected,
            labels: row.labels.clone(),
            timings: row.timings.map(|t| CreateTimings {
                snapshot_ms: t.snapshot_ms.map(|v| v.max(0) as u64),
                clone_ms: t.clone_ms.max(0) as u64,
                start_ms: t.start_ms.max(0) as u64,
                total_ms: t.total_ms.max(0) as u64,
            }),
            unshared_bytes: None,
            max_size: row.max_size,
            created_by: row.created_by.clone(),
            error: row_error(row, source, snapshot),
            compute: crate::ComputeInfo::default(),
            secret: dsn,
        }
    }

    /// The connection string with its password: a secret.
    pub fn dsn_with_password(&self) -> Option<String> {
        self.secret.as_ref().map(Dsn::url)
    }

    /// Puts the password into `dsn`, for output the user asked for.
    pub fn reveal(mut self) -> Self {
        if let Some(secret) = &self.secret {
            self.dsn = secret.url();
        }
        self
    }
}

/// A source as shown by `source info` and `source list`.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    /// Name.
    pub name: String,
    /// `local`.
    pub mode: String,
    /// `running`, `stopped`, `crashed`, or an operation in progress.
    pub status: &'static str,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Application database.
    pub database: String,
    /// Application role (owns the database; branches log in as it).
    pub user: String,
    /// Connection string (password masked unless asked for).
    pub dsn: String,
    /// Postmaster pid while running.
    pub pid: Option<i32>,
    /// PostgreSQL major version.
    pub pg_major: u32,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Unix socket directory (superuser access).
    pub socket_dir: PathBuf,
    /// Server log.
    pub log: PathBuf,
    /// Creation time.
    pub created_at: String,
    /// Number of ready snapshots.
    pub snapshots: usize,
    /// Number of branches.
    pub branches: usize,
    /// Where a remote source comes from (URL without password) and its refreshes.
    pub remote: Option<RemoteInfo>,
    /// Replication state of a physical source that is running.
    pub lag: Option<crate::Lag>,
    /// Seconds between scheduled snapshots, and how many are kept.
    pub snapshot_schedule: Option<(i64, i64)>,
    /// `rules`, `none`, or `unmasked-allowed`.
    pub masking: &'static str,
    /// The compute limits each new branch of it gets unless `branch
    /// create` says otherwise (`pgfork source limits`).
    pub branch_limits: crate::LimitsView,
    /// The control groups its server runs in (a share of the CPU larger
    /// than all branches' together; see `pgfork doctor`).
    pub cgroups: Vec<PathBuf>,
    #[serde(skip)]
    pub(crate) secret: Option<Dsn>,
}

/// A remote source's origin and refresh state.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteInfo {
    /// URL, without password.
    pub url: String,
    /// Whether the password is stored in meta.db.
    pub password_saved: bool,
    /// Seconds between scheduled refreshes (logical).
    pub refresh_every: Option<i64>,
    /// Last successful refresh.
    pub refreshed_at: Option<String>,
    /// Error of the last failed refresh.
    pub refresh_error: Option<String>,
}

impl SourceInfo {
    pub(crate) fn new(
        row: &SourceRow,
        paths: (PathBuf, PathBuf, PathBuf),
        snapshots: usize,
        branches: usize,
    ) -> Self {
        let alive = row.postmaster.is_some_and(|p| p.is_alive());
        let dsn = Dsn {
            host: "127.0.0.1".into(),
            socket_dir: None,
            port: row.port,
            user: row.role.clone(),
            password: row.password.clone(),
            database: row.database.clone(),
        };
        SourceInfo {
            name: row.name.clone(),
            mode: row.mode.clone(),
            status: status(row.op, row.state, alive),
            port: row.port,
            database: row.database.clone(),
            user: row.role.clone(),
            dsn: dsn.redacted(),
            pid: row.postmaster.filter(|_| alive).map(|p| p.pid),
            pg_major: row.pg_major,
            data_dir: paths.0,
            socket_dir: paths.1,
            log: paths.2,
            created_at: timestamp(row.created_at),
            snapshots,
            branches,
            remote: None,
            lag: None,
            snapshot_schedule: None,
            masking: "none",
            branch_limits: crate::LimitsView::default(),
            cgroups: Vec::new(),
            secret: (row.mode == "local").then_some(dsn),
        }
    }

    /// The application connection string with its password: a secret.
    pub fn dsn_with_password(&self) -> Option<String> {
        self.secret.as_ref().map(Dsn::url)
    }

    /// A superuser connection string over the unix socket (no password:
    /// only the server's OS user and root can reach the socket).
    pub fn superuser_dsn(&self) -> String {
        format!(
            "postgresql:///{}?host={}&port={}&user={}",
            self.database,
            self.socket_dir.display(),
            self.port,
            pgfork_pg::SUPERUSER
        )
    }
}

/// A snapshot as shown by `snapshot info` and `snapshot list`.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    /// Id as users type it: `ORIGIN@N`.
    pub id: String,
    /// Number.
    pub number: i64,
    /// Source of the data.
    pub source: String,
    /// Branch it was taken of, if any.
    pub parent_branch: Option<String>,
    /// `ready` or `creating`/`deleting`.
    pub status: &'static str,
    /// Creation time.
    pub created_at: String,
    /// How it was taken: `atomic` (btrfs), `online-backup`, `stopped`;
    /// `replaced`: a source's old data, displaced by `promote --replace`.
    pub method: Option<String>,
    /// WAL position it is consistent at.
    pub lsn: Option<String>,
    /// Milliseconds spent sealing it.
    pub seal_ms: Option<i64>,
    /// Branches cloned from it.
    pub branches: Vec<String>,
    /// Directory.
    pub data_dir: PathBuf,
}

impl SnapshotInfo {
    pub(crate) fn new(row: &SnapshotRow, branches: Vec<String>, dir: PathBuf) -> Self {
        SnapshotInfo {
            id: row.label(),
            number: row.id,
            source: row.source.clone(),
            parent_branch: row.parent_branch.clone(),
            status: row.op.map(|o| o.kind.as_str()).unwrap_or("ready"),
            created_at: timestamp(row.created_at),
            method: row.method.clone(),
            lsn: row.lsn.clone(),
            seal_ms: row.seal_ms,
            branches,
            data_dir: dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_debug_hides_the_password() {
        let dsn = Dsn {
            host: "127.0.0.1".into(),
            socket_dir: None,
            port: 5,
            user: "u".into(),
            password: "s3cret".into(),
            database: "d".into(),
        };
        assert!(!format!("{dsn:?}").contains("s3cret"));
        assert!(dsn.url().contains("s3cret"));
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        let unix = Dsn {
            socket_dir: Some("/h/run/branch-a".into()),
            ..dsn
        };
        assert_eq!(
            unix.redacted(),
            "postgresql://u:********@/d?host=/h/run/branch-a&port=5"
        );
    }

    #[test]
    fn timestamps_never_panic() {
        assert_eq!(timestamp(-5), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(9_999_999_999_999), "9999-12-31T23:59:59Z");
        assert_eq!(timestamp(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(try_timestamp(9_999_999_999_999), None);
        assert_eq!(
            try_timestamp(LAST_SECOND).as_deref(),
            Some("9999-12-31T23:59:59Z")
        );
    }
}
