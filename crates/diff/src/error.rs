//! Errors of diffing and promoting.

/// What can go wrong comparing or applying.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A query failed.
    #[error("{context}: {}", pgfork_pg::describe(source))]
    Sql {
        /// What was being read or applied.
        context: String,
        /// The server's error.
        source: postgres::Error,
    },
    /// Reading extent maps or files failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The two sides cannot be compared or applied as asked.
    #[error("{0}")]
    Refused(String),
}

impl DiffError {
    /// Wraps a query error with what was being done.
    pub fn sql(context: impl Into<String>) -> impl FnOnce(postgres::Error) -> DiffError {
        let context = context.into();
        move |source| DiffError::Sql { context, source }
    }
}
