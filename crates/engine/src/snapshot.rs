//! Snapshots: consistent, sealed, immutable images of a source or branch.

use std::path::Path;
use std::time::Instant;

use pgfork_mask::MaskRules;
use pgfork_os::{ProcessId, RunAs};
use pgfork_pg::backup::{self, OnlineBackup};
use pgfork_pg::conf::{Profile, ServerConf, write_owned};
use pgfork_pg::untrusted::session::{self, Endpoint};
use pgfork_pg::{StopMode, control};
use pgfork_pool::driver::TreeEntry;
use pgfork_pool::meta::{BranchRow, Op, OpKind, PolicyRow, SnapshotRow, SourceRow};

use crate::disk_full::{CLUSTER_OVERHEAD, Full, tree_bytes};
use crate::seal::{Seal, atomic_filter, backup_filter};
use crate::server::stop_server;
use crate::view::SnapshotInfo;
use crate::{Engine, EngineError, Result, ServerKind};

/// Where a snapshot is taken from.
struct Origin {
    source: String,
    branch: Option<String>,
    dir: std::path::PathBuf,
    socket_dir: std::path::PathBuf,
    port: u16,
    postmaster: Option<ProcessId>,
    /// A streaming standby (physical source): read-only, in recovery.
    standby: bool,
    /// Masking to apply while sealing: rules, key and database.
    mask: Option<(MaskRules, Vec<u8>, String)>,
    /// The OS user that owns the origin's files (and seals the copy).
    owner: RunAs,
    /// For a branch: its application role, whose password the copy must
    /// not keep (the agent knows it).
    app_role: Option<String>,
}

impl Engine {
    /// Takes a snapshot of a source or a branch (by name).
    pub fn snapshot_create(&mut self, of: &str) -> Result<SnapshotInfo> {
        self.snapshot_create_opts(of, false)
    }

    /// Takes a snapshot; `unmasked` allows an unmasked snapshot of a remote
    /// source that has no masking rules (refused otherwise).
    pub fn snapshot_create_opts(&mut self, of: &str, unmasked: bool) -> Result<SnapshotInfo> {
        self.admin_only("take snapshots")?;
        self.take_snapshot_opts(of, unmasked)
    }

