//! Rows of meta.db and the queries on them.

use std::collections::BTreeMap;

use pgfork_os::ProcessId;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::MetaError;

/// Whether a server should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Its postmaster runs (or ran until it crashed).
    Running,
    /// Stopped on purpose; its data stays.
    Stopped,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Stopped => "stopped",
        }
    }
    fn parse(s: &str) -> Result<RunState, MetaError> {
        match s {
            "running" => Ok(RunState::Running),
            "stopped" => Ok(RunState::Stopped),
            _ => Err(MetaError::Corrupt {
                table: "*",
                column: "state",
                value: s.into(),
            }),
        }
    }
}

/// An operation in progress on a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Being created: nothing of it is usable yet.
    Creating,
    /// Its server is starting.
    Starting,
    /// Its server is stopping.
    Stopping,
    /// Its data is being replaced by its base snapshot's.
    Resetting,
    /// Being deleted.
    Deleting,
    /// A logical source importing a new copy of its remote database.
    Refreshing,
    /// A local source whose data a branch's replaces (`promote --replace`),
    /// and the snapshot that is to keep its old data.
    Replacing,
}

impl OpKind {
    /// The word stored in meta.db and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Creating => "creating",
            OpKind::Starting => "starting",
            OpKind::Stopping => "stopping",
            OpKind::Resetting => "resetting",
            OpKind::Deleting => "deleting",
            OpKind::Refreshing => "refreshing",
            OpKind::Replacing => "replacing",
        }
    }
    fn parse(s: &str) -> Result<OpKind, MetaError> {
        [
            OpKind::Creating,
            OpKind::Starting,
            OpKind::Stopping,
            OpKind::Resetting,
            OpKind::Deleting,
            OpKind::Refreshing,
            OpKind::Replacing,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| MetaError::Corrupt {
            table: "*",
            column: "op",
            value: s.into(),
        })
    }
}

/// An operation and the process carrying it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Op {
    /// What is being done.
    pub kind: OpKind,
    /// Who is doing it; if this process is gone, the op was interrupted.
    pub owner: ProcessId,
}

impl Op {
    /// An op carried out by the calling thread (see
    /// [`ProcessId::current_thread`]: threads of one daemon must not take
    /// each other's ops for their own).
    pub fn mine(kind: OpKind) -> Op {
        Op {
            kind,
            owner: ProcessId::current_thread(),
        }
    }
}

fn op_from(row: &Row, at: usize) -> Result<Option<Op>, rusqlite::Error> {
    let kind: Option<String> = row.get(at)?;
    let Some(kind) = kind else { return Ok(None) };
    let kind = OpKind::parse(&kind).map_err(|e| to_sql_err(at, e))?;
    let pid: i64 = row.get(at + 1)?;
    let start: i64 = row.get(at + 2)?;
    Ok(Some(Op {
        kind,
        owner: ProcessId {
            pid: pid as i32,
            start_ticks: start as u64,
        },
    }))
}

fn pid_from(row: &Row, at: usize) -> Result<Option<ProcessId>, rusqlite::Error> {
    let pid: Option<i64> = row.get(at)?;
    let start: Option<i64> = row.get(at + 1)?;
    Ok(pid.zip(start).map(|(pid, s)| ProcessId {
        pid: pid as i32,
        start_ticks: s as u64,
    }))
}

fn to_sql_err(at: usize, e: MetaError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Text, Box::new(e))
}

fn op_params(op: Option<Op>) -> (Option<&'static str>, Option<i64>, Option<i64>) {
    match op {
        Some(op) => (
            Some(op.kind.as_str()),
            Some(op.owner.pid as i64),
            Some(op.owner.start_ticks as i64),
        ),
        None => (None, None, None),
    }
}

fn pm_params(pm: Option<ProcessId>) -> (Option<i64>, Option<i64>) {
    (pm.map(|p| p.pid as i64), pm.map(|p| p.start_ticks as i64))
}

/// Which kind of object, if any, already has `name`.
pub fn name_taken(conn: &Connection, name: &str) -> Result<Option<&'static str>, MetaError> {
    let kind: Option<String> = conn
        .query_row(
            "SELECT 'source' FROM sources WHERE name = ?1 UNION ALL SELECT 'branch' FROM branches WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(kind.map(|k| if k == "source" { "source" } else { "branch" }))
}

