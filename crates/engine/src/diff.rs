//! `pgfork diff`: what a branch changed relative to its base snapshot, or
//! between any two branches or snapshots of one source.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgfork_diff::data::{
    DataDiff, DataOptions, Side, data_patch, diff_data, fk_order, read_tables,
};
use pgfork_diff::schema::{SchemaDiff, diff_schema, read_schema};
use pgfork_os::ProcessId;
use pgfork_pg::server::{self, StartSpec};
use pgfork_pg::sql::random_password;
use pgfork_pg::untrusted::session::{self, Access, Endpoint};
use pgfork_pg::{Postmaster, StopMode};
use pgfork_pool::meta::{BranchRow, SnapshotRow};
use pgfork_pool::{home, hygiene};
use serde::Serialize;

use crate::server::stop_server;
use crate::{Engine, EngineError, Result, ServerKind};

/// What `diff` compares and shows.
#[derive(Debug, Clone, Default)]
pub struct DiffRequest {
    /// The branch or snapshot whose changes are shown (the new side).
    pub target: String,
    /// The old side: a branch or snapshot of the same source (default: the
    /// target branch's base snapshot).
    pub against: Option<String>,
    /// Compare the schema.
    pub schema: bool,
    /// Compare the data.
    pub data: bool,
    /// Rows listed per table.
    pub limit: usize,
    /// Compare every table whole (ignoring which blocks are shared).
    pub full: bool,
    /// Also build the SQL patch that turns the old side into the new one
    /// (every changed row is then listed, whatever `limit` says).
    pub sql: bool,
}

/// What `diff` found.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// The old side.
    pub from: String,
    /// The new side.
    pub to: String,
    /// Schema changes, if asked for.
    pub schema: Option<SchemaDiff>,
    /// Data changes, if asked for.
    pub data: Option<DataDiff>,
    /// The patch, if asked for: schema statements, then rows, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<Vec<String>>,
    /// What the schema diff could not express or check (the patch does
    /// not carry these changes): also in `schema.warnings`.
    pub warnings: Vec<String>,
    /// Milliseconds the comparison took.
    pub elapsed_ms: u64,
}

/// A side of a diff, resolved.
pub(crate) enum Resolved {
    Branch(BranchRow),
    Snapshot(SnapshotRow),
}

/// A running server on one side: a branch's own, or a view of a snapshot.
pub(crate) struct Opened {
    /// The application database as the application role, read-only: all
    /// reading of content goes through this one.
    pub client: postgres::Client,
    /// The superuser in the maintenance database (CHECKPOINT).
    pub maintenance: postgres::Client,
    /// The directory whose extents stand for this side.
    pub datadir: PathBuf,
    pub label: String,
    view: Option<View>,
}

/// A short-lived server on a clone of a snapshot; gone on drop.
struct View {
    key: String,
    dir: PathBuf,
    pid: ProcessId,
    driver: pgfork_pool::Driver,
    run: PathBuf,
    log: PathBuf,
}

impl Drop for View {
    fn drop(&mut self) {
        let _ = server::stop(self.pid, StopMode::Immediate, Duration::from_secs(5));
        let _ = stop_server(None, &self.dir, StopMode::Immediate);
        let _ = self.driver.remove(&self.dir);
        let _ = std::fs::remove_dir_all(&self.run);
        let _ = std::fs::remove_file(&self.log);
        tracing::debug!(key = %self.key, "view removed");
    }
}

static VIEWS: AtomicUsize = AtomicUsize::new(0);

impl Engine {
    /// A branch or snapshot by name or id.
    pub(crate) fn resolve_side(&self, text: &str) -> Result<Resolved> {
        if let Some(b) = BranchRow::get(self.meta.conn(), text)?
            && self.may_use_branch(&b)
        {
            return Ok(Resolved::Branch(b));
        }
        if text.contains('@') || text.chars().all(|c| c.is_ascii_digit()) {
            let s = self.resolve_snapshot(text)?;
            if !self.may_see_snapshot(&s)? {
                return Err(EngineError::UnknownSnapshot(text.into()));
            }
            return Ok(Resolved::Snapshot(s));
        }
        Err(EngineError::UnknownOrigin(text.into()))
    }

