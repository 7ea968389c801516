//! Compute limits of branches, the defaults sources give their branches,
//! and the control groups pgfork made (issue 12).

use std::path::PathBuf;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::MetaError;

/// CPU, memory and process limits of one server. `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ComputeLimits {
    /// Thousandths of a CPU (250: a quarter of one).
    pub cpu_millis: Option<u32>,
    /// Bytes of memory.
    pub memory: Option<u64>,
    /// Most processes.
    pub pids: Option<u32>,
}

impl ComputeLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.cpu_millis.is_none() && self.memory.is_none() && self.pids.is_none()
    }
}

/// A stored number that does not fit is read as no value: a bad row
/// must not break a listing (the engine bounds what it stores).
fn fits<T: TryFrom<i64>>(v: Option<i64>) -> Option<T> {
    v.and_then(|v| T::try_from(v).ok())
}

fn limits_from(r: &rusqlite::Row) -> Result<ComputeLimits, rusqlite::Error> {
    Ok(ComputeLimits {
        cpu_millis: fits(r.get(0)?),
        memory: fits::<u64>(r.get::<_, Option<i64>>(1)?.filter(|v| *v > 0)),
        pids: fits(r.get(2)?),
    })
}

fn as_sql(l: &ComputeLimits) -> (Option<i64>, Option<i64>, Option<i64>) {
    (
        l.cpu_millis.map(i64::from),
        l.memory.and_then(|m| i64::try_from(m).ok()),
        l.pids.map(i64::from),
    )
}

/// A branch's limits (none if it has no row).
pub fn branch_limits(conn: &Connection, branch: &str) -> Result<ComputeLimits, MetaError> {
    Ok(conn
        .query_row(
            "SELECT cpu_millis, memory, pids FROM branch_compute WHERE branch = ?1",
            [branch],
            limits_from,
        )
        .optional()?
        .unwrap_or_default())
}

/// Sets a branch's limits (its out-of-memory count is kept).
pub fn set_branch_limits(
    conn: &Connection,
    branch: &str,
    limits: &ComputeLimits,
) -> Result<(), MetaError> {
    let (cpu, memory, pids) = as_sql(limits);
    conn.execute(
        "INSERT INTO branch_compute (branch, cpu_millis, memory, pids) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(branch) DO UPDATE SET cpu_millis = ?2, memory = ?3, pids = ?4",
        params![branch, cpu, memory, pids],
    )?;
    Ok(())
}

/// Out-of-memory kills counted in a branch's groups that have since been
/// removed.
pub fn branch_oom_kills(conn: &Connection, branch: &str) -> Result<u64, MetaError> {
    let n: Option<i64> = conn
        .query_row(
            "SELECT oom_kills FROM branch_compute WHERE branch = ?1",
            [branch],
            |r| r.get(0),
        )
        .optional()?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

/// Adds the out-of-memory kills of a group about to be forgotten.
pub fn add_branch_oom_kills(conn: &Connection, branch: &str, kills: u64) -> Result<(), MetaError> {
    if kills == 0 {
        return Ok(());
    }
    let kills = i64::try_from(kills).unwrap_or(i64::MAX);
    conn.execute(
        "INSERT INTO branch_compute (branch, oom_kills) SELECT ?1, ?2
           WHERE EXISTS (SELECT 1 FROM branches WHERE name = ?1)
         ON CONFLICT(branch) DO UPDATE SET oom_kills = min(oom_kills + ?2, 9223372036854775807)",
        params![branch, kills],
    )?;
    Ok(())
}

/// The limits a source gives new branches (none if not set).
pub fn source_branch_defaults(conn: &Connection, source: &str) -> Result<ComputeLimits, MetaError> {
    Ok(conn
        .query_row(
            "SELECT branch_cpu_millis, branch_memory, branch_pids FROM source_compute WHERE source = ?1",
            [source],
            limits_from,
        )
        .optional()?
        .unwrap_or_default())
}

/// Sets the limits a source gives new branches (all `None` removes them).
pub fn set_source_branch_defaults(
    conn: &Connection,
    source: &str,
    limits: &ComputeLimits,
) -> Result<(), MetaError> {
    if limits.is_empty() {
        conn.execute("DELETE FROM source_compute WHERE source = ?1", [source])?;
        return Ok(());
    }
    let (cpu, memory, pids) = as_sql(limits);
    conn.execute(
        "INSERT INTO source_compute (source, branch_cpu_millis, branch_memory, branch_pids)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(source) DO UPDATE SET branch_cpu_millis = ?2, branch_memory = ?3, branch_pids = ?4",
        params![source, cpu, memory, pids],
    )?;
    Ok(())
}

/// A control group directory pgfork made for a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupRow {
    /// The directory (absolute), in one hierarchy.
    pub path: PathBuf,
    /// `source` or `branch`.
    pub kind: String,
    /// The source's or branch's name.
    pub name: String,
}

