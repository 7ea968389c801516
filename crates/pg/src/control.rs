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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_state_and_checkpoint() {
        let text = "pg_control version number:            1300\n\
                    Database cluster state:               shut down\n\
                    Latest checkpoint location:           0/1570F20\n";
        let c = parse(text);
        assert!(c.is_clean());
        assert_eq!(c.checkpoint_lsn, "0/1570F20");
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
}
