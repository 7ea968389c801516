//! Scheduled work: refreshes of logical sources and snapshots on a
//! schedule, run by `pgfork tick` (from a timer) or the daemon. A lock
//! file makes sure two ticks never run at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use pgfork_pool::meta::{self, BranchRow, PolicyRow, RemoteRow, SnapshotRow, SourceRow};
use serde::Serialize;

use crate::{Engine, EngineError, Result, names};

/// What one tick did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TickReport {
    /// Sources refreshed.
    pub refreshed: Vec<String>,
    /// Snapshots taken.
    pub snapshots: Vec<String>,
    /// Old scheduled snapshots deleted.
    pub pruned: Vec<String>,
    /// Failures, by object.
    pub errors: Vec<(String, String)>,
}

impl Engine {
    /// Sets (or with `every = None`, removes) a source's snapshot schedule.
    pub fn snapshot_schedule(
        &mut self,
        name: &str,
        every: Option<Duration>,
        keep: u32,
    ) -> Result<PolicyRow> {
        self.source_row(name)?;
        if keep == 0 {
            return Err(EngineError::InvalidArgument(
                "--keep must be at least 1".into(),
            ));
        }
        let mut policy = PolicyRow::get(self.meta.conn(), name)?;
        policy.snapshot_every = every
            .map(|d| names::stored_secs("every", d, names::INTERVAL))
            .transpose()?;
        policy.snapshot_keep = every.map(|_| keep as i64);
        self.meta.write(|c| policy.put(c))?;
        Ok(policy)
    }

    /// Sets how often a logical source is refreshed (`None`: never).
    pub fn refresh_schedule(&mut self, name: &str, every: Option<Duration>) -> Result<()> {
        let mut remote = RemoteRow::get(self.meta.conn(), name)?
            .filter(|_| {
                self.source_row(name)
                    .map(|s| s.mode == "logical")
                    .unwrap_or(false)
            })
            .ok_or_else(|| EngineError::WrongState(format!("'{name}' is not a logical source")))?;
        remote.refresh_every = every
            .map(|d| names::stored_secs("refresh_every", d, names::INTERVAL))
            .transpose()?;
        self.meta.write(|c| remote.put(c))?;
        Ok(())
    }

    /// Runs what is due: refreshes, then scheduled snapshots and pruning.
    /// Refuses to run while another tick runs.
    pub fn tick(&mut self) -> Result<TickReport> {
        self.admin_only("run scheduled work")?;
        // Owner only: anyone who can open the lock can hold it (a shared
        // flock needs only read access) and keep every tick out.
        let lock_path = self.home.tick_lock();
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(pgfork_pool::home::PRIVATE_FILE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(EngineError::io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(EngineError::Busy {
                    what: "the scheduler".into(),
                    op: "ticking",
                    pid: 0,
                });
            }
            Err(TryLockError::Error(e)) => return Err(EngineError::io("lock", &lock_path)(e)),
        }
        let report = self.tick_locked();
        self.settle_headroom();
        drop::<File>(lock);
        report
    }

    fn tick_locked(&mut self) -> Result<TickReport> {
        let mut report = TickReport::default();
        let now = meta::now();
        for source in SourceRow::list(self.meta.conn())? {
            if source.op.is_some() {
                continue;
            }
            if let Some(remote) = RemoteRow::get(self.meta.conn(), &source.name)?
                && source.mode == "logical"
                && let Some(every) = remote.refresh_every
                && remote.refreshed_at.is_none_or(|t| t + every <= now)
            {
                match self.source_refresh(&source.name) {
                    Ok(_) => report.refreshed.push(source.name.clone()),
                    Err(e) => report.errors.push((source.name.clone(), e.to_string())),
                }
            }
            let policy = PolicyRow::get(self.meta.conn(), &source.name)?;
            let Some(every) = policy.snapshot_every else {
                continue;
            };
            let latest = SnapshotRow::latest_of_source(self.meta.conn(), &source.name)?;
            if latest.is_none_or(|s| s.created_at + every <= now) {
                match self.take_snapshot_opts(&source.name, policy.unmasked_ok) {
                    Ok(info) => report.snapshots.push(info.id),
                    Err(e) => report.errors.push((source.name.clone(), e.to_string())),
                }
            }
            let keep = policy.snapshot_keep.unwrap_or(1).max(1) as usize;
            // A source's old data that a `promote --replace` displaced is
            // kept until someone deletes it, not pruned with the schedule's.
            let mut own: Vec<SnapshotRow> = SnapshotRow::list(self.meta.conn())?
                .into_iter()
                .filter(|s| s.source == source.name && s.parent_branch.is_none() && s.is_ready())
                .filter(|s| s.method.as_deref() != Some(SnapshotRow::REPLACED))
                .collect();
            own.sort_by_key(|s| std::cmp::Reverse(s.id));
            for old in own.into_iter().skip(keep) {
                // A snapshot branches still use stays until they are gone.
                if BranchRow::of_snapshot(self.meta.conn(), old.id)?.is_empty() {
                    match self.snapshot_delete_id(old.id, false) {
                        Ok(_) => report.pruned.push(old.label()),
                        Err(e) => report.errors.push((old.label(), e.to_string())),
                    }
                }
            }
        }
        Ok(report)
    }
}
