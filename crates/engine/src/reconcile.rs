//! Reconciliation, run first by every command: finish or undo whatever an
//! interrupted pgfork process left, and remove what no row accounts for.
//!
//! Why this is safe next to other running pgfork processes:
//! - a row is always written before its directory, socket or log is made,
//!   and removed only after they are gone;
//! - so the directories are listed *before* the rows are read: anything
//!   listed without a row belongs to nobody (or was just deleted);
//! - an operation is only taken over when its owner process is dead, and
//!   by one process only: the takeover rewrites the op's owner in one write
//!   transaction, so that of several processes reconciling at once (every
//!   command and every API request reconciles first) exactly one repairs
//!   it; the others leave it alone.

use std::collections::HashSet;
use std::path::Path;

use pgfork_pg::StopMode;
use pgfork_pg::server::running_postmaster;
use pgfork_pool::meta::{BranchRow, Op, OpKind, RunState, SnapshotRow, SourceRow};
use serde::Serialize;

use crate::server::stop_server;
use crate::snapshot::destroy_dir;
use crate::{Engine, Result};

/// What a reconcile repaired.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    /// One line per repair.
    pub repaired: Vec<String>,
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `path` exists (a link counts; it is not followed).
fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn interrupted(op: Option<Op>) -> Option<Op> {
    op.filter(|o| !o.owner.is_alive())
}

