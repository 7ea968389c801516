//! The swap itself: the source stopped, the clone exchanged in, the
//! source started on it and its old data recorded as a snapshot; or, if
//! the source does not start, its old data put back.

use std::time::Instant;

use pgfork_pg::conf::{Profile, ServerConf};
use pgfork_pg::server::running_postmaster;
use pgfork_pg::{StopMode, control};
use pgfork_pool::meta::{BranchRow, RunState, SnapshotRow, SourceRow};

use super::{MARKER, ReplaceReport, Staged, tolerate};
use crate::import::exchange;
use crate::server::{Target, after_start, stop_server};
use crate::{Engine, EngineError, Result};

/// Files of a stopped cluster that describe its last server, not its data.
const RUNTIME_FILES: [&str; 2] = ["postmaster.opts", "current_logfiles"];

impl Engine {
    /// Stops the source, swaps the clone in, starts the source on it, and
    /// records the old data as the snapshot.
    pub(super) fn swap(
        &mut self,
        source: &SourceRow,
        branch: &BranchRow,
        staged: &Staged,
        report: &mut ReplaceReport,
    ) -> Result<()> {
        let name = source.name.as_str();
        let dir = self.source_dir(name);
        let clone = self.snapshot_dir(staged.id);
        self.progress
            .stage(&format!("stopping source {name} (fast shutdown)"));
        let down = Instant::now();
        let stopped = stop_server(source.postmaster, &dir, StopMode::Fast)
            .and_then(|()| {
                self.tidy_groups(Some(Target::Source(name)));
                self.meta
                    .write(|c| SourceRow::set_state(c, name, RunState::Stopped, None))?;
                Ok(control::read(&self.config.bins, &dir)?)
            })
            .and_then(|state| match state.is_clean() {
                true => Ok(()),
                false => Err(EngineError::WrongState(format!(
                    "source '{name}' did not shut down cleanly (state '{}'), so its data was not replaced; \
                     it was started again: see its log (pgfork source info {name})",
                    state.state
                ))),
            });
        let exchanged = stopped.and_then(|()| {
            self.progress
                .stage(&format!("swapping branch {}'s data in", branch.name));
            exchange(&clone, &dir).map_err(EngineError::io("swap in the branch's data at", &dir))
        });
        if let Err(e) = exchanged {
            // The source's own data is where it was: it serves it again.
            let pm = match running_postmaster(&dir) {
                Some(pm) => Some(pm),
                None => match self.start_source(source) {
                    Ok((pm, _)) => Some(pm.pid),
                    Err(s) => {
                        self.progress
                            .warn(&format!("source '{name}' could not be started again: {s}"));
                        None
                    }
                },
            };
            self.destroy_snapshot(staged.id);
            self.settle(Target::Source(name), after_start(pm))?;
            return Err(e);
        }
        crate::failpoint::hit("promote-replace:after-exchange");
        // The swap itself must outlive a crash of the host.
        for parent in [self.home.sources(), self.home.snapshots()] {
            if let Err(e) = std::fs::File::open(&parent).and_then(|d| d.sync_all()) {
                tracing::warn!("flushing {}: {e}", parent.display());
            }
        }
        self.progress
            .stage(&format!("starting source {name} on the new data"));
        let pm = match self.start_source(source) {
            Ok((pm, _)) => pm.pid,
            Err(e) => return self.swap_back(source, staged, e),
        };
        report.source_downtime_ms = Some(down.elapsed().as_millis() as u64);
        report.steps.push(format!(
            "stopped source {name} cleanly, swapped the clone in atomically, started {name} on it"
        ));
        let recorded = self.finish_old_data(staged.id).and_then(|lsn| {
            self.meta.write(|c| {
                SnapshotRow::finish(c, staged.id, Some(&lsn), SnapshotRow::REPLACED, 0, false)?;
                SourceRow::set_state(c, name, RunState::Running, Some(pm))?;
                SourceRow::set_op(c, name, None)
            })?;
            Ok(())
        });
        if let Err(e) = recorded {
            // The source serves the new data; the next command's reconcile
            // records the old (the marker says the exchange happened).
            return Err(EngineError::WrongState(format!(
                "source '{name}' serves branch '{}''s data, but its old data could not be recorded as \
                 snapshot {name}@{} yet ({e}): the next pgfork command finishes that",
                branch.name, staged.id
            )));
        }
        let _ = std::fs::remove_file(dir.join(MARKER));
        report.steps.push(format!(
            "kept the old data as snapshot {name}@{} until you delete it",
            staged.id
        ));
        Ok(())
    }

    /// The source did not start on the new data: the old data goes back
    /// and serves again, the new data goes.
    fn swap_back<T>(&mut self, source: &SourceRow, staged: &Staged, e: EngineError) -> Result<T> {
        let name = source.name.as_str();
        let dir = self.source_dir(name);
        let clone = self.snapshot_dir(staged.id);
        if let Err(x) = exchange(&clone, &dir) {
            // Left to the reconcile, which finds the marker in the
            // source's directory and keeps the old data as the snapshot.
            return Err(EngineError::WrongState(format!(
                "source '{name}' did not start on the branch's data ({e}), and its old data could not be put \
                 back ({x}): it is kept at {}; run `pgfork doctor`",
                clone.display()
            )));
        }
        let started = self.start_source(source);
        let pm = started.as_ref().ok().map(|(pm, _)| pm.pid);
        self.destroy_snapshot(staged.id);
        self.settle(Target::Source(name), after_start(pm))?;
        let again = match started {
            Ok(_) => "it serves its old data again".to_string(),
            Err(s) => format!("its old data is back, but did not start either ({s})"),
        };
        Err(EngineError::WrongState(format!(
            "source '{name}' did not start on the branch's data, so nothing was replaced: {again}. \
             The cause: {e}"
        )))
    }

    /// Makes the old data in snapshot directory `id` a snapshot as
    /// snapshot creation leaves one: no runtime files or replication
    /// slots, branch settings, read-only. Returns its checkpoint's LSN.
    /// Runs again after a crash (what is done already is skipped).
    pub(super) fn finish_old_data(&self, id: i64) -> Result<String> {
        let dir = self.snapshot_dir(id);
        let state = control::read(&self.config.bins, &dir)?;
        if !state.is_clean() {
            return Err(EngineError::WrongState(format!(
                "the old data in {} is in state '{}', not shut down",
                dir.display(),
                state.state
            )));
        }
        for file in RUNTIME_FILES {
            let path = dir.join(file);
            tolerate(std::fs::remove_file(&path)).map_err(EngineError::io("remove", &path))?;
        }
        let slots = dir.join("pg_replslot");
        if let Ok(entries) = std::fs::read_dir(&slots) {
            for entry in entries.flatten() {
                let path = entry.path();
                tolerate(std::fs::remove_dir_all(&path))
                    .map_err(EngineError::io("remove", &path))?;
            }
        }
        match ServerConf::new(5432, &self.home.run(), Profile::Branch)
            .write(&dir, &self.config.run_as)
        {
            Err(pgfork_pg::PgError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EROFS) => {}
            other => other?,
        }
        self.config.driver.make_readonly(&dir)?;
        Ok(state.checkpoint_lsn)
    }
}