/// Every TCP port held by a source or branch.
pub fn used_ports(conn: &Connection) -> Result<Vec<u16>, MetaError> {
    let mut stmt = conn.prepare("SELECT port FROM sources UNION SELECT port FROM branches")?;
    let ports = stmt
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ports.into_iter().map(|p| p as u16).collect())
}

/// A source: where branches' data comes from.
#[derive(Debug, Clone, Serialize)]
pub struct SourceRow {
    /// Unique name (shared namespace with branches).
    pub name: String,
    /// `local` for a cluster pgfork runs itself.
    pub mode: String,
    /// Whether its server should run.
    pub state: RunState,
    /// Operation in progress.
    pub op: Option<Op>,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The application database.
    pub database: String,
    /// The application role (owns the database, not a superuser).
    pub role: String,
    /// The application role's password.
    #[serde(skip)]
    pub password: String,
    /// The postmaster, while running.
    pub postmaster: Option<ProcessId>,
    /// PostgreSQL major version.
    pub pg_major: u32,
    /// Creation time (Unix seconds).
    pub created_at: i64,
}

const SOURCE_COLS: &str = "name, mode, state, op, op_pid, op_start, port, database, role, password, pm_pid, pm_start, pg_major, created_at";

impl SourceRow {
    fn from_row(r: &Row) -> Result<SourceRow, rusqlite::Error> {
        let state: String = r.get(2)?;
        Ok(SourceRow {
            name: r.get(0)?,
            mode: r.get(1)?,
            state: RunState::parse(&state).map_err(|e| to_sql_err(2, e))?,
            op: op_from(r, 3)?,
            port: r.get::<_, i64>(6)? as u16,
            database: r.get(7)?,
            role: r.get(8)?,
            password: r.get(9)?,
            postmaster: pid_from(r, 10)?,
            pg_major: r.get::<_, i64>(12)? as u32,
            created_at: r.get(13)?,
        })
    }

    /// Inserts a new source row.
    pub fn insert(&self, conn: &Connection) -> Result<(), MetaError> {
        let (op, op_pid, op_start) = op_params(self.op);
        let (pm_pid, pm_start) = pm_params(self.postmaster);
        conn.execute(
            &format!("INSERT INTO sources ({SOURCE_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)"),
            params![
                self.name, self.mode, self.state.as_str(), op, op_pid, op_start, self.port as i64,
                self.database, self.role, self.password, pm_pid, pm_start, self.pg_major as i64, self.created_at
            ],
        )?;
        Ok(())
    }

    /// The source called `name`.
    pub fn get(conn: &Connection, name: &str) -> Result<Option<SourceRow>, MetaError> {
        Ok(conn
            .query_row(
                &format!("SELECT {SOURCE_COLS} FROM sources WHERE name = ?1"),
                [name],
                Self::from_row,
            )
            .optional()?)
    }

    /// All sources by name.
    pub fn list(conn: &Connection) -> Result<Vec<SourceRow>, MetaError> {
        let mut stmt = conn.prepare(&format!("SELECT {SOURCE_COLS} FROM sources ORDER BY name"))?;
        let rows = stmt
            .query_map([], Self::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Sets or clears the op.
    pub fn set_op(conn: &Connection, name: &str, op: Option<Op>) -> Result<(), MetaError> {
        let (op, pid, start) = op_params(op);
        conn.execute(
            "UPDATE sources SET op = ?2, op_pid = ?3, op_start = ?4 WHERE name = ?1",
            params![name, op, pid, start],
        )?;
        Ok(())
    }

    /// Records the run state and postmaster.
    pub fn set_state(
        conn: &Connection,
        name: &str,
        state: RunState,
        pm: Option<ProcessId>,
    ) -> Result<(), MetaError> {
        let (pid, start) = pm_params(pm);
        conn.execute(
            "UPDATE sources SET state = ?2, pm_pid = ?3, pm_start = ?4 WHERE name = ?1",
            params![name, state.as_str(), pid, start],
        )?;
        Ok(())
    }

    /// Records a new port.
    pub fn set_port(conn: &Connection, name: &str, port: u16) -> Result<(), MetaError> {
        conn.execute(
            "UPDATE sources SET port = ?2 WHERE name = ?1",
            params![name, port as i64],
        )?;
        Ok(())
    }

    /// Deletes the row.
    pub fn delete(conn: &Connection, name: &str) -> Result<(), MetaError> {
        conn.execute("DELETE FROM sources WHERE name = ?1", [name])?;
        Ok(())
    }
}

/// A sealed, immutable image of a source or branch.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRow {
    /// Number, unique for the life of the home.
    pub id: i64,
    /// The source whose data this is.
    pub source: String,
    /// The branch it was taken of, if not of the source itself.
    pub parent_branch: Option<String>,
    /// Operation in progress (`creating` until sealed).
    pub op: Option<Op>,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// WAL position the snapshot is consistent at.
    pub lsn: Option<String>,
    /// How it was taken (`atomic`, `online-backup`, `stopped`; `replaced`:
    /// a source's old data, displaced by `promote --replace`).
    pub method: Option<String>,
    /// Milliseconds the sealing took.
    pub seal_ms: Option<i64>,
    /// Whether masking rules were applied in its sealing.
    pub masked: bool,
}

const SNAPSHOT_COLS: &str =
    "id, source, parent_branch, op, op_pid, op_start, created_at, lsn, method, seal_ms, masked";

impl SnapshotRow {
    /// The method of a snapshot that keeps a source's data from before a
    /// `promote --replace`: it and every older snapshot of the source hold
    /// data the source no longer has.
    pub const REPLACED: &'static str = "replaced";

