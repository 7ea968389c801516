//! Errors of driving PostgreSQL.

use std::path::PathBuf;

/// What can go wrong driving PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No server binaries were found.
    #[error(
        "no PostgreSQL server binaries found ({searched}). Install them (Debian/Ubuntu: \
         apt-get install postgresql; Fedora/RHEL: dnf install postgresql-server postgresql-contrib; \
         macOS: brew install postgresql) or pass --pg-bin DIR with the directory holding initdb and postgres"
    )]
    NoBinaries {
        /// Where pgfork looked.
        searched: String,
    },
    /// A program failed.
    #[error("{program} failed: {detail}")]
    Command {
        /// The program.
        program: String,
        /// What it said.
        detail: String,
    },
    /// The postmaster exited or never became ready.
    #[error("PostgreSQL in {} did not start: {reason}\n--- last lines of {} ---\n{log_tail}", datadir.display(), log.display())]
    StartFailed {
        /// Data directory.
        datadir: PathBuf,
        /// Why we gave up.
        reason: String,
        /// The log file.
        log: PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// The port was taken by someone else between choosing it and binding it.
    #[error("port {port} is already in use")]
    PortInUse {
        /// The port.
        port: u16,
    },
    /// The server did not stop.
    #[error("PostgreSQL (pid {pid}) did not stop even after SIGKILL")]
    StopFailed {
        /// Its pid.
        pid: i32,
    },
    /// A remote database failed; the message says what to do.
    #[error("{message}")]
    Remote {
        /// What happened and what to do.
        message: String,
    },
    /// The unix socket path is too long for the kernel.
    #[error("unix socket path {0} is longer than 107 bytes: use a shorter --home")]
    SocketPathTooLong(String),
    /// SQL failed.
    #[error("{context}: {}", describe(source))]
    Sql {
        /// What pgfork was doing.
        context: String,
        /// The server's error.
        source: postgres::Error,
    },
    /// I/O failed.
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

impl PgError {
    pub(crate) fn io(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> PgError {
        let path = path.to_path_buf();
        move |source| PgError::Io { op, path, source }
    }

    pub(crate) fn sql(context: impl Into<String>) -> impl FnOnce(postgres::Error) -> PgError {
        let context = context.into();
        move |source| PgError::Sql { context, source }
    }
}

/// A client error with the server's own words: `Display` of a
/// `postgres::Error` says only "db error" for everything the server said.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => e.to_string(),
    }
}
