//! Rows about remote sources and source policies.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::MetaError;

/// Where a remote source comes from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RemoteRow {
    /// The source.
    pub source: String,
    /// Its URL, without password.
    pub url: String,
    /// The password, only if the user asked to store it.
    #[serde(skip)]
    pub saved_password: Option<String>,
    /// Seconds between scheduled refreshes (logical).
    pub refresh_every: Option<i64>,
    /// Last successful refresh (Unix seconds).
    pub refreshed_at: Option<i64>,
    /// Error of the last failed refresh.
    pub refresh_error: Option<String>,
}

impl RemoteRow {
    /// The remote row of `source`, if it is remote.
    pub fn get(conn: &Connection, source: &str) -> Result<Option<RemoteRow>, MetaError> {
        Ok(conn
            .query_row(
                "SELECT source, url, saved_password, refresh_every, refreshed_at, refresh_error FROM remotes WHERE source = ?1",
                [source],
                |r| {
                    Ok(RemoteRow {
                        source: r.get(0)?,
                        url: r.get(1)?,
                        saved_password: r.get(2)?,
                        refresh_every: r.get(3)?,
                        refreshed_at: r.get(4)?,
                        refresh_error: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// Inserts or replaces.
    pub fn put(&self, conn: &Connection) -> Result<(), MetaError> {
        conn.execute(
            "INSERT OR REPLACE INTO remotes (source, url, saved_password, refresh_every, refreshed_at, refresh_error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![self.source, self.url, self.saved_password, self.refresh_every, self.refreshed_at, self.refresh_error],
        )?;
        Ok(())
    }
}

/// Snapshot schedule and masking of a source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyRow {
    /// The source.
    pub source: String,
    /// Seconds between scheduled snapshots.
    pub snapshot_every: Option<i64>,
    /// Scheduled snapshots to keep.
    pub snapshot_keep: Option<i64>,
    /// Masking rules (TOML).
    pub mask_rules: Option<String>,
    /// Per-source masking key.
    #[serde(skip)]
    pub mask_secret: Option<Vec<u8>>,
    /// Someone chose to let unmasked data reach branches.
    pub unmasked_ok: bool,
}

impl PolicyRow {
    /// The policy of `source` (defaults if none was set).
    pub fn get(conn: &Connection, source: &str) -> Result<PolicyRow, MetaError> {
        Ok(conn
            .query_row(
                "SELECT source, snapshot_every, snapshot_keep, mask_rules, mask_secret, unmasked_ok FROM policies WHERE source = ?1",
                [source],
                |r| {
                    Ok(PolicyRow {
                        source: r.get(0)?,
                        snapshot_every: r.get(1)?,
                        snapshot_keep: r.get(2)?,
                        mask_rules: r.get(3)?,
                        mask_secret: r.get(4)?,
                        unmasked_ok: r.get(5)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_else(|| PolicyRow { source: source.into(), ..PolicyRow::default() }))
    }

    /// Inserts or replaces.
    pub fn put(&self, conn: &Connection) -> Result<(), MetaError> {
        conn.execute(
            "INSERT OR REPLACE INTO policies (source, snapshot_every, snapshot_keep, mask_rules, mask_secret, unmasked_ok)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![self.source, self.snapshot_every, self.snapshot_keep, self.mask_rules, self.mask_secret, self.unmasked_ok],
        )?;
        Ok(())
    }
}