    fn from_row(r: &Row) -> Result<SnapshotRow, rusqlite::Error> {
        Ok(SnapshotRow {
            id: r.get(0)?,
            source: r.get(1)?,
            parent_branch: r.get(2)?,
            op: op_from(r, 3)?,
            created_at: r.get(6)?,
            lsn: r.get(7)?,
            method: r.get(8)?,
            seal_ms: r.get(9)?,
            masked: r.get(10)?,
        })
    }

    /// The name people use: `ORIGIN@ID`, where origin is the source or branch.
    pub fn label(&self) -> String {
        format!(
            "{}@{}",
            self.parent_branch.as_deref().unwrap_or(&self.source),
            self.id
        )
    }

    /// Whether it is sealed and usable.
    pub fn is_ready(&self) -> bool {
        self.op.is_none()
    }

    /// Inserts a snapshot in state `creating` and returns its id.
    pub fn insert_creating(
        conn: &Connection,
        source: &str,
        parent_branch: Option<&str>,
        op: Op,
    ) -> Result<i64, MetaError> {
        let (op, pid, start) = op_params(Some(op));
        conn.execute(
            "INSERT INTO snapshots (source, parent_branch, op, op_pid, op_start, created_at) VALUES (?1,?2,?3,?4,?5,?6)",
            params![source, parent_branch, op, pid, start, super::now()],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Marks a snapshot sealed and ready.
    pub fn finish(
        conn: &Connection,
        id: i64,
        lsn: Option<&str>,
        method: &str,
        seal_ms: i64,
        masked: bool,
    ) -> Result<(), MetaError> {
        conn.execute(
            "UPDATE snapshots SET op = NULL, op_pid = NULL, op_start = NULL, lsn = ?2, method = ?3, seal_ms = ?4,
                    masked = ?5 WHERE id = ?1",
            params![id, lsn, method, seal_ms, masked],
        )?;
        Ok(())
    }

    /// The snapshot with `id`.
    pub fn get(conn: &Connection, id: i64) -> Result<Option<SnapshotRow>, MetaError> {
        Ok(conn
            .query_row(
                &format!("SELECT {SNAPSHOT_COLS} FROM snapshots WHERE id = ?1"),
                [id],
                Self::from_row,
            )
            .optional()?)
    }

    /// All snapshots, oldest first.
    pub fn list(conn: &Connection) -> Result<Vec<SnapshotRow>, MetaError> {
        let mut stmt = conn.prepare(&format!(
            "SELECT {SNAPSHOT_COLS} FROM snapshots ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([], Self::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The newest ready snapshot taken of the source's current data: none
    /// if the newest one keeps the data a `promote --replace` displaced
    /// (see [`SnapshotRow::REPLACED`]).
    pub fn latest_of_source(
        conn: &Connection,
        source: &str,
    ) -> Result<Option<SnapshotRow>, MetaError> {
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {SNAPSHOT_COLS} FROM snapshots
                     WHERE source = ?1 AND parent_branch IS NULL AND op IS NULL ORDER BY id DESC LIMIT 1"
                ),
                [source],
                Self::from_row,
            )
            .optional()?
            .filter(|s| s.method.as_deref() != Some(Self::REPLACED)))
    }

    /// Sets or clears the op.
    pub fn set_op(conn: &Connection, id: i64, op: Option<Op>) -> Result<(), MetaError> {
        let (op, pid, start) = op_params(op);
        conn.execute(
            "UPDATE snapshots SET op = ?2, op_pid = ?3, op_start = ?4 WHERE id = ?1",
            params![id, op, pid, start],
        )?;
        Ok(())
    }

    /// Deletes the row.
    pub fn delete(conn: &Connection, id: i64) -> Result<(), MetaError> {
        conn.execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
        Ok(())
    }
}

/// A writable clone with its own server.
#[derive(Debug, Clone, Serialize)]
pub struct BranchRow {
    /// Unique name (shared namespace with sources).
    pub name: String,
    /// The source whose data it started from.
    pub source: String,
    /// The snapshot it was cloned from (`reset` returns to it).
    pub snapshot_id: i64,
    /// The branch it was made from, for a branch of a branch.
    pub parent_branch: Option<String>,
    /// Whether its server should run.
    pub state: RunState,
    /// Operation in progress.
    pub op: Option<Op>,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Password of the application role in this branch.
    #[serde(skip)]
    pub password: String,
    /// The postmaster, while running.
    pub postmaster: Option<ProcessId>,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// When `gc` may delete it (Unix seconds).
    pub expires_at: Option<i64>,
    /// Protected branches are never deleted by `gc`.
    pub protected: bool,
    /// Whether its server fsyncs (else it survives a process crash, not a host crash).
    pub durable: bool,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// How long its creation took, once it is made.
    pub timings: Option<BranchTimings>,
    /// The OS uid its server runs as and its files belong to (a sandbox
    /// uid of its own, as root); `None`: the home's OS user.
    pub uid: Option<u32>,
    /// Whether it listens on TCP. Branches made for the proxy's agents do
    /// not: only the proxy reaches them, over the unix socket.
    pub tcp: bool,
    /// When it was last in use (Unix milliseconds); see [`BranchRow::touch`].
    pub active_at_ms: Option<i64>,
    /// The most bytes it may hold of its own (`--max-size`), enforced by
    /// the filesystem's quotas.
    pub max_size: Option<u64>,
    /// Who made it: `admin:NAME` or `agent:NAME` (None: made before
    /// identities, by the home's owner).
    pub created_by: Option<String>,
    /// Stored values that could not be read (written by an older pgfork,
    /// or by hand) and were replaced by their defaults: the row is still
    /// listed, with these as its error, instead of breaking every listing.
    pub problems: Vec<String>,
}

/// Where the time of a branch's creation went, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BranchTimings {
    /// Taking a snapshot first, if one was taken.
    pub snapshot_ms: Option<i64>,
    /// Cloning the snapshot.
    pub clone_ms: i64,
    /// Starting the postmaster until it accepted a connection.
    pub start_ms: i64,
    /// The whole operation.
    pub total_ms: i64,
}

const BRANCH_COLS: &str = "name, source, snapshot_id, parent_branch, state, op, op_pid, op_start, port, password, \
                           pm_pid, pm_start, created_at, expires_at, protected, durable, labels, \
                           snapshot_ms, clone_ms, start_ms, total_ms, uid, tcp, active_at_ms, max_size, created_by";

/// A column read leniently: a value that cannot be read is recorded in
/// `problems` and left out, rather than failing the whole listing.
fn lenient<T: rusqlite::types::FromSql>(
    r: &Row,
    at: usize,
    column: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    r.get(at)
        .map_err(|e| problems.push(format!("its {column} cannot be read ({e})")))
        .ok()
}

/// Labels stored as a JSON object of strings.
fn labels_from(text: Option<String>, problems: &mut Vec<String>) -> BTreeMap<String, String> {
    let Some(text) = text else {
        return BTreeMap::new();
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        problems.push(format!(
            "its labels are not a JSON object of strings ({e}), so none are shown"
        ));
        BTreeMap::new()
    })
}

impl BranchRow {
    fn from_row(r: &Row) -> Result<BranchRow, rusqlite::Error> {
        let state: String = r.get(4)?;
        // The columns pgfork needs to manage the branch are read strictly;
        // those that only describe it are read leniently.
        let mut problems = Vec::new();
        let labels = lenient(r, 16, "labels", &mut problems);
        let labels = labels_from(labels, &mut problems);
        let created_at = lenient(r, 12, "creation time", &mut problems).unwrap_or(0);
        let expires_at = lenient(r, 13, "expiry time", &mut problems).flatten();
        let timings = lenient(r, 17, "timings", &mut problems).and_then(|snapshot_ms| {
            let clone: Option<i64> = lenient(r, 18, "timings", &mut problems).flatten();
            let start: Option<i64> = lenient(r, 19, "timings", &mut problems).flatten();
            let total: Option<i64> = lenient(r, 20, "timings", &mut problems).flatten();
            Some(BranchTimings {
                snapshot_ms,
                clone_ms: clone?,
                start_ms: start?,
                total_ms: total?,
            })
        });
        Ok(BranchRow {
            name: r.get(0)?,
            source: r.get(1)?,
            snapshot_id: r.get(2)?,
            parent_branch: r.get(3)?,
            state: RunState::parse(&state).map_err(|e| to_sql_err(4, e))?,
            op: op_from(r, 5)?,
            port: r.get::<_, i64>(8)? as u16,
            password: r.get(9)?,
            postmaster: pid_from(r, 10)?,
            created_at,
            expires_at,
            protected: r.get(14)?,
            durable: r.get(15)?,
            labels,
            timings,
            uid: r.get::<_, Option<i64>>(21)?.map(|u| u as u32),
            tcp: r.get(22)?,
            active_at_ms: lenient(r, 23, "last activity", &mut problems).flatten(),
            max_size: r.get::<_, Option<i64>>(24)?.map(|n| n.max(0) as u64),
            created_by: r.get(25)?,
            problems,
        })
    }

