//! Before the source stops: the branch cloned into the snapshot
//! directory and the clone made the source's (its files, modes,
//! configuration and logins), or all of that undone.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use pgfork_os::ProcessId;
use pgfork_pg::StopMode;
use pgfork_pg::conf::{PGFORK_CONF, write_owned};
use pgfork_pg::server::running_postmaster;
use pgfork_pool::meta::{BranchRow, RunState, SourceRow};

use super::logins::{Fenced, Login, fence_logins};
use super::{MARKER, ReplaceReport, Staged, tolerate};
use crate::seal::{Seal, atomic_filter};
use crate::server::{Target, stop_server};
use crate::{Engine, EngineError, Result};

/// The files of a data directory that configure its server rather than
/// hold data: the source's own are kept.
const CONFIG_FILES: [&str; 5] = [
    "postgresql.conf",
    "postgresql.auto.conf",
    "pg_hba.conf",
    "pg_ident.conf",
    PGFORK_CONF,
];

/// Makes the clone at `root` hold only directories and regular files (a
/// link or special file, which the branch's server could have made, is
/// refused), with the modes of a data directory whose top has `dir_mode`
/// (0700, or 0750 with group access).
fn harden(root: &Path, dir_mode: u32, branch: &str) -> Result<()> {
    let file_mode = dir_mode & 0o640;
    fn walk(root: &Path, rel: &Path, modes: (u32, u32), branch: &str) -> Result<()> {
        let dir = root.join(rel);
        for entry in std::fs::read_dir(&dir).map_err(EngineError::io("read directory", &dir))? {
            let entry = entry.map_err(EngineError::io("read directory", &dir))?;
            let rel = rel.join(entry.file_name());
            let path = root.join(&rel);
            let kind = entry.file_type().map_err(EngineError::io("stat", &path))?;
            let mode = if kind.is_dir() {
                walk(root, &rel, modes, branch)?;
                modes.0
            } else if kind.is_file() {
                modes.1
            } else {
                return Err(EngineError::UnsafeContent(format!(
                    "the data directory of branch '{branch}' holds {} {}, which pgfork does not make a \
                     source's (a PostgreSQL data directory of its own has only directories and files): \
                     nothing was changed; remove it from the branch, or promote the branch's rows instead \
                     (pgfork promote {branch})",
                    if kind.is_symlink() {
                        "a symbolic link"
                    } else {
                        "a special file"
                    },
                    rel.display()
                )));
            };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(EngineError::io("chmod", &path))?;
        }
        Ok(())
    }
    walk(root, Path::new(""), (dir_mode, file_mode), branch)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(dir_mode))
        .map_err(EngineError::io("chmod", root))
}

/// Flushes every file and directory under `root` to disk, as `initdb
/// --sync-only` does: the branch ran with `fsync = off`, and its writes
/// must be durable before they are the source's. Links are not followed
/// (a clone holds none, see [`harden`]).
fn sync_tree(root: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(root)?.sync_all()
}

impl Engine {
    /// Before the source stops: clones the branch (stopped for it) into
    /// the snapshot directory and makes the clone the source's.
    pub(super) fn stage(
        &mut self,
        source: &SourceRow,
        branch: &BranchRow,
        on_source: &[Login],
        staged: &Staged,
        report: &mut ReplaceReport,
    ) -> Result<()> {
        let clone = self.snapshot_dir(staged.id);
        let branch_dir = self.branch_dir(&branch.name);
        let src_dir = self.source_dir(&source.name);
        let owner = self.config.run_as.clone();
        self.progress
            .stage(&format!("stopping branch {} to clone it", branch.name));
        stop_server(branch.postmaster, &branch_dir, StopMode::Fast)?;
        self.tidy_groups(Some(Target::Branch(&branch.name)));
        self.meta
            .write(|c| BranchRow::set_state(c, &branch.name, RunState::Stopped, None))?;
        self.progress.stage(&format!(
            "cloning branch {} into {}",
            branch.name,
            clone.display()
        ));
        let cloned = self.config.driver.clone_filtered_as(
            &branch_dir,
            &clone,
            &atomic_filter,
            Some((owner.uid, owner.gid)),
        );
        crate::failpoint::hit("promote-replace:after-clone");
        // The branch runs again at once, as it was: the rest is the clone's.
        let restarted = if staged.branch_was_running {
            self.branch_start(&branch.name).map(|_| ())
        } else {
            self.settle(Target::Branch(&branch.name), None)
        };
        cloned?;
        restarted?;
        report.steps = vec![format!(
            "cloned branch {}'s data directory (stopped cleanly for it, then started again)",
            branch.name
        )];

        let top = std::fs::symlink_metadata(&src_dir).map_err(EngineError::io("stat", &src_dir))?;
        let dir_mode = if top.mode() & 0o050 == 0o050 {
            0o750
        } else {
            0o700
        };
        harden(&clone, dir_mode, &branch.name)?;
        for file in CONFIG_FILES {
            let to = clone.join(file);
            match std::fs::read(src_dir.join(file)) {
                Ok(bytes) => write_owned(&to, &bytes, &owner)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tolerate(std::fs::remove_file(&to)).map_err(EngineError::io("remove", &to))?
                }
                Err(e) => return Err(EngineError::io("read", &src_dir.join(file))(e)),
            }
        }
        self.progress
            .stage(&format!("making the clone source {}'s", source.name));
        let seal = Seal {
            mask: None,
            owner: &owner,
            forget_password_of: None,
        };
        let mut fenced = Fenced::default();
        self.seal_with(&clone, staged.id, &seal, |ep| {
            fenced = fence_logins(ep, source, &branch.name, on_source)?;
            Ok(())
        })?;
        report.logins_removed = fenced.removed;
        report.warnings.extend(fenced.warnings);
        sync_tree(&clone).map_err(EngineError::io("flush to disk", &clone))?;
        report.steps.push(format!(
            "made the clone source {}'s: its OS user and modes, its configuration files, its logins \
             (the branch's password and member roles do not carry over), shut down cleanly",
            source.name
        ));
        write_owned(
            &clone.join(MARKER),
            format!(
                "pgfork: branch {}'s data for source {}\n",
                branch.name, source.name
            )
            .as_bytes(),
            &owner,
        )?;
        Ok(())
    }

    /// Undoes [`Engine::stage`]: the clone goes, the branch runs again if
    /// it ran (and the failure came before it was started again), and the
    /// source, which never stopped, is left serving.
    pub(super) fn unstage(&mut self, source: &SourceRow, branch: &str, staged: &Staged) {
        self.destroy_snapshot(staged.id);
        let me = ProcessId::current_thread();
        let still_ours = BranchRow::get(self.meta.conn(), branch)
            .ok()
            .flatten()
            .filter(|b| b.op.is_some_and(|o| o.owner == me));
        if let Some(row) = still_ours {
            let alive = row.postmaster.is_some_and(|p| p.is_alive())
                || running_postmaster(&self.branch_dir(branch)).is_some();
            let restarted = if staged.branch_was_running && !alive {
                self.branch_start(branch).map(|_| ())
            } else {
                self.settle(Target::Branch(branch), None)
            };
            if let Err(e) = restarted {
                self.progress.warn(&format!(
                    "branch '{branch}' could not be started again: {e}"
                ));
            }
        }
        if let Err(e) = self.settle(Target::Source(&source.name), None) {
            tracing::warn!("settling source {}: {e}", source.name);
        }
    }
}
