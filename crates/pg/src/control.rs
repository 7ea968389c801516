//! What `pg_controldata` says about a stopped cluster.

use std::path::Path;
use std::process::Command;

use crate::{PgBinaries, PgError};

/// State and position of a cluster from its control file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlData {
    /// `Database cluster state`, e.g. `shut down`, `in production`.
    pub state: String,
    /// `Latest checkpoint location`.
    pub checkpoint_lsn: String,
    /// `Latest checkpoint's REDO WAL file`: the first segment a start reads.
    pub redo_wal_file: String,
}

impl ControlData {
    /// Whether the cluster was shut down cleanly, so a start replays no WAL.
    pub fn is_clean(&self) -> bool {
        self.state == "shut down"
    }
}

/// Reads the control file of `datadir`.
pub fn read(bins: &PgBinaries, datadir: &Path) -> Result<ControlData, PgError> {
    Ok(parse(&run(bins, datadir)?))
}

/// The limits a primary recorded in pg_control that a hot standby must
/// match or exceed, as (setting, value) pairs.
pub fn read_settings(bins: &PgBinaries, datadir: &Path) -> Result<Vec<(String, String)>, PgError> {
    let text = run(bins, datadir)?;
    Ok(standby_limits(&text))
}

fn standby_limits(text: &str) -> Vec<(String, String)> {
    const MAP: [(&str, &str); 5] = [
        ("max_connections setting", "max_connections"),
        ("max_worker_processes setting", "max_worker_processes"),
        ("max_wal_senders setting", "max_wal_senders"),
        ("max_prepared_xacts setting", "max_prepared_transactions"),
        ("max_locks_per_xact setting", "max_locks_per_transaction"),
    ];
    MAP.iter()
        .filter_map(|(label, setting)| {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(label).and_then(|r| r.strip_prefix(':')))?;
            Some((setting.to_string(), value.trim().to_string()))
        })
        .collect()
}

fn run(bins: &PgBinaries, datadir: &Path) -> Result<String, PgError> {
    let out = Command::new(bins.tool("pg_controldata"))
        .arg(datadir)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| PgError::Command {
            program: "pg_controldata".into(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(PgError::Command {
            program: "pg_controldata".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn parse(text: &str) -> ControlData {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    ControlData {
        state: field("Database cluster state"),
        checkpoint_lsn: field("Latest checkpoint location"),
        redo_wal_file: field("Latest checkpoint's REDO WAL file"),
    }
}

/// Whether `name` is a WAL segment file name (timeline, log, segment).
fn is_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Removes from the `pg_wal` of a cleanly shut down cluster every segment
/// but the one its shutdown checkpoint starts in and the next (the record
/// may cross into it), and returns how many went.
///
/// A clean start reads nothing older, and the rest are segments that
/// checkpoints recycled under future names: hundreds of megabytes after a
/// seal that replayed much WAL. Left in a snapshot, every branch would
/// clone them, and on XFS each clone first writes back whatever of them is
/// still dirty in the page cache.
pub fn prune_wal(datadir: &Path, control: &ControlData) -> Result<usize, PgError> {
    if !control.is_clean() || !is_segment(&control.redo_wal_file) {
        return Ok(0);
    }
    let wal = datadir.join("pg_wal");
    let mut segments: Vec<String> = std::fs::read_dir(&wal)
        .map_err(PgError::io("read directory", &wal))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_segment(n))
        .collect();
    segments.sort();
    let Some(first) = segments.iter().position(|n| *n == control.redo_wal_file) else {
        // The control file names a segment that is not there: not ours to fix.
        return Ok(0);
    };
    let mut removed = 0;
    for (i, name) in segments.iter().enumerate() {
        if i == first || i == first + 1 {
            continue;
        }
        let path = wal.join(name);
        std::fs::remove_file(&path).map_err(PgError::io("remove", &path))?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_state_and_checkpoint() {
        let text = "pg_control version number:            1300\n\
                    Database cluster state:               shut down\n\
                    Latest checkpoint location:           0/1570F20\n\
                    Latest checkpoint's REDO WAL file:    000000010000000000000001\n";
        let c = parse(text);
        assert!(c.is_clean());
        assert_eq!(c.checkpoint_lsn, "0/1570F20");
        assert_eq!(c.redo_wal_file, "000000010000000000000001");
        assert!(!parse("Database cluster state: in production").is_clean());
        let limits = standby_limits(
            "max_connections setting:              500\nmax_wal_senders setting:              10\n",
        );
        assert_eq!(
            limits,
            vec![
                ("max_connections".into(), "500".into()),
                ("max_wal_senders".into(), "10".into())
            ]
        );
    }

    #[test]
    fn prune_keeps_the_checkpoint_segment_and_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("pg_wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        let names = [
            "00000001000000000000005E",
            "00000001000000000000005F",
            "000000010000000000000060",
            "000000010000000000000061",
            "00000001000000000000007E",
            "00000002.history",
        ];
        for n in names {
            std::fs::write(wal.join(n), b"x").unwrap();
        }
        let mut control = ControlData {
            state: "shut down".into(),
            checkpoint_lsn: "0/5FE85268".into(),
            redo_wal_file: "00000001000000000000005F".into(),
        };
        assert_eq!(prune_wal(dir.path(), &control).unwrap(), 3);
        let mut left: Vec<String> = std::fs::read_dir(&wal)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "00000001000000000000005F",
                "000000010000000000000060",
                "00000002.history",
                "archive_status"
            ]
        );
        // A cluster that was not shut down cleanly keeps all its WAL.
        std::fs::write(wal.join("000000010000000000000070"), b"x").unwrap();
        control.state = "in production".into();
        assert_eq!(prune_wal(dir.path(), &control).unwrap(), 0);
        assert!(wal.join("000000010000000000000070").exists());
    }
}