    /// Inserts a new branch row.
    pub fn insert(&self, conn: &Connection) -> Result<(), MetaError> {
        let (op, op_pid, op_start) = op_params(self.op);
        let (pm_pid, pm_start) = pm_params(self.postmaster);
        let labels = serde_json::to_string(&self.labels).expect("labels serialise");
        conn.execute(
            &format!("INSERT INTO branches ({BRANCH_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24,?25,?26)"),
            params![
                self.name, self.source, self.snapshot_id, self.parent_branch, self.state.as_str(), op, op_pid,
                op_start, self.port as i64, self.password, pm_pid, pm_start, self.created_at, self.expires_at,
                self.protected, self.durable, labels, self.timings.and_then(|t| t.snapshot_ms),
                self.timings.map(|t| t.clone_ms), self.timings.map(|t| t.start_ms), self.timings.map(|t| t.total_ms),
                self.uid.map(i64::from), self.tcp, self.active_at_ms,
                self.max_size.map(|n| n.min(i64::MAX as u64) as i64), self.created_by
            ],
        )?;
        Ok(())
    }

    /// The branch called `name`.
    pub fn get(conn: &Connection, name: &str) -> Result<Option<BranchRow>, MetaError> {
        Ok(conn
            .query_row(
                &format!("SELECT {BRANCH_COLS} FROM branches WHERE name = ?1"),
                [name],
                Self::from_row,
            )
            .optional()?)
    }