    /// Connects to a side as its application role (never as superuser:
    /// the content is the agent's), starting a private view of it if it is
    /// a snapshot.
    pub(crate) fn open_side(&mut self, side: &Resolved) -> Result<Opened> {
        match side {
            Resolved::Branch(b) => {
                if !b.postmaster.is_some_and(|p| p.is_alive()) {
                    return Err(EngineError::WrongState(format!(
                        "branch '{}' is not running: pgfork branch start {}",
                        b.name, b.name
                    )));
                }
                let ep = self.endpoint(ServerKind::Branch, &b.name, b.port);
                let (client, maintenance) = self.connect_side(&ep, &b.source)?;
                Ok(Opened {
                    client,
                    maintenance,
                    datadir: self.branch_dir(&b.name),
                    label: format!("branch {}", b.name),
                    view: None,
                })
            }
            Resolved::Snapshot(s) => {
                let (ep, view) = self.start_view(s)?;
                let (client, maintenance) = self.connect_side(&ep, &s.source)?;
                Ok(Opened {
                    client,
                    maintenance,
                    datadir: self.snapshot_dir(s.id),
                    label: format!("snapshot {}", s.label()),
                    view: Some(view),
                })
            }
        }
    }

    /// The two sessions a side needs: content as the source's application
    /// role (read-only), and maintenance.
    fn connect_side(
        &self,
        ep: &Endpoint,
        source: &str,
    ) -> Result<(postgres::Client, postgres::Client)> {
        let source = self.source_row(source)?;
        let client = session::as_role(ep, &source.database, &source.role, Access::ReadOnly)
            .map_err(EngineError::sql(&format!(
                "connect to {} as {}",
                ep.socket_dir.display(),
                source.role
            )))?;
        let maintenance =
            session::maintenance(ep).map_err(EngineError::sql("connect for a checkpoint"))?;
        Ok((client, maintenance))
    }

    /// Clones a snapshot (copy-on-write: cheap) and starts it on a unix
    /// socket only, to read it without touching the immutable original.
    fn start_view(&mut self, s: &SnapshotRow) -> Result<(Endpoint, View)> {
        let me = ProcessId::current();
        let key = format!(
            "{}.{}.{}",
            me.pid,
            me.start_ticks,
            VIEWS.fetch_add(1, Ordering::SeqCst)
        );
        hygiene::make_dir(&self.home.views(), home::TRAVERSE_DIR)
            .map_err(EngineError::io("create", &self.home.views()))?;
        let dir = self.home.views().join(&key);
        // Views run as the home's scratch uid: fenced from every source
        // and branch, whatever the snapshot holds.
        let owner = self.scratch_owner();
        self.config.driver.clone_dir_owned(
            &self.snapshot_dir(s.id),
            &dir,
            (owner.uid, owner.gid),
        )?;
        let run = self.socket_dir(ServerKind::View, &key);
        let log = self.log_path(ServerKind::View, &key);
        let socket = run.display().to_string();
        let overrides = [
            ("listen_addresses", ""),
            ("port", "5432"),
            ("unix_socket_directories", socket.as_str()),
            ("archive_mode", "off"),
            ("autovacuum", "off"),
            ("shared_buffers", "16MB"),
        ];
        let spec = StartSpec {
            bins: &self.config.bins,
            datadir: &dir,
            log: &log,
            run_as: &owner,
            socket_dir: &run,
            port: 5432,
            overrides: &overrides,
            timeout: crate::server::START_TIMEOUT,
            cgroup: None,
        };
        let started: std::result::Result<Postmaster, _> = server::start(&spec);
        let pm = match started {
            Ok(pm) => pm,
            Err(e) => {
                let _ = self.config.driver.remove(&dir);
                let _ = std::fs::remove_dir_all(&run);
                return Err(e.into());
            }
        };
        let view = View {
            key,
            dir,
            pid: pm.pid,
            driver: self.config.driver,
            run: run.clone(),
            log,
        };
        // The view is read as the application role, which must be able to
        // log in (a logical source's copy keeps it NOLOGIN) and must hold
        // no more than a branch's does.
        let role = self.source_row(&s.source)?.role;
        let mut client = pm.client;
        crate::branch::arm_app_role(&mut client, &role, &random_password())?;
        drop(client);
        Ok((
            Endpoint {
                socket_dir: run,
                port: 5432,
            },
            view,
        ))
    }

