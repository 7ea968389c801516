//! Members of shared branches (issue 13): agents other than a branch's
//! maker that may use it, each through a role of its own on the branch.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::MetaError;

/// One member of one branch.
#[derive(Debug, Clone, Serialize)]
pub struct MemberRow {
    /// The branch.
    pub branch: String,
    /// The member agent.
    pub agent: String,
    /// Whether it may only read.
    pub read_only: bool,
    /// Password of its role on the branch.
    #[serde(skip)]
    pub password: String,
    /// When it was shared (Unix seconds).
    pub created_at: i64,
}

const COLUMNS: &str = "branch, agent, read_only, password, created_at";

impl MemberRow {
    fn from_row(r: &Row) -> Result<MemberRow, rusqlite::Error> {
        Ok(MemberRow {
            branch: r.get(0)?,
            agent: r.get(1)?,
            read_only: r.get(2)?,
            password: r.get(3)?,
            created_at: r.get(4)?,
        })
    }

    /// Adds or replaces a membership.
    pub fn put(&self, conn: &Connection) -> Result<(), MetaError> {
        conn.execute(
            &format!(
                "INSERT INTO branch_members ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (branch, agent) DO UPDATE SET read_only = excluded.read_only,
                     password = excluded.password, created_at = excluded.created_at"
            ),
            params![
                self.branch,
                self.agent,
                self.read_only,
                self.password,
                self.created_at
            ],
        )?;
        Ok(())
    }

    /// Agent `agent`'s membership of `branch`, if any.
    pub fn get(
        conn: &Connection,
        branch: &str,
        agent: &str,
    ) -> Result<Option<MemberRow>, MetaError> {
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM branch_members WHERE branch = ?1 AND agent = ?2"),
                params![branch, agent],
                MemberRow::from_row,
            )
            .optional()?)
    }

    /// The members of `branch`, by agent.
    pub fn of_branch(conn: &Connection, branch: &str) -> Result<Vec<MemberRow>, MetaError> {
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM branch_members WHERE branch = ?1 ORDER BY agent"
        ))?;
        let rows = stmt
            .query_map([branch], MemberRow::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Removes a membership; whether there was one.
    pub fn delete(conn: &Connection, branch: &str, agent: &str) -> Result<bool, MetaError> {
        Ok(conn.execute(
            "DELETE FROM branch_members WHERE branch = ?1 AND agent = ?2",
            params![branch, agent],
        )? > 0)
    }
}
