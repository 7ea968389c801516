//! Errors a user of the engine can hit, each saying what to do next.

use std::path::PathBuf;

use pgfork_pg::PgError;
use pgfork_pool::hygiene::Finding;
use pgfork_pool::{CloneError, ImageError, MetaError};

/// Errors of engine operations.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A name breaks the naming rules.
    #[error("invalid name '{name}': {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A name is in use.
    #[error(
        "'{name}' already exists (a {kind}); sources and branches share one namespace: choose another name"
    )]
    NameTaken {
        /// The name.
        name: String,
        /// What holds it.
        kind: &'static str,
    },
    /// No such source.
    #[error("no source named '{0}': `pgfork source list` shows the sources")]
    UnknownSource(String),
    /// No such branch.
    #[error("no branch named '{0}': `pgfork branch list` shows the branches")]
    UnknownBranch(String),
    /// No such snapshot.
    #[error("no snapshot '{0}': `pgfork snapshot list` shows the snapshots (ids look like shop@3)")]
    UnknownSnapshot(String),
    /// No such promotion request.
    #[error("no promotion request {0}: `pgfork approvals list` shows them")]
    UnknownRequest(i64),
    /// `--from` matched nothing.
    #[error(
        "'{0}' is not a source, branch or snapshot: see `pgfork source list`, `pgfork branch list`, `pgfork snapshot list`"
    )]
    UnknownOrigin(String),
    /// Deleting would orphan other objects.
    #[error("{what} has dependents: {}; delete them first, or pass --force to delete them too", dependents.join(", "))]
    HasDependents {
        /// What was to be deleted.
        what: String,
        /// What depends on it.
        dependents: Vec<String>,
    },
    /// Another pgfork process is working on the object.
    #[error("{what} is busy: pgfork process {pid} is {op} it; retry when it is done")]
    Busy {
        /// The object.
        what: String,
        /// What that process is doing.
        op: &'static str,
        /// That process.
        pid: i32,
    },
    /// The object is not in a state that allows the operation.
    #[error("{0}")]
    WrongState(String),
    /// No port left in the configured range.
    #[error(
        "no free TCP port in {min}-{max}: delete or stop branches, or widen the range (pgfork init --ports MIN-MAX)"
    )]
    NoFreePort {
        /// Lowest port of the range.
        min: u16,
        /// Highest port of the range.
        max: u16,
    },
    /// Every sandbox uid of the home is held by a branch.
    #[error(
        "every sandbox uid of this home ({range}) is held by a branch: delete branches, or give \
         the home a wider range (pgfork init --branch-uids FIRST-LAST)"
    )]
    NoFreeUid {
        /// The home's range.
        range: pgfork_os::UidRange,
    },
    /// A source has as many branches as the quota allows.
    #[error(
        "source '{source_name}' has {count} branches, the most allowed (max_branches_per_source = {max}): \
         delete branches of it first, or raise the quota (pgfork init --max-branches-per-source N)"
    )]
    QuotaExceeded {
        /// The source.
        source_name: String,
        /// Its branches now.
        count: u64,
        /// The quota.
        max: u32,
    },
    /// The pool is below its free-space floor.
    #[error(
        "the pool has {} free, below its floor of {} (min_free): delete branches or snapshots, \
         or lower the floor (pgfork init --min-free SIZE)",
        pgfork_pool::space::human_bytes(*available),
        pgfork_pool::space::human_bytes(*floor)
    )]
    DiskFloor {
        /// Bytes available.
        available: u64,
        /// The floor.
        floor: u64,
    },
    /// The pool or the home filled up during an operation; what it had
    /// written was removed (see [`crate::disk_full`]).
    #[error("{0}")]
    NoSpace(Box<crate::disk_full::OutOfSpace>),
    /// The requested driver does not work on this pool.
    #[error("the {driver} driver does not work on this pool ({filesystem} at {}): {hint}", pool.display())]
    DriverUnavailable {
        /// Driver asked for.
        driver: &'static str,
        /// Filesystem found.
        filesystem: &'static str,
        /// Pool directory.
        pool: PathBuf,
        /// What to do.
        hint: &'static str,
    },
    /// Someone other than the invoking user and root could have changed
    /// the home: pgfork refuses to use it.
    #[error(
        "pgfork refuses this home, because another user could have changed it: {}",
        .0.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("; ")
    )]
    UnsafeHome(Vec<Finding>),
    /// The home was initialised differently.
    #[error("{0}")]
    Config(String),
    /// Content pgfork was asked to work on holds code it must not run
    /// (see SECURITY.md); the message names it and says what to do.
    #[error("{0}")]
    UnsafeContent(String),
    /// The actor's scope does not allow the operation; the message says
    /// what it allows (see [`crate::scope`]).
    #[error("{0}")]
    Forbidden(String),
    /// An agent holds as many branches as it may.
    #[error(
        "agent '{agent}' holds {count} branches, the most it may (--max-branches {max}): delete one of its \
         branches first, or ask an admin to raise its limit"
    )]
    AgentQuota {
        /// The agent.
        agent: String,
        /// Its branches now.
        count: u64,
        /// Its limit.
        max: u64,
    },
    /// A promote's own check found the source would not match the branch;
    /// it was rolled back (see [`crate::promote_check`]).
    #[error("{0}")]
    Unverified(String),
    /// A promote whose patch cannot carry every change, refused without
    /// `--allow-partial`; the message lists what.
    #[error("{0}")]
    PartialPatch(String),
    /// A promotion gate failed (an assertion, or a bound on the patch's
    /// scope; see [`crate::gates`]): nothing was applied, and the message
    /// names each gate, what it found and what to do.
    #[error("{0}")]
    GateFailed(String),
    /// A TTL, label or other option value is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A compute limit (--cpu, --memory, --pids) cannot be enforced here:
    /// the message says which controller is missing, why, and what to do.
    #[error("{0}")]
    ComputeUnavailable(String),
    /// PostgreSQL failed.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// A clone failed.
    #[error(transparent)]
    Clone(#[from] CloneError),
    /// meta.db failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Pool image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The OS user is unusable.
    #[error(transparent)]
    User(#[from] pgfork_os::UserError),
    /// Other I/O.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl EngineError {
    pub(crate) fn io(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> EngineError {
        let path = path.to_path_buf();
        move |source| EngineError::Io { op, path, source }
    }

    pub(crate) fn sql(context: &str) -> impl FnOnce(postgres::Error) -> EngineError {
        let context = context.to_string();
        move |source| EngineError::Pg(PgError::Sql { context, source })
    }

    /// A stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::InvalidName { .. } => "invalid_name",
            EngineError::NameTaken { .. } => "name_taken",
            EngineError::UnknownSource(_) => "unknown_source",
            EngineError::UnknownBranch(_) => "unknown_branch",
            EngineError::UnknownSnapshot(_) => "unknown_snapshot",
            EngineError::UnknownOrigin(_) => "unknown_origin",
            EngineError::UnknownRequest(_) => "unknown_request",
            EngineError::HasDependents { .. } => "has_dependents",
            EngineError::Busy { .. } => "busy",
            EngineError::WrongState(_) => "wrong_state",
            EngineError::NoFreePort { .. } => "no_free_port",
            EngineError::NoFreeUid { .. } => "no_free_uid",
            EngineError::QuotaExceeded { .. } => "quota_exceeded",
            EngineError::DiskFloor { .. } => "disk_floor",
            EngineError::NoSpace(_) => "no_space",
            EngineError::DriverUnavailable { .. } => "driver_unavailable",
            EngineError::UnsafeHome(_) => "unsafe_home",
            EngineError::Config(_) => "config",
            EngineError::UnsafeContent(_) => "unsafe_content",
            EngineError::InvalidArgument(_) => "invalid_argument",
            EngineError::Forbidden(_) => "forbidden",
            EngineError::Unverified(_) => "promote_unverified",
            EngineError::PartialPatch(_) => "partial_patch",
            EngineError::GateFailed(_) => "gate_failed",
            EngineError::AgentQuota { .. } => "quota_exceeded",
            EngineError::ComputeUnavailable(_) => "compute_unavailable",
            // Whichever layer noticed a full disk (a write of pgfork.conf,
            // a server that could not start, SQLite).
            e if e.is_out_of_space() => "no_space",
            EngineError::Pg(PgError::NoBinaries { .. }) => "no_postgres",
            EngineError::Pg(PgError::StartFailed { .. }) => "start_failed",
            EngineError::Pg(_) => "postgres",
            EngineError::Clone(e) if e.is_no_space() => "no_space",
            EngineError::Clone(_) => "clone_failed",
            EngineError::Meta(MetaError::NotInitialised(_)) => "not_initialised",
            EngineError::Meta(MetaError::Unsafe(_)) => "unsafe_home",
            EngineError::Meta(e) if e.is_disk_full() => "no_space",
            EngineError::Meta(_) => "meta",
            EngineError::Image(_) => "pool_image",
            EngineError::User(_) => "os_user",
            EngineError::Io { .. } => "io",
        }
    }

    /// Whether the error is about something that does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            EngineError::UnknownSource(_)
                | EngineError::UnknownBranch(_)
                | EngineError::UnknownSnapshot(_)
                | EngineError::UnknownOrigin(_)
                | EngineError::UnknownRequest(_)
        )
    }
}

/// Result of engine operations.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