    /// [`Engine::snapshot_create_opts`] on behalf of another operation the
    /// actor may do (a branch of its own branch, a scheduled snapshot).
    pub(crate) fn take_snapshot_opts(&mut self, of: &str, unmasked: bool) -> Result<SnapshotInfo> {
        self.check_free_space()?;
        let origin = if let Some(s) = SourceRow::get(self.meta.conn(), of)? {
            let policy = PolicyRow::get(self.meta.conn(), &s.name)?;
            let mask = match (&policy.mask_rules, &policy.mask_secret) {
                (Some(text), Some(secret)) => {
                    let rules = MaskRules::parse("stored rules", text)
                        .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
                    (!rules.is_empty()).then(|| (rules, secret.clone(), s.database.clone()))
                }
                _ => None,
            };
            if s.mode != "local" && mask.is_none() && !policy.unmasked_ok && !unmasked {
                return Err(EngineError::WrongState(format!(
                    "source '{of}' is a copy of a remote database and has no masking rules, so its snapshots \
                     would hand personal data to branches: set rules (pgfork source mask {of} --rules mask.toml), \
                     or choose unmasked data explicitly (--unmasked)"
                )));
            }
            Origin {
                dir: self.source_dir(&s.name),
                socket_dir: self.socket_dir(ServerKind::Source, &s.name),
                port: s.port,
                postmaster: s.postmaster.filter(|p| p.is_alive()),
                standby: s.mode == "physical",
                source: s.name,
                branch: None,
                mask,
                owner: self.config.run_as.clone(),
                app_role: None,
            }
        } else if let Some(b) = BranchRow::get(self.meta.conn(), of)? {
            if b.op.is_some_and(|op| op.owner.is_alive()) {
                return Err(EngineError::Busy {
                    what: format!("branch '{of}'"),
                    op: b.op.map(|o| o.kind.as_str()).unwrap_or("?"),
                    pid: b.op.map(|o| o.owner.pid).unwrap_or(0),
                });
            }
            // A branch's data came from a (masked, if so) snapshot already.
            let app_role = self.source_row(&b.source)?.role;
            Origin {
                // Not the branch's own uid: its server runs meanwhile, and
                // must not reach the copy being sealed.
                owner: self.scratch_owner(),
                app_role: Some(app_role),
                dir: self.branch_dir(&b.name),
                socket_dir: self.socket_dir(ServerKind::Branch, &b.name),
                port: b.port,
                postmaster: b.postmaster.filter(|p| p.is_alive()),
                source: b.source,
                branch: Some(b.name),
                standby: false,
                mask: None,
            }
        } else {
            return Err(EngineError::UnknownOrigin(of.into()));
        };
        let id = self.meta.write(|c| {
            SnapshotRow::insert_creating(
                c,
                &origin.source,
                origin.branch.as_deref(),
                Op::mine(OpKind::Creating),
            )
        })?;
        let taken = self.take_snapshot(id, &origin);
        if taken.is_err() {
            self.destroy_snapshot(id);
        }
        let what = origin.branch.as_deref().unwrap_or(&origin.source);
        self.when_full(taken, || Full {
            during: format!(
                "taking a snapshot of {what}{}",
                if origin.mask.is_some() {
                    " (copy, masking, seal)"
                } else {
                    " (copy and seal)"
                }
            ),
            // Sealing writes WAL and a checkpoint; masking rewrites the
            // masked tables, at worst the whole origin.
            needed: Some(
                CLUSTER_OVERHEAD
                    + if origin.mask.is_some() {
                        tree_bytes(&origin.dir)
                    } else {
                        0
                    },
            ),
            kept: format!("No snapshot was kept; {what} and its branches are untouched"),
        })?;
        self.snapshot_info_id(id)
    }