/// An object whose interrupted operation is being taken over.
#[derive(Debug, Clone, Copy)]
enum Orphaned<'a> {
    Branch(&'a str),
    Snapshot(i64),
    Source(&'a str),
}

impl Engine {
    /// Makes the interrupted operation `dead` on `what` this thread's, if
    /// it is still there and still the dead one; false if another process
    /// took it over (or finished it) first.
    fn take_over(&mut self, what: Orphaned, dead: Op) -> Result<bool> {
        self.swap_op(what, dead, Op::mine(dead.kind))
    }

    /// After a repair: an operation still ours (the repair failed half-way)
    /// goes back to its dead owner, for the next reconcile to retry.
    fn give_back(&mut self, what: Orphaned, dead: Op) -> Result<()> {
        self.swap_op(what, Op::mine(dead.kind), dead)?;
        Ok(())
    }

    /// Sets the op of `what` to `to` if it is `from`, in one transaction.
    fn swap_op(&mut self, what: Orphaned, from: Op, to: Op) -> Result<bool> {
        self.meta.write(|c| {
            let now = match what {
                Orphaned::Branch(n) => BranchRow::get(c, n)?.and_then(|r| r.op),
                Orphaned::Snapshot(id) => SnapshotRow::get(c, id)?.and_then(|r| r.op),
                Orphaned::Source(n) => SourceRow::get(c, n)?.and_then(|r| r.op),
            };
            if now != Some(from) {
                return Ok::<_, crate::EngineError>(false);
            }
            match what {
                Orphaned::Branch(n) => BranchRow::set_op(c, n, Some(to))?,
                Orphaned::Snapshot(id) => SnapshotRow::set_op(c, id, Some(to))?,
                Orphaned::Source(n) => SourceRow::set_op(c, n, Some(to))?,
            }
            Ok(true)
        })
    }
}

impl Engine {
    /// Repairs what interrupted processes left behind.
    pub(crate) fn reconcile(&mut self) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let listed_sources = entries(&self.home.sources());
        let listed_snapshots = entries(&self.home.snapshots());
        let listed_branches = entries(&self.home.branches());
        let listed_staging = entries(&self.home.staging());
        let listed_dumps = entries(&self.home.dumps());
        let listed_views = entries(&self.home.views());
        let listed_run = entries(&self.home.run());
        let listed_logs = entries(&self.home.logs());

        let conn = self.meta.conn();
        let branches = BranchRow::list(conn)?;
        let snapshots = SnapshotRow::list(conn)?;
        let sources = SourceRow::list(conn)?;

        for b in &branches {
            let Some(dead) = interrupted(b.op) else {
                continue;
            };
            let what = Orphaned::Branch(&b.name);
            if !self.take_over(what, dead)? {
                continue;
            }
            let repaired = self.finish_branch_op(b, dead.kind, &mut report);
            self.give_back(what, dead)?;
            repaired?;
        }

        for s in &snapshots {
            // A replace's snapshot holds the source's old data or its new
            // data, depending on how far it got: its source's repair
            // below tells which.
            let Some(dead) = interrupted(s.op).filter(|o| o.kind != OpKind::Replacing) else {
                continue;
            };
            let what = Orphaned::Snapshot(s.id);
            if !self.take_over(what, dead)? {
                continue;
            }
            self.destroy_snapshot(s.id);
            self.give_back(what, dead)?;
            report.repaired.push(format!(
                "removed snapshot {} left unfinished by a killed pgfork",
                s.label()
            ));
        }

        for s in &sources {
            let Some(dead) = interrupted(s.op) else {
                continue;
            };
            let what = Orphaned::Source(&s.name);
            if !self.take_over(what, dead)? {
                continue;
            }
            let repaired = self.finish_source_op(s, dead.kind, &mut report);
            self.give_back(what, dead)?;
            repaired?;
        }

        // What no row accounts for. Rows are read again: the repairs above
        // removed some.
        let conn = self.meta.conn();
        let branches_now = BranchRow::list(conn)?;
        let branch_names: HashSet<String> = branches_now.iter().map(|b| b.name.clone()).collect();
        let snapshot_ids: HashSet<String> = SnapshotRow::list(conn)?
            .into_iter()
            .map(|s| s.id.to_string())
            .collect();
        let sources_now = SourceRow::list(conn)?;
        let source_names: HashSet<String> = sources_now.iter().map(|s| s.name.clone()).collect();
        // Sources importing right now (their staging and dumps are in use).
        let importing: HashSet<String> = sources_now
            .iter()
            .filter(|s| s.op.is_some_and(|o| o.owner.is_alive()))
            .map(|s| s.name.clone())
            .collect();

        // The fresh clone of a reset running right now is in use.
        let resetting: HashSet<String> = branches_now
            .iter()
            .filter(|b| b.op.is_some_and(|o| o.owner.is_alive()))
            .map(|b| format!("{}{}", b.name, crate::RESET_SUFFIX))
            .collect();
        // A directory listed before a repair above removed it is gone.
        for name in listed_branches.iter().filter(|n| {
            !branch_names.contains(*n) && !resetting.contains(*n) && present(&self.branch_dir(n))
        }) {
            destroy_dir(self, &self.branch_dir(name))?;
            report
                .repaired
                .push(format!("removed orphan branch directory {name}"));
        }
        for id in listed_snapshots
            .iter()
            .filter(|n| !snapshot_ids.contains(*n) && present(&self.home.snapshots().join(n)))
        {
            destroy_dir(self, &self.home.snapshots().join(id))?;
            report
                .repaired
                .push(format!("removed orphan snapshot directory {id}"));
        }
        for name in listed_sources
            .iter()
            .filter(|n| !source_names.contains(*n) && present(&self.source_dir(n)))
        {
            destroy_dir(self, &self.source_dir(name))?;
            report
                .repaired
                .push(format!("removed orphan source directory {name}"));
        }
        for name in listed_staging.iter().filter(|n| !importing.contains(*n)) {
            destroy_dir(self, &self.home.staging().join(name))?;
            report
                .repaired
                .push(format!("removed an abandoned import of {name}"));
        }
        for entry in &listed_dumps {
            let owner = entry.rsplit_once('-').map(|(n, _)| n).unwrap_or(entry);
            if !importing.contains(owner) {
                let _ = std::fs::remove_dir_all(self.home.dumps().join(entry));
                report
                    .repaired
                    .push(format!("removed an abandoned dump {entry}"));
            }
        }
        // Views are named PID.START.N after the process reading them.
        let mut live_views = HashSet::new();
        for key in &listed_views {
            let mut parts = key.split('.');
            let owner = match (
                parts.next().and_then(|p| p.parse().ok()),
                parts.next().and_then(|t| t.parse().ok()),
            ) {
                (Some(pid), Some(start_ticks)) => pgfork_os::ProcessId { pid, start_ticks },
                _ => pgfork_os::ProcessId {
                    pid: 0,
                    start_ticks: 0,
                },
            };
            if owner.is_alive() {
                live_views.insert(key.clone());
            } else {
                destroy_dir(self, &self.home.views().join(key))?;
                report
                    .repaired
                    .push(format!("removed a view left by a killed pgfork ({key})"));
            }
        }
        let known = |entry: &str| -> bool {
            let entry = entry.strip_suffix(".log").unwrap_or(entry);
            let Some((prefix, name)) = entry.split_once('-') else {
                return true;
            };
            match prefix {
                "branch" => branch_names.contains(name),
                "source" | "import" => source_names.contains(name),
                "view" => live_views.contains(name),
                "seal" => snapshot_ids.contains(name),
                _ => true,
            }
        };
        for entry in listed_run.iter().filter(|e| !known(e)) {
            let _ = std::fs::remove_dir_all(self.home.run().join(entry));
        }
        for entry in listed_logs.iter().filter(|e| !known(e)) {
            let _ = std::fs::remove_file(self.home.logs().join(entry));
        }
        for path in self.tidy_groups(None) {
            report.repaired.push(format!(
                "removed control group {path}, which no server uses"
            ));
        }
        for line in &report.repaired {
            self.progress.warn(line);
        }
        Ok(report)
    }
}

