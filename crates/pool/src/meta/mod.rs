//! meta.db: what pgfork knows about sources, snapshots and branches.
//!
//! Every row that is being changed carries an [`Op`]: what is being done
//! and by which process. A row whose op's process is gone was interrupted,
//! and the next pgfork command finishes or undoes it (see the engine's
//! reconcile). Writes use `BEGIN IMMEDIATE`, so concurrent pgfork
//! processes serialise their decisions (names, ports) without races.

mod agents;
pub mod compute;
mod gates;
mod limits;
mod members;
mod promotions;
mod remote;
mod rows;
mod schema;
mod tokens;

use std::path::Path;
use std::time::Duration;

pub use rusqlite::Connection;
use rusqlite::{OpenFlags, OptionalExtension, TransactionBehavior, params};

pub use agents::{AgentRow, AuditFilter, AuditRow};
pub use compute::{CgroupRow, ComputeLimits};
pub use gates::StoredGates;
pub use limits::SourceLimits;
pub use members::MemberRow;
pub use promotions::PromotionRow;
pub use remote::{PolicyRow, RemoteRow};
pub use rows::{
    BranchRow, BranchTimings, Op, OpKind, RunState, SnapshotRow, SourceRow, name_taken, used_ports,
};
pub use tokens::{TokenKind, TokenRow};

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// meta.db is missing: `init` has not run.
    #[error(
        "{0} has no meta.db: run `pgfork init` first (or pass --home / set PGFORK_HOME to an initialised home)"
    )]
    NotInitialised(String),
    /// meta.db was written by a newer pgfork.
    #[error(
        "meta.db schema version {found} is newer than this pgfork understands ({known}): upgrade pgfork"
    )]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Newest this build knows.
        known: i64,
    },
    /// A row holds something this build cannot read.
    #[error("meta.db holds an unreadable value in {table}.{column}: {value}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// Column.
        column: &'static str,
        /// The value.
        value: String,
    },
    /// meta.db is a link, not a regular file, or another user's.
    #[error("{0}")]
    Unsafe(crate::hygiene::Finding),
    /// meta.db could not be opened.
    #[error("open {}: {source}: check that you run pgfork as the home's owner", path.display())]
    Io {
        /// meta.db.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("meta.db: {}", sqlite_text(.0))]
    Sqlite(#[from] rusqlite::Error),
}

/// SQLite's error, with what to do when the home's filesystem is full.
fn sqlite_text(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            "the home's filesystem is full, so meta.db cannot be written; this command recorded \
             nothing more (an operation it had begun is finished or undone by the next command). \
             Free space on the home's filesystem (its logs, or files that are not pgfork's) and retry"
                .to_string()
        }
        other => other.to_string(),
    }
}

impl MetaError {
    /// Whether meta.db could not be written because its filesystem (the
    /// home's) is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            MetaError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::DiskFull
            }
            MetaError::Io { source, .. } => crate::space::is_full(source),
            _ => false,
        }
    }
}

/// An open meta.db.
pub struct Meta {
    conn: Connection,
}

impl Meta {
    /// Opens (and creates, if `create`) the metadata database and brings
    /// its schema up to date.
    /// Refuses a meta.db that is a symbolic link or another user's.
    pub fn open(path: &Path, create: bool) -> Result<Meta, MetaError> {
        check_file(path, create)?;
        // NOFOLLOW: SQLite too refuses a link put there after the check.
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // WAL lets readers go on while one writer commits; NORMAL skips the
        // fsync per commit (a crash can lose the last commit, which the
        // reconcile on the next command treats like any interrupted op).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut meta = Meta { conn };
        schema::migrate(&mut meta.conn)?;
        Ok(meta)
    }

    /// The connection, for reads.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction and commits if it succeeds.
    pub fn write<T, E: From<MetaError>>(
        &mut self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(MetaError::from)?;
        let value = f(&tx)?;
        tx.commit().map_err(MetaError::from)?;
        Ok(value)
    }

    /// A setting from `init`.
    pub fn setting(&self, key: &str) -> Result<Option<String>, MetaError> {
        Meta::setting_in(&self.conn, key)
    }

    /// A setting, read inside a transaction of [`Meta::write`].
    pub fn setting_in(conn: &Connection, key: &str) -> Result<Option<String>, MetaError> {
        Ok(conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Stores a setting.
    pub fn set_setting(conn: &Connection, key: &str, value: &str) -> Result<(), MetaError> {
        conn.execute(
            "INSERT INTO settings(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

/// Opens meta.db without following a link (creating it 0600 if asked:
/// branch passwords live there, and SQLite gives its -wal and -shm files
/// the database's mode) and checks that it is a regular file of the
/// invoking user or root. An existing file's mode is left alone: `pgfork
/// init` narrows it, `pgfork doctor` reports it.
fn check_file(path: &Path, create: bool) -> Result<(), MetaError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut options = std::fs::OpenOptions::new();
    // NONBLOCK: a FIFO in its place must not hang the open.
    options
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    if create {
        options
            .write(true)
            .create(true)
            .mode(crate::home::PRIVATE_FILE);
    }
    let io = |source| MetaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let home = path.parent().unwrap_or(path).display().to_string();
            return Err(MetaError::NotInitialised(home));
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(unsafe_file(
                path,
                "is a symbolic link: pgfork follows no link in its home and someone may have \
                 planted it; remove the link (if you made it, replace it by the file it points to)"
                    .into(),
            ));
        }
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(unsafe_file(
            path,
            "is not a regular file: move it away".into(),
        ));
    }
    if !crate::hygiene::trusted(meta.uid()) {
        return Err(unsafe_file(
            path,
            format!(
                "is owned by uid {}, not by you or root: someone else made it; \
                 check it, then chown it to yourself, or remove it",
                meta.uid()
            ),
        ));
    }
    Ok(())
}

fn unsafe_file(path: &Path, what: String) -> MetaError {
    MetaError::Unsafe(crate::hygiene::Finding {
        path: path.to_path_buf(),
        severity: crate::hygiene::Severity::Unsafe,
        message: format!("{} {what}", path.display()),
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