    /// All branches by name.
    pub fn list(conn: &Connection) -> Result<Vec<BranchRow>, MetaError> {
        let mut stmt =
            conn.prepare(&format!("SELECT {BRANCH_COLS} FROM branches ORDER BY name"))?;
        let rows = stmt
            .query_map([], Self::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Branches cloned from snapshot `id`.
    pub fn of_snapshot(conn: &Connection, id: i64) -> Result<Vec<BranchRow>, MetaError> {
        let mut stmt = conn.prepare(&format!(
            "SELECT {BRANCH_COLS} FROM branches WHERE snapshot_id = ?1 ORDER BY name"
        ))?;
        let rows = stmt
            .query_map([id], Self::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Sets or clears the op.
    pub fn set_op(conn: &Connection, name: &str, op: Option<Op>) -> Result<(), MetaError> {
        let (op, pid, start) = op_params(op);
        conn.execute(
            "UPDATE branches SET op = ?2, op_pid = ?3, op_start = ?4 WHERE name = ?1",
            params![name, op, pid, start],
        )?;
        Ok(())
    }

    /// Records the run state and postmaster.
    pub fn set_state(
        conn: &Connection,
        name: &str,
        state: RunState,
        pm: Option<ProcessId>,
    ) -> Result<(), MetaError> {
        let (pid, start) = pm_params(pm);
        conn.execute(
            "UPDATE branches SET state = ?2, pm_pid = ?3, pm_start = ?4 WHERE name = ?1",
            params![name, state.as_str(), pid, start],
        )?;
        Ok(())
    }

    /// Records how long the branch's creation took.
    pub fn set_timings(conn: &Connection, name: &str, t: BranchTimings) -> Result<(), MetaError> {
        conn.execute(
            "UPDATE branches SET snapshot_ms = ?2, clone_ms = ?3, start_ms = ?4, total_ms = ?5 WHERE name = ?1",
            params![name, t.snapshot_ms, t.clone_ms, t.start_ms, t.total_ms],
        )?;
        Ok(())
    }

    /// Replaces the password of a branch's application role (cutting off
    /// whoever had the old one).
    pub fn set_password(conn: &Connection, name: &str, password: &str) -> Result<(), MetaError> {
        conn.execute(
            "UPDATE branches SET password = ?2 WHERE name = ?1",
            params![name, password],
        )?;
        Ok(())
    }

    /// Records the sandbox uid of a branch.
    pub fn set_uid(conn: &Connection, name: &str, uid: u32) -> Result<(), MetaError> {
        conn.execute(
            "UPDATE branches SET uid = ?2 WHERE name = ?1",
            params![name, i64::from(uid)],
        )?;
        Ok(())
    }

    /// The sandbox uids branches hold.
    pub fn uids(conn: &Connection) -> Result<std::collections::BTreeSet<u32>, MetaError> {
        let mut stmt = conn.prepare("SELECT uid FROM branches WHERE uid IS NOT NULL")?;
        let rows = stmt
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().map(|u| u as u32).collect())
    }

    /// Records that the branch was in use at `at_ms` (Unix milliseconds);
    /// false if there is no such branch (nothing is written then). The
    /// time is set, not raised: every writer writes its present, and a
    /// clock set back must not leave a branch looking busy until the
    /// clock catches up.
    pub fn touch(conn: &Connection, name: &str, at_ms: i64) -> Result<bool, MetaError> {
        let n = conn.execute(
            "UPDATE branches SET active_at_ms = ?2 WHERE name = ?1",
            params![name, at_ms],
        )?;
        Ok(n > 0)
    }

    /// Records a new port.
    pub fn set_port(conn: &Connection, name: &str, port: u16) -> Result<(), MetaError> {
        conn.execute(
            "UPDATE branches SET port = ?2 WHERE name = ?1",
            params![name, port as i64],
        )?;
        Ok(())
    }

    /// Updates TTL, protection and labels.
    pub fn set_options(
        conn: &Connection,
        name: &str,
        expires_at: Option<i64>,
        protected: bool,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), MetaError> {
        let labels = serde_json::to_string(labels).expect("labels serialise");
        conn.execute(
            "UPDATE branches SET expires_at = ?2, protected = ?3, labels = ?4 WHERE name = ?1",
            params![name, expires_at, protected, labels],
        )?;
        Ok(())
    }

    /// Deletes the row.
    pub fn delete(conn: &Connection, name: &str) -> Result<(), MetaError> {
        conn.execute("DELETE FROM branches WHERE name = ?1", [name])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Meta;

    #[test]
    fn rows_round_trip_and_names_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = Meta::open(&dir.path().join("meta.db"), true).unwrap();
        let me = Op::mine(OpKind::Creating);
        meta.write(|c| {
            SourceRow {
                name: "shop".into(),
                mode: "local".into(),
                state: RunState::Running,
                op: Some(me),
                port: 15433,
                database: "shop".into(),
                role: "shop".into(),
                password: "pw".into(),
                postmaster: None,
                pg_major: 15,
                created_at: 1,
            }
            .insert(c)
        })
        .unwrap();
        let id = meta
            .write(|c| SnapshotRow::insert_creating(c, "shop", None, me))
            .unwrap();
        assert!(
            SnapshotRow::latest_of_source(meta.conn(), "shop")
                .unwrap()
                .is_none(),
            "not sealed yet"
        );
        meta.write(|c| SnapshotRow::finish(c, id, Some("0/1"), "atomic", 3, false))
            .unwrap();
        assert_eq!(
            SnapshotRow::latest_of_source(meta.conn(), "shop")
                .unwrap()
                .unwrap()
                .id,
            id
        );
        // A source's data displaced by a replace is not its current data,
        // nor is anything older; a snapshot taken after it is.
        let old = meta
            .write(|c| {
                let old = SnapshotRow::insert_creating(c, "shop", None, me)?;
                SnapshotRow::finish(c, old, Some("0/2"), SnapshotRow::REPLACED, 0, false)?;
                Ok::<_, MetaError>(old)
            })
            .unwrap();
        assert!(
            SnapshotRow::latest_of_source(meta.conn(), "shop")
                .unwrap()
                .is_none(),
            "the newest snapshot keeps replaced data"
        );
        let fresh = meta
            .write(|c| {
                let fresh = SnapshotRow::insert_creating(c, "shop", None, me)?;
                SnapshotRow::finish(c, fresh, Some("0/3"), "atomic", 3, false)?;
                Ok::<_, MetaError>(fresh)
            })
            .unwrap();
        assert!(fresh > old);
        assert_eq!(
            SnapshotRow::latest_of_source(meta.conn(), "shop")
                .unwrap()
                .unwrap()
                .id,
            fresh
        );
        meta.write(|c| {
            SnapshotRow::delete(c, fresh)?;
            SnapshotRow::delete(c, old)
        })
        .unwrap();
        let mut labels = BTreeMap::new();
        labels.insert("agent".to_string(), "a1".to_string());
        meta.write(|c| {
            BranchRow {
                name: "fix-42".into(),
                source: "shop".into(),
                snapshot_id: id,
                parent_branch: None,
                state: RunState::Stopped,
                op: None,
                port: 15434,
                password: "pw2".into(),
                postmaster: Some(pgfork_os::ProcessId::current()),
                created_at: 2,
                expires_at: Some(10),
                protected: true,
                durable: false,
                labels: labels.clone(),
                timings: Some(BranchTimings {
                    snapshot_ms: None,
                    clone_ms: 3,
                    start_ms: 40,
                    total_ms: 50,
                }),
                uid: Some(1_900_000_001),
                tcp: false,
                active_at_ms: Some(2_000),
                max_size: Some(64 << 20),
                created_by: Some("agent:a1".into()),
                problems: Vec::new(),
            }
            .insert(c)
        })
        .unwrap();
        let b = BranchRow::get(meta.conn(), "fix-42").unwrap().unwrap();
        assert_eq!(b.labels, labels);
        assert_eq!(b.timings.map(|t| t.start_ms), Some(40));
        assert!(b.protected);
        assert_eq!(b.postmaster, Some(pgfork_os::ProcessId::current()));
        assert_eq!((b.uid, b.tcp), (Some(1_900_000_001), false));
        assert_eq!(b.active_at_ms, Some(2_000));
        assert!(
            meta.write(|c| BranchRow::touch(c, "fix-42", 5_000))
                .unwrap()
        );
        // Unknown branches are no error and gain no row.
        assert!(!meta.write(|c| BranchRow::touch(c, "nope", 5_000)).unwrap());
        assert!(BranchRow::get(meta.conn(), "nope").unwrap().is_none());
        let b = BranchRow::get(meta.conn(), "fix-42").unwrap().unwrap();
        assert_eq!(b.active_at_ms, Some(5_000));
        assert_eq!(
            BranchRow::uids(meta.conn())
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![1_900_000_001]
        );
        assert_eq!(name_taken(meta.conn(), "shop").unwrap(), Some("source"));
        assert_eq!(name_taken(meta.conn(), "fix-42").unwrap(), Some("branch"));
        assert_eq!(name_taken(meta.conn(), "nope").unwrap(), None);
        let mut ports = used_ports(meta.conn()).unwrap();
        ports.sort();
        assert_eq!(ports, vec![15433, 15434]);
        let s = SourceRow::get(meta.conn(), "shop").unwrap().unwrap();
        assert_eq!(s.op, Some(me));
        assert!(b.problems.is_empty());

        // Values an older pgfork (or a hand edit) stored are reported, not
        // fatal to the listing.
        meta.conn()
            .execute(
                "UPDATE branches SET labels = '{not json', expires_at = 'soon' WHERE name = 'fix-42'",
                [],
            )
            .unwrap();
        let listed = BranchRow::list(meta.conn()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "fix-42");
        assert!(listed[0].labels.is_empty());
        assert_eq!(listed[0].expires_at, None);
        assert_eq!(listed[0].problems.len(), 2, "{:?}", listed[0].problems);
        assert!(listed[0].problems[0].contains("labels"));
    }
}