    fn take_snapshot(&mut self, id: i64, origin: &Origin) -> Result<()> {
        let dst = self.snapshot_dir(id);
        let driver = self.config.driver;
        let label = format!(
            "{}@{id}",
            origin.branch.as_deref().unwrap_or(&origin.source)
        );
        self.progress.stage(&format!("copying {label}"));
        // A source's copy keeps its owner; a branch's is made the sealing
        // user's as it is cloned.
        let copy_owner = origin
            .branch
            .is_some()
            .then_some((origin.owner.uid, origin.owner.gid));
        let (method, mut lsn) = match origin.postmaster {
            Some(_) if driver.clones_atomically(&origin.dir) => {
                // A checkpoint (a restartpoint on a standby) first keeps the
                // WAL that sealing replays short.
                let mut client = session::maintenance(&Endpoint {
                    socket_dir: origin.socket_dir.clone(),
                    port: origin.port,
                })
                .map_err(EngineError::sql("connect for a checkpoint"))?;
                client
                    .batch_execute("CHECKPOINT")
                    .map_err(EngineError::sql("checkpoint"))?;
                driver.clone_filtered_as(&origin.dir, &dst, &atomic_filter, copy_owner)?;
                ("atomic", None)
            }
            Some(_) => {
                let backup = OnlineBackup::start(
                    &origin.socket_dir,
                    origin.port,
                    &format!("pgfork {label}"),
                )?;
                // pg_control goes last: for a backup of a standby it marks
                // where the copy becomes consistent (as pg_basebackup does).
                let skip_control = |rel: &Path| {
                    if rel == Path::new("global/pg_control") {
                        TreeEntry::Skip
                    } else {
                        backup_filter(rel)
                    }
                };
                driver.clone_filtered_as(&origin.dir, &dst, &skip_control, copy_owner)?;
                crate::failpoint::hit("snapshot-create:during-backup");
                let start_wal = backup.start_wal_file.clone();
                let end = backup.stop()?;
                driver.clone_files(
                    &origin.dir.join("global"),
                    &dst.join("global"),
                    &["pg_control".to_string()],
                    copy_owner,
                )?;
                let pg_wal = origin.dir.join("pg_wal");
                let wal = backup::wal_files_from(&pg_wal, &start_wal)
                    .map_err(EngineError::io("list", &pg_wal))?;
                driver.clone_files(&pg_wal, &dst.join("pg_wal"), &wal, copy_owner)?;
                write_owned(
                    &dst.join("backup_label"),
                    end.label_file.as_bytes(),
                    &origin.owner,
                )?;
                if !end.spcmap_file.is_empty() {
                    write_owned(
                        &dst.join("tablespace_map"),
                        end.spcmap_file.as_bytes(),
                        &origin.owner,
                    )?;
                }
                ("online-backup", Some(end.lsn))
            }
            None => {
                driver.clone_filtered_as(&origin.dir, &dst, &atomic_filter, copy_owner)?;
                ("stopped", None)
            }
        };
        // The copy must not carry its origin's settings (a standby's
        // primary_conninfo, say): branches write their own.
        ServerConf::new(5432, &self.home.run(), Profile::Branch).write(&dst, &origin.owner)?;
        crate::failpoint::hit("snapshot-create:before-seal");
        let started = Instant::now();
        let mut state = control::read(&self.config.bins, &dst)?;
        let masked = origin.mask.is_some();
        // A branch's copy is always sealed: sealing also removes the
        // password the branch's agent knows from the role.
        if method != "stopped"
            || !state.is_clean()
            || origin.standby
            || masked
            || origin.app_role.is_some()
        {
            self.progress.stage(&format!("sealing {label}"));
            let seal = Seal {
                mask: origin.mask.as_ref(),
                owner: &origin.owner,
                forget_password_of: origin.app_role.as_deref(),
            };
            state = self.seal(&dst, id, &seal)?;
        }
        let seal_ms = started.elapsed().as_millis() as i64;
        lsn.get_or_insert(state.checkpoint_lsn);
        if origin.branch.is_some() && self.config.uids.is_some() {
            // The copy of a branch must not stay its branch's to write:
            // other branches will be made from it.
            driver.give(&dst, (0, 0))?;
        }
        driver.make_readonly(&dst)?;
        self.meta
            .write(|c| SnapshotRow::finish(c, id, lsn.as_deref(), method, seal_ms, masked))?;
        Ok(())
    }

    /// Every snapshot, optionally of one source only.
    pub fn snapshot_list(&self, source: Option<&str>) -> Result<Vec<SnapshotInfo>> {
        if let Some(s) = source {
            self.visible_source(s)?;
            self.source_row(s)?;
        }
        let branches = BranchRow::list(self.meta.conn())?;
        let visible = SnapshotRow::list(self.meta.conn())?
            .into_iter()
            .map(|s| Ok((self.may_see_snapshot(&s)?, s)))
            .collect::<Result<Vec<_>>>()?;
        Ok(visible
            .iter()
            .filter(|(seen, _)| *seen)
            .map(|(_, s)| s)
            .filter(|s| source.is_none_or(|name| s.source == name))
            .map(|s| {
                let users = branches
                    .iter()
                    .filter(|b| b.snapshot_id == s.id && self.may_use_branch(b))
                    .map(|b| b.name.clone())
                    .collect();
                SnapshotInfo::new(s, users, self.snapshot_dir(s.id))
            })
            .collect())
    }

    /// One snapshot, by `ORIGIN@N` or `N`.
    pub fn snapshot_info(&self, id: &str) -> Result<SnapshotInfo> {
        let row = self.resolve_snapshot(id)?;
        if !self.may_see_snapshot(&row)? {
            return Err(EngineError::UnknownSnapshot(id.into()));
        }
        self.snapshot_info_id(row.id)
    }

