//! Per-source defaults for the limits of new branches.

use rusqlite::{Connection, OptionalExtension, params};

use super::MetaError;

/// The defaults a source gives its new branches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceLimits {
    /// Default `--max-size` of its branches, in bytes.
    pub branch_max_size: Option<u64>,
}

impl SourceLimits {
    /// The defaults of `source` (none set: all `None`).
    pub fn get(conn: &Connection, source: &str) -> Result<SourceLimits, MetaError> {
        let size: Option<Option<i64>> = conn
            .query_row(
                "SELECT branch_max_size FROM source_limits WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()?;
        Ok(SourceLimits {
            branch_max_size: size.flatten().map(|n| n.max(0) as u64),
        })
    }

    /// Stores the defaults of `source`.
    pub fn set(&self, conn: &Connection, source: &str) -> Result<(), MetaError> {
        conn.execute(
            "INSERT INTO source_limits(source, branch_max_size) VALUES (?1, ?2)
             ON CONFLICT(source) DO UPDATE SET branch_max_size = excluded.branch_max_size",
            params![
                source,
                self.branch_max_size.map(|n| n.min(i64::MAX as u64) as i64)
            ],
        )?;
        Ok(())
    }
}
