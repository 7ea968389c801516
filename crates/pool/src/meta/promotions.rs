//! Promotion requests (issue 15): an agent asks for its branch to be
//! promoted; an admin approves (which promotes) or rejects.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::MetaError;

/// One promotion request.
#[derive(Debug, Clone, Serialize)]
pub struct PromotionRow {
    /// Its number.
    pub id: i64,
    /// The branch to promote.
    pub branch: String,
    /// Its source.
    pub source: String,
    /// Who asked (`agent:NAME`, `admin:NAME`).
    pub requested_by: String,
    /// What the asker said.
    pub note: Option<String>,
    /// `open`, `approved` (and applied), `rejected`, or `withdrawn` (the
    /// branch is gone).
    pub status: String,
    /// What the request was about when made: diff summary, gates,
    /// rehearsal (JSON).
    pub summary: serde_json::Value,
    /// When it was made (Unix seconds).
    pub created_at: i64,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When (Unix seconds).
    pub decided_at: Option<i64>,
    /// Why it was rejected, or why the last approval failed.
    pub reason: Option<String>,
    /// The promote's report, once approved (JSON).
    pub result: Option<serde_json::Value>,
}

const COLUMNS: &str = "id, branch, source, requested_by, note, status, summary, created_at, \
                       decided_by, decided_at, reason, result";

fn json(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

impl PromotionRow {
    fn from_row(r: &Row) -> Result<PromotionRow, rusqlite::Error> {
        Ok(PromotionRow {
            id: r.get(0)?,
            branch: r.get(1)?,
            source: r.get(2)?,
            requested_by: r.get(3)?,
            note: r.get(4)?,
            status: r.get(5)?,
            summary: json(r.get(6)?).unwrap_or(serde_json::Value::Null),
            created_at: r.get(7)?,
            decided_by: r.get(8)?,
            decided_at: r.get(9)?,
            reason: r.get(10)?,
            result: json(r.get(11)?),
        })
    }

    /// Records a new open request; returns its number.
    pub fn insert(
        conn: &Connection,
        branch: &str,
        source: &str,
        requested_by: &str,
        note: Option<&str>,
        summary: &serde_json::Value,
    ) -> Result<i64, MetaError> {
        conn.execute(
            "INSERT INTO promotion_requests (branch, source, requested_by, note, status, summary, created_at)
             VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6)",
            params![branch, source, requested_by, note, summary.to_string(), super::now()],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Request `id`, if any.
    pub fn get(conn: &Connection, id: i64) -> Result<Option<PromotionRow>, MetaError> {
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM promotion_requests WHERE id = ?1"),
                [id],
                PromotionRow::from_row,
            )
            .optional()?)
    }

    /// Every request, newest first; only `status` ones if given.
    pub fn list(conn: &Connection, status: Option<&str>) -> Result<Vec<PromotionRow>, MetaError> {
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM promotion_requests WHERE ?1 IS NULL OR status = ?1 ORDER BY id DESC"
        ))?;
        let rows = stmt
            .query_map([status], PromotionRow::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The open request for `branch`, if any.
    pub fn open_for(conn: &Connection, branch: &str) -> Result<Option<PromotionRow>, MetaError> {
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM promotion_requests WHERE branch = ?1 AND status = 'open'"
                ),
                [branch],
                PromotionRow::from_row,
            )
            .optional()?)
    }

    /// Closes request `id` as `status` (`approved`, `rejected`,
    /// `withdrawn`), if it is still open; false if it was not.
    pub fn decide(
        conn: &Connection,
        id: i64,
        status: &str,
        by: &str,
        reason: Option<&str>,
        result: Option<&serde_json::Value>,
    ) -> Result<bool, MetaError> {
        let n = conn.execute(
            "UPDATE promotion_requests SET status = ?2, decided_by = ?3, decided_at = ?4, reason = ?5,
                    result = ?6
              WHERE id = ?1 AND status = 'open'",
            params![
                id,
                status,
                by,
                super::now(),
                reason,
                result.map(|r| r.to_string())
            ],
        )?;
        Ok(n == 1)
    }

    /// Opens request `id` again after its approval failed, noting why.
    pub fn reopen(conn: &Connection, id: i64, reason: &str) -> Result<(), MetaError> {
        conn.execute(
            "UPDATE promotion_requests SET status = 'open', decided_by = NULL, decided_at = NULL,
                    reason = ?2, result = NULL
              WHERE id = ?1",
            params![id, reason],
        )?;
        Ok(())
    }

    /// Records the promote's report of an approved request.
    pub fn set_result(
        conn: &Connection,
        id: i64,
        result: &serde_json::Value,
    ) -> Result<(), MetaError> {
        conn.execute(
            "UPDATE promotion_requests SET result = ?2 WHERE id = ?1",
            params![id, result.to_string()],
        )?;
        Ok(())
    }
}
