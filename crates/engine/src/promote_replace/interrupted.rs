//! A replace a killed pgfork left, finished or undone by the reconcile:
//! the marker in the source's directory says whether the exchange
//! happened.

use std::path::Path;

use pgfork_pg::server::running_postmaster;
use pgfork_pool::meta::{OpKind, RunState, SnapshotRow, SourceRow};

use super::MARKER;
use crate::reconcile::ReconcileReport;
use crate::{Engine, Result};

/// Whether `path` exists (a link counts; it is not followed).
fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

impl Engine {
    /// Finishes or undoes a replace a killed pgfork left (the source's op
    /// taken over by this thread): the marker in the source's directory
    /// says whether the exchange happened.
    pub(crate) fn finish_interrupted_replace(
        &mut self,
        s: &SourceRow,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let dir = self.source_dir(&s.name);
        let exchanged = present(&dir.join(MARKER));
        let staged: Vec<i64> = SnapshotRow::list(self.meta.conn())?
            .into_iter()
            .filter(|r| r.source == s.name && r.op.is_some_and(|o| o.kind == OpKind::Replacing))
            .map(|r| r.id)
            .collect();
        let pm = running_postmaster(&dir);
        let state = if pm.is_some() {
            RunState::Running
        } else {
            RunState::Stopped
        };
        if exchanged {
            for id in &staged {
                let lsn = self.finish_old_data(*id)?;
                self.meta.write(|c| {
                    SnapshotRow::finish(c, *id, Some(&lsn), SnapshotRow::REPLACED, 0, false)
                })?;
            }
            self.meta.write(|c| {
                SourceRow::set_state(c, &s.name, state, pm)?;
                SourceRow::set_op(c, &s.name, None)
            })?;
            let _ = std::fs::remove_file(dir.join(MARKER));
            let kept = staged
                .iter()
                .map(|id| format!("{}@{id}", s.name))
                .collect::<Vec<_>>()
                .join(", ");
            report.repaired.push(format!(
                "finished a replace of source {} that a killed pgfork left: it holds the branch's data{}, \
                 and its old data is snapshot {kept}",
                s.name,
                if pm.is_some() {
                    String::new()
                } else {
                    format!(" (stopped: pgfork source start {})", s.name)
                }
            ));
        } else {
            for id in &staged {
                self.destroy_snapshot(*id);
            }
            self.meta.write(|c| {
                SourceRow::set_state(c, &s.name, state, pm)?;
                SourceRow::set_op(c, &s.name, None)
            })?;
            report.repaired.push(format!(
                "undid a replace of source {} that a killed pgfork left before swapping: it keeps its data{}",
                s.name,
                if pm.is_some() {
                    String::new()
                } else {
                    format!(" (stopped: pgfork source start {})", s.name)
                }
            ));
        }
        Ok(())
    }
}
