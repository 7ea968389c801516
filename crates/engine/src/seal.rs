//! Sealing: bringing a copied cluster to a clean shutdown state once, so
//! that no branch made from it ever replays WAL at start.

use std::path::Path;
use std::time::Duration;

use pgfork_mask::MaskRules;
use pgfork_os::RunAs;
use pgfork_pg::control::{self, ControlData};
use pgfork_pg::server::{self, StartSpec};
use pgfork_pg::sql::quote_ident;
use pgfork_pg::untrusted::session::{self, Endpoint};
use pgfork_pg::{StopMode, transfer};
use pgfork_pool::driver::TreeEntry;

use crate::{Engine, EngineError, Result, ServerKind};

/// Sealing replays the WAL written since the last checkpoint; that can
/// take a while on a busy source.
const SEAL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Directories whose contents a copy of a running cluster must not take
/// (pg_basebackup leaves out the same): runtime state, and WAL, which an
/// online backup adds separately once the backup has ended.
const EMPTY_IN_BACKUP: [&str; 8] = [
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files that describe a running server, not its data.
const RUNTIME_FILES: [&str; 3] = ["postmaster.pid", "postmaster.opts", "current_logfiles"];

/// What an online backup copies: pg_basebackup's exclusions.
pub(crate) fn backup_filter(rel: &Path) -> TreeEntry {
    let Some(name) = rel.to_str() else {
        return TreeEntry::Include;
    };
    if RUNTIME_FILES.contains(&name) || name == "backup_label" || name == "tablespace_map" {
        TreeEntry::Skip
    } else if EMPTY_IN_BACKUP.contains(&name) {
        TreeEntry::EmptyDir
    } else if rel.file_name().is_some_and(|f| f == "pg_internal.init") {
        TreeEntry::Skip
    } else {
        TreeEntry::Include
    }
}

/// What an atomic (crash-consistent) copy keeps: everything but runtime
/// files and replication slots, which would pin WAL in every branch.
pub(crate) fn atomic_filter(rel: &Path) -> TreeEntry {
    match rel.to_str() {
        Some(name) if RUNTIME_FILES.contains(&name) => TreeEntry::Skip,
        Some("pg_replslot") => TreeEntry::EmptyDir,
        _ => TreeEntry::Include,
    }
}

/// How to seal a copy.
pub(crate) struct Seal<'a> {
    /// Masking to apply: rules, key and database.
    pub mask: Option<&'a (MaskRules, Vec<u8>, String)>,
    /// The OS user that owns the copy and runs its server.
    pub owner: &'a RunAs,
    /// A role whose password the copy must not keep.
    pub forget_password_of: Option<&'a str>,
}

impl Engine {
    /// Starts the copy in `dir` privately (no TCP, its own socket), lets
    /// it recover, applies what `how` asks, and shuts it down cleanly.
    pub(crate) fn seal(&self, dir: &Path, id: i64, how: &Seal) -> Result<ControlData> {
        self.seal_with(dir, id, how, |_| Ok(()))
    }

    /// [`Engine::seal`] that also runs `work` on the private server (given
    /// its unix socket) before shutting it down; if `work` fails, the
    /// server is still shut down and its error returned.
    pub(crate) fn seal_with(
        &self,
        dir: &Path,
        id: i64,
        how: &Seal,
        work: impl FnOnce(&Endpoint) -> Result<()>,
    ) -> Result<ControlData> {
        let mask = how.mask;
        let key = id.to_string();
        let socket_dir = self.socket_dir(ServerKind::Seal, &key);
        let log = self.log_path(ServerKind::Seal, &key);
        let socket = socket_dir.display().to_string();
        let overrides = [
            ("listen_addresses", ""),
            ("port", "5432"),
            ("unix_socket_directories", socket.as_str()),
            ("archive_mode", "off"),
            ("max_wal_senders", "0"),
            ("wal_level", "replica"),
        ];
        for signal in ["standby.signal", "recovery.signal"] {
            let _ = std::fs::remove_file(dir.join(signal));
        }
        let spec = StartSpec {
            bins: &self.config.bins,
            datadir: dir,
            log: &log,
            run_as: how.owner,
            socket_dir: &socket_dir,
            port: 5432,
            overrides: &overrides,
            timeout: SEAL_TIMEOUT,
            cgroup: None,
        };
        let mut pm = server::start(&spec)?;
        if let Some(role) = how.forget_password_of {
            let forgotten = pm
                .client
                .batch_execute(&format!("ALTER ROLE {} PASSWORD NULL", quote_ident(role)))
                .map_err(EngineError::sql("remove the branch password from its copy"));
            if let Err(e) = forgotten {
                let _ = server::stop(pm.pid, StopMode::Immediate, SEAL_TIMEOUT);
                return Err(e);
            }
        }
        drop(pm.client);
        let masked = mask.map(|(rules, secret, database)| {
            self.progress.stage(&format!("masking {database}"));
            let ep = Endpoint {
                socket_dir: socket_dir.clone(),
                port: 5432,
            };
            let mut client = session::superuser_in(&ep, database)
                .map_err(EngineError::sql("connect to mask"))?;
            let (_, warnings) = crate::masking::apply(&mut client, rules, secret)?;
            for w in warnings {
                self.progress.warn(&w);
            }
            Ok::<_, EngineError>(())
        });
        let worked = work(&Endpoint {
            socket_dir: socket_dir.clone(),
            port: 5432,
        });
        server::stop(pm.pid, StopMode::Fast, SEAL_TIMEOUT)?;
        worked?;
        if let Some(result) = masked {
            result?;
            // WAL still holds the values masking replaced (full page images,
            // the UPDATEs themselves): start it afresh.
            transfer::reset_wal(&self.config.bins, dir, how.owner)?;
        }
        let control = control::read(&self.config.bins, dir)?;
        if !control.is_clean() {
            return Err(EngineError::WrongState(format!(
                "sealing left {} in state '{}' instead of 'shut down'; see {}",
                dir.display(),
                control.state,
                log.display()
            )));
        }
        // Segments recycled by the seal's checkpoints would be cloned into
        // every branch; a clean start needs none of them.
        let pruned = control::prune_wal(dir, &control)?;
        tracing::debug!(pruned, "WAL segments removed from the sealed copy");
        self.remove_server_files(ServerKind::Seal, &key);
        Ok(control)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_pg_basebackup() {
        assert_eq!(backup_filter(Path::new("postmaster.pid")), TreeEntry::Skip);
        assert_eq!(backup_filter(Path::new("pg_wal")), TreeEntry::EmptyDir);
        assert_eq!(
            backup_filter(Path::new("base/1/pg_internal.init")),
            TreeEntry::Skip
        );
        assert_eq!(backup_filter(Path::new("base/1/1259")), TreeEntry::Include);
        assert_eq!(atomic_filter(Path::new("pg_wal")), TreeEntry::Include);
        assert_eq!(atomic_filter(Path::new("pg_replslot")), TreeEntry::EmptyDir);
        assert_eq!(atomic_filter(Path::new("postmaster.pid")), TreeEntry::Skip);
    }
}