    /// Which source a side's data came from.
    fn source_of(side: &Resolved) -> &str {
        match side {
            Resolved::Branch(b) => &b.source,
            Resolved::Snapshot(s) => &s.source,
        }
    }

    /// Compares two sides; see [`DiffRequest`].
    pub fn diff(&mut self, req: &DiffRequest) -> Result<DiffReport> {
        let began = Instant::now();
        let to = self.resolve_side(&req.target)?;
        let from = match (&req.against, &to) {
            (Some(a), _) => self.resolve_side(a)?,
            (None, Resolved::Branch(b)) => Resolved::Snapshot(
                SnapshotRow::get(self.meta.conn(), b.snapshot_id)?
                    .ok_or_else(|| EngineError::UnknownSnapshot(b.snapshot_id.to_string()))?,
            ),
            (None, Resolved::Snapshot(s)) => {
                return Err(EngineError::InvalidArgument(format!(
                    "snapshot {} has no base to compare with: pass --against BRANCH|SNAPSHOT",
                    s.label()
                )));
            }
        };
        if Self::source_of(&from) != Self::source_of(&to) {
            return Err(EngineError::InvalidArgument(format!(
                "{} comes from source '{}' and {} from source '{}': only sides of one source can be compared",
                req.target,
                Self::source_of(&to),
                req.against.as_deref().unwrap_or("its base"),
                Self::source_of(&from)
            )));
        }
        let mut old = self.open_side(&from)?;
        let mut new = self.open_side(&to)?;
        tracing::debug!(elapsed = ?began.elapsed(), "sides open");
        let schema = if req.schema {
            let a =
                read_schema(&mut old.client).map_err(|e| EngineError::WrongState(e.to_string()))?;
            let b =
                read_schema(&mut new.client).map_err(|e| EngineError::WrongState(e.to_string()))?;
            tracing::debug!(elapsed = ?began.elapsed(), "schemas read");
            Some(diff_schema(&a, &b))
        } else {
            None
        };
        let data = if req.data {
            let opts = DataOptions {
                limit: if req.sql { usize::MAX } else { req.limit },
                full: req.full,
                tables: None,
            };
            let mut a = Side {
                client: &mut old.client,
                maintenance: Some(&mut old.maintenance),
                datadir: &old.datadir,
            };
            let mut b = Side {
                client: &mut new.client,
                maintenance: Some(&mut new.maintenance),
                datadir: &new.datadir,
            };
            Some(
                diff_data(&mut a, &mut b, &opts)
                    .map_err(|e| EngineError::WrongState(e.to_string()))?,
            )
        } else {
            None
        };
        let sql = if req.sql {
            let mut statements = schema.as_ref().map(|s| s.sql()).unwrap_or_default();
            if let Some(data) = &data {
                let err = |e: pgfork_diff::DiffError| EngineError::WrongState(e.to_string());
                let tables = read_tables(&mut new.client).map_err(err)?;
                let order = fk_order(&mut new.client, &tables).map_err(err)?;
                statements.extend(data_patch(data, &tables, &order).map_err(err)?);
            }
            Some(statements)
        } else {
            None
        };
        let warnings = schema
            .as_ref()
            .map(|s| s.warnings.clone())
            .unwrap_or_default();
        let report = DiffReport {
            warnings,
            sql,
            from: old.label.clone(),
            to: new.label.clone(),
            schema,
            data,
            elapsed_ms: began.elapsed().as_millis() as u64,
        };
        drop(old.view.take());
        drop(new.view.take());
        Ok(report)
    }
}