    fn snapshot_info_id(&self, id: i64) -> Result<SnapshotInfo> {
        let row = SnapshotRow::get(self.meta.conn(), id)?
            .ok_or_else(|| EngineError::UnknownSnapshot(id.to_string()))?;
        let users = BranchRow::of_snapshot(self.meta.conn(), id)?
            .into_iter()
            .map(|b| b.name)
            .collect();
        Ok(SnapshotInfo::new(&row, users, self.snapshot_dir(id)))
    }

    /// Finds a ready snapshot by `ORIGIN@N` or `N`.
    pub(crate) fn resolve_snapshot(&self, text: &str) -> Result<SnapshotRow> {
        let unknown = || EngineError::UnknownSnapshot(text.into());
        let (origin, number) = match text.rsplit_once('@') {
            Some((o, n)) => (Some(o), n),
            None => (None, text),
        };
        let id: i64 = number.parse().map_err(|_| unknown())?;
        let row = SnapshotRow::get(self.meta.conn(), id)?.ok_or_else(unknown)?;
        if origin.is_some_and(|o| o != row.parent_branch.as_deref().unwrap_or(&row.source))
            || !row.is_ready()
        {
            return Err(unknown());
        }
        Ok(row)
    }

    /// Deletes a snapshot. Refused while branches use it unless `force`,
    /// which deletes them first. Returns what was deleted.
    pub fn snapshot_delete(&mut self, id: &str, force: bool) -> Result<Vec<String>> {
        self.admin_only("delete snapshots")?;
        let row = self.resolve_snapshot(id)?;
        self.snapshot_delete_id(row.id, force)
    }

    pub(crate) fn snapshot_delete_id(&mut self, id: i64, force: bool) -> Result<Vec<String>> {
        let Some(row) = SnapshotRow::get(self.meta.conn(), id)? else {
            return Ok(Vec::new());
        };
        if let Some(op) = row
            .op
            .filter(|o| o.owner.is_alive() && o.owner != ProcessId::current_thread())
        {
            return Err(EngineError::Busy {
                what: format!("snapshot {}", row.label()),
                op: op.kind.as_str(),
                pid: op.owner.pid,
            });
        }
        let users = BranchRow::of_snapshot(self.meta.conn(), id)?;
        if !users.is_empty() && !force {
            return Err(EngineError::HasDependents {
                what: format!("snapshot {}", row.label()),
                dependents: users.iter().map(|b| format!("branch {}", b.name)).collect(),
            });
        }
        let mut deleted = Vec::new();
        for b in users {
            if BranchRow::get(self.meta.conn(), &b.name)?.is_some() {
                deleted.extend(self.branch_delete(&b.name, true)?);
            }
        }
        self.meta
            .write(|c| SnapshotRow::set_op(c, id, Some(Op::mine(OpKind::Deleting))))?;
        self.destroy_snapshot(id);
        if SnapshotRow::get(self.meta.conn(), id)?.is_some() {
            return Err(EngineError::WrongState(format!(
                "snapshot {} could not be removed completely; run `pgfork doctor`",
                row.label()
            )));
        }
        deleted.push(format!("snapshot {}", row.label()));
        Ok(deleted)
    }

    /// Removes a snapshot's directory, seal leftovers and row, best effort.
    pub(crate) fn destroy_snapshot(&mut self, id: i64) {
        let dir = self.snapshot_dir(id);
        if let Err(e) = destroy_dir(self, &dir) {
            tracing::warn!("removing snapshot {id}: {e}");
            return;
        }
        self.remove_server_files(ServerKind::Seal, &id.to_string());
        if let Err(e) = self.meta.write(|c| SnapshotRow::delete(c, id)) {
            tracing::warn!("forgetting snapshot {id}: {e}");
        }
    }
}

/// Stops any server still running in `dir` (a seal cut short) and removes it.
pub(crate) fn destroy_dir(engine: &Engine, dir: &Path) -> Result<()> {
    stop_server(None, dir, StopMode::Immediate)?;
    engine.config.driver.remove(dir)?;
    Ok(())
}