impl Engine {
    /// Finishes or undoes a branch's interrupted operation `kind` (taken
    /// over by this thread).
    fn finish_branch_op(
        &mut self,
        b: &BranchRow,
        kind: OpKind,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let dir = self.branch_dir(&b.name);
        match kind {
            OpKind::Creating | OpKind::Deleting => {
                self.destroy_branch(&b.name);
                report.repaired.push(format!(
                    "removed branch {} left half-{} by a killed pgfork",
                    b.name,
                    kind.as_str()
                ));
            }
            OpKind::Starting | OpKind::Stopping | OpKind::Refreshing | OpKind::Replacing => {
                // An interrupted start is undone, never adopted: the server
                // may be up before the start set the branch's password
                // (after a reset its clone holds the snapshot's), and a
                // start of a running branch does nothing, so its DSN would
                // not log in until it was stopped. The next start arms it.
                stop_server(b.postmaster, &dir, StopMode::Fast)?;
                self.meta.write(|c| {
                    BranchRow::set_state(c, &b.name, RunState::Stopped, None)?;
                    BranchRow::set_op(c, &b.name, None)
                })?;
                report.repaired.push(if kind == OpKind::Starting {
                    format!(
                        "stopped branch {}, whose start was interrupted (pgfork branch start {})",
                        b.name, b.name
                    )
                } else {
                    format!(
                        "finished an interrupted {} of branch {}",
                        kind.as_str(),
                        b.name
                    )
                });
            }
            OpKind::Resetting => {
                destroy_dir(self, &self.reset_dir(&b.name))?;
                destroy_dir(self, &dir)?;
                self.config
                    .driver
                    .clone_dir(&self.snapshot_dir(b.snapshot_id), &dir)?;
                self.meta.write(|c| {
                    BranchRow::set_state(c, &b.name, RunState::Stopped, None)?;
                    BranchRow::set_op(c, &b.name, None)
                })?;
                report.repaired.push(format!(
                    "finished an interrupted reset of branch {}: it holds its snapshot's data and is stopped \
                     (pgfork branch start {})",
                    b.name, b.name
                ));
            }
        }
        Ok(())
    }

    /// Finishes or undoes a source's interrupted operation `kind` (taken
    /// over by this thread).
    fn finish_source_op(
        &mut self,
        s: &SourceRow,
        kind: OpKind,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let dir = self.source_dir(&s.name);
        let conn = self.meta.conn();
        let has_dependents = BranchRow::list(conn)?.iter().any(|b| b.source == s.name)
            || SnapshotRow::list(conn)?.iter().any(|x| x.source == s.name);
        match kind {
            OpKind::Creating => {
                self.destroy_source(&s.name);
                report.repaired.push(format!(
                    "removed source {} left half-created by a killed pgfork",
                    s.name
                ));
            }
            OpKind::Deleting if !has_dependents => {
                self.destroy_source(&s.name);
                report
                    .repaired
                    .push(format!("finished deleting source {}", s.name));
            }
            OpKind::Replacing => self.finish_interrupted_replace(s, report)?,
            _ => {
                if kind == OpKind::Refreshing {
                    // Before the swap it holds the unfinished import; after
                    // it, the previous one. Either way it goes.
                    destroy_dir(self, &self.home.staging().join(&s.name))?;
                }
                let pm = running_postmaster(&dir);
                let state = if pm.is_some() {
                    RunState::Running
                } else {
                    RunState::Stopped
                };
                self.meta.write(|c| {
                    SourceRow::set_state(c, &s.name, state, pm)?;
                    SourceRow::set_op(c, &s.name, None)
                })?;
                report.repaired.push(format!(
                    "cleared an interrupted {} of source {}",
                    kind.as_str(),
                    s.name
                ));
            }
        }
        Ok(())
    }
}
