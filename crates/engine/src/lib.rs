//! The branch engine: sources, snapshots and branches, their lifecycle,
//! and the reconciliation every command runs first so that a crash at any
//! point leaves no orphan directory, process, port or row behind.

pub mod activity;
mod agent_roles;
pub mod agents;
mod approvals;
pub mod audit;
mod branch;
mod branch_data;
pub mod compute;
pub mod config;
mod diff;
pub mod disk_full;
mod doctor;
mod error;
pub mod failpoint;
pub mod gates;
pub mod identity;
mod import;
mod init;
pub mod isolation;
mod masking;
pub mod names;
mod ports;
pub mod progress;
mod promote;
mod promote_check;
mod promote_replace;
mod reconcile;
pub mod rehearse;
mod remote;
mod schedule;
mod scope;
mod seal;
mod server;
pub mod sharing;
mod snapshot;
mod source;
pub mod storage;
pub mod view;

use std::path::PathBuf;
use std::sync::Arc;

use pgfork_pg::untrusted::session::Endpoint;
use pgfork_pool::{Home, Meta, PoolImage};

pub use branch::{BranchCreate, CreateTimings, GcReport};
pub use branch_data::DumpFormat;
pub use compute::{ComputeInfo, ComputeRequest, LimitsView, SourceLimits};
pub use config::Config;
pub use diff::{DiffReport, DiffRequest};
pub use doctor::{Check, DoctorReport, doctor};
pub use error::{EngineError, Result};
pub use gates::{AssertionFile, GateResult, GatesChange, SourceGates};
pub use identity::{
    Actor, admin_token_create, admin_token_list, admin_token_revoke, has_admin_token,
    hash_api_token, resolve_token, rotate_admin_token,
};
pub use init::{InitOptions, InitReport, init, set_branch_limits};
pub use masking::MaskReport;
/// Types of diff reports.
pub use pgfork_diff::data as diff_types;
pub use pgfork_pool::meta::PromotionRow;
pub use progress::{Progress, Quiet};
pub use promote::{Conflict, PromoteReport, PromoteRequest, Strategy};
pub use promote_replace::{ReplaceReport, ReplaceRequest};
pub use reconcile::ReconcileReport;
pub use rehearse::{RehearsalReport, RehearseRequest, Severity, Verdict};
pub use remote::Lag;
pub use remote::{Mode, SourceAdd};
pub use schedule::TickReport;
pub use view::{BranchInfo, Dsn, SnapshotInfo, SourceInfo};

/// An open pgfork home, reconciled and ready for commands.
pub struct Engine {
    home: Home,
    meta: Meta,
    config: Config,
    progress: Arc<dyn Progress>,
    reconciled: ReconcileReport,
    /// Who the engine acts for; its scope decides what it may do.
    actor: Actor,
}

/// The kinds of server pgfork runs, which name their sockets and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerKind {
    Source,
    Branch,
    /// A snapshot being sealed (recovered, then shut down).
    Seal,
    /// A logical source's import server (unix socket only).
    Import,
    /// A short-lived server on a clone of a snapshot, read by `diff`.
    View,
}

impl Engine {
    /// Opens an initialised home: loads its settings, mounts the pool image
    /// again if needed (after a reboot) and reconciles interrupted work.
    /// Refuses a home whose entries are links or another user's.
    pub fn open(home: Home, progress: Arc<dyn Progress>) -> Result<Engine> {
        init::refuse_unsafe(pgfork_pool::hygiene::audit_layout(&home))?;
        let meta = Meta::open(&home.meta_db(), false)?;
        let config = Config::load(&meta, home.root())?;
        if config.image.is_some() {
            let image = PoolImage {
                file: home.image(),
                mountpoint: home.pool(),
            };
            if image.ensure_mounted()? {
                progress.warn(&format!(
                    "the pool image was not mounted (after a reboot?): mounted it on {}",
                    home.pool().display()
                ));
            }
        }
        if !home.branches().is_dir() {
            return Err(EngineError::Config(format!(
                "the pool at {} is missing its directories: is the pool filesystem mounted? Run `pgfork doctor`",
                home.pool().display()
            )));
        }
        let mut engine = Engine {
            home,
            meta,
            config,
            progress,
            reconciled: ReconcileReport::default(),
            actor: Actor::owner(),
        };
        engine.reconciled = engine.reconcile()?;
        Ok(engine)
    }

    /// Acts for `actor` from now on (the CLI is the home's owner; the
    /// daemon acts for whoever's token came with the request).
    pub fn act_as(&mut self, actor: Actor) {
        self.actor = actor;
    }

    /// Who the engine acts for.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The home directory.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the reconcile at open found and repaired.
    pub fn reconciled(&self) -> &ReconcileReport {
        &self.reconciled
    }

    pub(crate) fn source_dir(&self, name: &str) -> PathBuf {
        self.home.sources().join(name)
    }

    pub(crate) fn branch_dir(&self, name: &str) -> PathBuf {
        self.home.branches().join(name)
    }

    /// Where `branch reset` clones the snapshot before swapping it in (no
    /// branch name has a dot).
    pub(crate) fn reset_dir(&self, name: &str) -> PathBuf {
        self.home.branches().join(format!("{name}{RESET_SUFFIX}"))
    }

    pub(crate) fn snapshot_dir(&self, id: i64) -> PathBuf {
        self.home.snapshots().join(id.to_string())
    }

    pub(crate) fn socket_dir(&self, kind: ServerKind, name: &str) -> PathBuf {
        socket_dir_in(&self.home, kind, name)
    }

    /// The unix socket of a server of `kind` named `name`.
    pub(crate) fn endpoint(&self, kind: ServerKind, name: &str, port: u16) -> Endpoint {
        Endpoint {
            socket_dir: self.socket_dir(kind, name),
            port,
        }
    }

    pub(crate) fn log_path(&self, kind: ServerKind, name: &str) -> PathBuf {
        self.home
            .logs()
            .join(format!("{}-{name}.log", kind.prefix()))
    }

    /// Removes a server's socket directory and log.
    pub(crate) fn remove_server_files(&self, kind: ServerKind, name: &str) {
        let _ = std::fs::remove_dir_all(self.socket_dir(kind, name));
        let _ = std::fs::remove_file(self.log_path(kind, name));
    }
}

/// Suffix of the directory a reset clones into (see [`Engine::reset_dir`]).
pub(crate) const RESET_SUFFIX: &str = ".reset";

/// The unix socket directory of a server of `kind` named `name` in `home`
/// (for work that does not open an engine, such as the proxy's).
pub(crate) fn socket_dir_in(home: &Home, kind: ServerKind, name: &str) -> PathBuf {
    home.run().join(format!("{}-{name}", kind.prefix()))
}

impl ServerKind {
    fn prefix(self) -> &'static str {
        match self {
            ServerKind::Source => "source",
            ServerKind::Branch => "branch",
            ServerKind::Seal => "seal",
            ServerKind::Import => "import",
            ServerKind::View => "view",
        }
    }
}
