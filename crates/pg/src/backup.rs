//! Online base backups of a running cluster (`pg_backup_start` ...
//! `pg_backup_stop`), for clone drivers that cannot copy atomically.

use std::path::Path;

use crate::PgError;
use crate::untrusted::session::{self, Endpoint};

/// A backup in progress. Its session holds a temporary replication slot,
/// so the server keeps every WAL segment the copy will need.
pub struct OnlineBackup {
    client: postgres::Client,
    modern: bool,
    /// WAL segment that holds the backup's start checkpoint.
    pub start_wal_file: String,
}

/// What `pg_backup_stop` returned: the files that turn a copy into a backup.
#[derive(Debug, Clone)]
pub struct BackupEnd {
    /// WAL position the copy is consistent at.
    pub lsn: String,
    /// Content of `backup_label`.
    pub label_file: String,
    /// Content of `tablespace_map` (empty without tablespaces).
    pub spcmap_file: String,
}

impl OnlineBackup {
    /// Starts a non-exclusive backup with an immediate checkpoint.
    pub fn start(socket_dir: &Path, port: u16, label: &str) -> Result<OnlineBackup, PgError> {
        let mut client = session::maintenance(&Endpoint {
            socket_dir: socket_dir.to_path_buf(),
            port,
        })
        .map_err(PgError::sql("connect for a backup"))?;
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .map_err(PgError::sql("read server version"))?
            .get(0);
        let slot = format!("pgfork_backup_{}_{}", std::process::id(), rand_suffix());
        client
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true, true)",
                &[&slot],
            )
            .map_err(PgError::sql(
                "reserve WAL with a temporary replication slot",
            ))?;
        let modern = version >= 150000;
        let sql = if modern {
            "SELECT pg_backup_start($1, true)::text"
        } else {
            "SELECT pg_start_backup($1, true, false)::text"
        };
        let lsn: String = client
            .query_one(sql, &[&label])
            .map_err(PgError::sql("start the backup"))?
            .get(0);
        // pg_walfile_name() refuses to run on a standby, so name the
        // segment from the LSN, the timeline and the segment size.
        let row = client
            .query_one(
                "SELECT (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
                        (SELECT timeline_id::bigint FROM pg_control_checkpoint())",
                &[],
            )
            .map_err(PgError::sql("read the WAL segment size"))?;
        let start_wal_file = wal_file_name(
            &lsn,
            row.get::<_, i64>(1) as u32,
            row.get::<_, i64>(0) as u64,
        )
        .ok_or_else(|| PgError::Command {
            program: "pg_backup_start".into(),
            detail: format!("unreadable LSN {lsn}"),
        })?;
        Ok(OnlineBackup {
            client,
            modern,
            start_wal_file,
        })
    }

    /// Ends the backup. WAL up to the returned position is written out
    /// (the server switches segments) before this returns.
    pub fn stop(mut self) -> Result<BackupEnd, PgError> {
        let sql = if self.modern {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
        } else {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
        };
        let row = self
            .client
            .query_one(sql, &[])
            .map_err(PgError::sql("stop the backup"))?;
        Ok(BackupEnd {
            lsn: row.get(0),
            label_file: row.get(1),
            spcmap_file: row.get::<_, Option<String>>(2).unwrap_or_default(),
        })
    }
}

/// The WAL segment file holding `lsn` (`X/Y`) on `timeline`.
pub fn wal_file_name(lsn: &str, timeline: u32, segment_size: u64) -> Option<String> {
    let (hi, lo) = lsn.split_once('/')?;
    let lsn = (u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?;
    if segment_size == 0 {
        return None;
    }
    let segno = lsn / segment_size;
    let per_id = 0x1_0000_0000 / segment_size;
    Some(format!(
        "{timeline:08X}{:08X}{:08X}",
        segno / per_id,
        segno % per_id
    ))
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// WAL segment files in `pg_wal` from `first` on (same timeline), plus
/// timeline history files: what recovery of the copy needs.
pub fn wal_files_from(pg_wal: &Path, first: &str) -> std::io::Result<Vec<String>> {
    let timeline = &first[..8.min(first.len())];
    let mut names: Vec<String> = std::fs::read_dir(pg_wal)?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            let segment = n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit());
            (segment && n.starts_with(timeline) && n.as_str() >= first) || n.ends_with(".history")
        })
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_file_names_match_postgres() {
        // SELECT pg_walfile_name('0/3000028') = 000000010000000000000003 (16 MB segments)
        assert_eq!(
            wal_file_name("0/3000028", 1, 16 << 20).unwrap(),
            "000000010000000000000003"
        );
        assert_eq!(
            wal_file_name("1/A2000000", 2, 16 << 20).unwrap(),
            "0000000200000001000000A2"
        );
        assert!(wal_file_name("junk", 1, 16 << 20).is_none());
    }

    #[test]
    fn wal_selection_starts_at_the_backup_segment() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000003",
            "00000002.history",
            "archive_status",
        ] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let got = wal_files_from(dir.path(), "000000010000000000000002").unwrap();
        assert_eq!(
            got,
            vec![
                "000000010000000000000002",
                "000000010000000000000003",
                "00000002.history"
            ]
        );
    }
}
