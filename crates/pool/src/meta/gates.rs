//! Promotion gates stored per source (issue 15): bounds on a promote's
//! scope and the assertion files every promote runs. The engine checks
//! every value before it is stored; reading does not trust that.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::MetaError;

/// What a source stores: `None` for a bound it does not set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoredGates {
    /// Most rows one promote may change.
    pub max_rows: Option<u64>,
    /// Most tables whose rows one promote may change.
    pub max_tables: Option<u64>,
    /// Assertion files, `(name, sql)`, in the order given.
    pub files: Vec<(String, String)>,
}

impl StoredGates {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.max_rows.is_none() && self.max_tables.is_none() && self.files.is_empty()
    }

    /// The gates of `source` (none stored: empty).
    pub fn get(conn: &Connection, source: &str) -> Result<StoredGates, MetaError> {
        // A negative number (written by hand) is no bound rather than an
        // error: a bad row must not stop every listing.
        let bounds: Option<(Option<i64>, Option<i64>)> = conn
            .query_row(
                "SELECT max_rows, max_tables FROM source_gates WHERE source = ?1",
                [source],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (max_rows, max_tables) = bounds.unwrap_or_default();
        let mut stmt = conn.prepare(
            "SELECT name, sql FROM source_assertions WHERE source = ?1 ORDER BY position",
        )?;
        let files = stmt
            .query_map([source], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<(String, String)>, _>>()?;
        Ok(StoredGates {
            max_rows: max_rows.and_then(|n| u64::try_from(n).ok()),
            max_tables: max_tables.and_then(|n| u64::try_from(n).ok()),
            files,
        })
    }

    /// Replaces the gates of `source` with these (empty: none stored).
    pub fn set(&self, conn: &Connection, source: &str) -> Result<(), MetaError> {
        conn.execute("DELETE FROM source_assertions WHERE source = ?1", [source])?;
        conn.execute("DELETE FROM source_gates WHERE source = ?1", [source])?;
        if self.is_empty() {
            return Ok(());
        }
        let bound = |n: Option<u64>| n.map(|n| n.min(i64::MAX as u64) as i64);
        conn.execute(
            "INSERT INTO source_gates (source, max_rows, max_tables) VALUES (?1, ?2, ?3)",
            params![source, bound(self.max_rows), bound(self.max_tables)],
        )?;
        for (position, (name, sql)) in self.files.iter().enumerate() {
            conn.execute(
                "INSERT INTO source_assertions (source, position, name, sql) VALUES (?1, ?2, ?3, ?4)",
                params![source, position as i64, name, sql],
            )?;
        }
        Ok(())
    }
}