impl CgroupRow {
    /// Records a directory before it is made (nothing if recorded already).
    pub fn record(
        conn: &Connection,
        path: &std::path::Path,
        kind: &str,
        name: &str,
    ) -> Result<(), MetaError> {
        conn.execute(
            "INSERT OR IGNORE INTO cgroups (path, kind, name) VALUES (?1, ?2, ?3)",
            params![path.to_string_lossy(), kind, name],
        )?;
        Ok(())
    }

    /// Forgets a directory once it is removed; false if it was not
    /// recorded (another process forgot it first).
    pub fn forget(conn: &Connection, path: &std::path::Path) -> Result<bool, MetaError> {
        let n = conn.execute(
            "DELETE FROM cgroups WHERE path = ?1",
            [path.to_string_lossy()],
        )?;
        Ok(n > 0)
    }

    /// Every recorded directory.
    pub fn list(conn: &Connection) -> Result<Vec<CgroupRow>, MetaError> {
        let mut stmt =
            conn.prepare("SELECT path, kind, name FROM cgroups ORDER BY kind, name, path")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(CgroupRow {
                    path: PathBuf::from(r.get::<_, String>(0)?),
                    kind: r.get(1)?,
                    name: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The directories of one server.
    pub fn of(conn: &Connection, kind: &str, name: &str) -> Result<Vec<PathBuf>, MetaError> {
        let mut stmt =
            conn.prepare("SELECT path FROM cgroups WHERE kind = ?1 AND name = ?2 ORDER BY path")?;
        let rows = stmt
            .query_map([kind, name], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().map(PathBuf::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Meta;

    #[test]
    fn limits_and_groups_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = Meta::open(&dir.path().join("meta.db"), true).unwrap();
        let conn = meta.conn();
        assert!(branch_limits(conn, "b").unwrap().is_empty());
        let limits = ComputeLimits {
            cpu_millis: Some(250),
            memory: Some(256 << 20),
            pids: None,
        };
        meta.write(|c| {
            c.execute_batch(
                "INSERT INTO sources (name, mode, state, port, database, role, password, pg_major, created_at)
                   VALUES ('s', 'local', 'running', 1, 's', 's', 'p', 15, 0);
                 INSERT INTO snapshots (source, created_at) VALUES ('s', 0);
                 INSERT INTO branches (name, source, snapshot_id, state, port, password, created_at)
                   VALUES ('b', 's', 1, 'running', 2, 'p', 0);",
            )?;
            set_branch_limits(c, "b", &limits)?;
            add_branch_oom_kills(c, "b", 2)?;
            add_branch_oom_kills(c, "gone", 5)?;
            set_source_branch_defaults(c, "s", &limits)?;
            CgroupRow::record(c, std::path::Path::new("/cg/memory/x/b"), "branch", "b")?;
            CgroupRow::record(c, std::path::Path::new("/cg/memory/x/b"), "branch", "b")?;
            Ok::<_, MetaError>(())
        })
        .unwrap();
        let conn = meta.conn();
        assert_eq!(branch_limits(conn, "b").unwrap(), limits);
        assert_eq!(branch_oom_kills(conn, "b").unwrap(), 2);
        assert_eq!(
            branch_oom_kills(conn, "gone").unwrap(),
            0,
            "no row for a missing branch"
        );
        assert_eq!(source_branch_defaults(conn, "s").unwrap(), limits);
        assert_eq!(CgroupRow::of(conn, "branch", "b").unwrap().len(), 1);
        meta.write(|c| {
            c.execute("DELETE FROM branches WHERE name = 'b'", [])?;
            set_source_branch_defaults(c, "s", &ComputeLimits::default())
        })
        .unwrap();
        let conn = meta.conn();
        assert!(branch_limits(conn, "b").unwrap().is_empty(), "cascaded");
        assert!(source_branch_defaults(conn, "s").unwrap().is_empty());
        assert_eq!(
            CgroupRow::list(conn).unwrap().len(),
            1,
            "a group outlives its row until it is removed"
        );
    }
}
