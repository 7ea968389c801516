//! What `--replace` refuses before it claims anything: a source or branch
//! it must not replace with, or one another process is at.

use pgfork_mask::MaskRules;
use pgfork_os::ProcessId;
use pgfork_pool::meta::{BranchRow, Op, PolicyRow, SnapshotRow, SourceRow};

use crate::{Engine, EngineError, Result};

/// How deep a chain of branches of branches is followed to its source.
const MAX_LINEAGE: usize = 64;

impl Engine {
    /// Refuses what `--replace` must not do: a remote source's data, a
    /// stopped source (its logins are read from it), a masked branch, a
    /// source with masking rules, and anything another process is at.
    pub(super) fn check_replace(&self, source: &SourceRow, branch: &BranchRow) -> Result<()> {
        self.refuse_replace_with_gates(&source.name, &branch.name)?;
        if source.mode != "local" {
            return Err(EngineError::WrongState(format!(
                "source '{}' is a {} copy of a remote database, whose data pgfork cannot replace: \
                 promote the branch's rows instead (pgfork promote {})",
                source.name, source.mode, branch.name
            )));
        }
        if let Some(masked) = self.masked_base(branch)? {
            return Err(EngineError::WrongState(format!(
                "branch '{}' comes from the masked snapshot {masked}: its data holds masked values, which must not \
                 become the source's; apply its changes by hand",
                branch.name
            )));
        }
        let policy = PolicyRow::get(self.meta.conn(), &source.name)?;
        let rules = policy
            .mask_rules
            .as_deref()
            .map(|text| MaskRules::parse("stored rules", text).map_or(true, |r| !r.is_empty()));
        if rules == Some(true) {
            return Err(EngineError::WrongState(format!(
                "source '{}' has masking rules, and --replace would keep its old data as an unmasked snapshot that \
                 branches could be made from: promote the branch's rows instead (pgfork promote {})",
                source.name, branch.name
            )));
        }
        if !source.postmaster.is_some_and(|p| p.is_alive()) {
            return Err(EngineError::WrongState(format!(
                "source '{}' is not running, and --replace reads who may log in to it: pgfork source start {}",
                source.name, source.name
            )));
        }
        let me = ProcessId::current_thread();
        let live = |op: Option<Op>| op.filter(|o| o.owner.is_alive() && o.owner != me);
        if let Some(op) = live(source.op) {
            return Err(busy(format!("source '{}'", source.name), op));
        }
        if let Some(op) = live(branch.op) {
            return Err(busy(format!("branch '{}'", branch.name), op));
        }
        // A snapshot being taken of either would copy a server being stopped.
        for s in SnapshotRow::list(self.meta.conn())? {
            let of_either = match &s.parent_branch {
                Some(b) => *b == branch.name,
                None => s.source == source.name,
            };
            if let Some(op) = live(s.op).filter(|_| of_either) {
                return Err(busy(format!("snapshot {}", s.label()), op));
            }
        }
        Ok(())
    }

    /// The masked snapshot the branch's data descends from, if any: its
    /// base, or the base of the branch that base was taken of, and so on.
    fn masked_base(&self, branch: &BranchRow) -> Result<Option<String>> {
        let mut id = branch.snapshot_id;
        for _ in 0..MAX_LINEAGE {
            let snap = SnapshotRow::get(self.meta.conn(), id)?.ok_or_else(|| {
                EngineError::UnknownSnapshot(format!("the base of {} (deleted)", branch.name))
            })?;
            if snap.masked {
                return Ok(Some(snap.label()));
            }
            let Some(parent) = &snap.parent_branch else {
                return Ok(None);
            };
            match BranchRow::get(self.meta.conn(), parent)? {
                Some(p) => id = p.snapshot_id,
                None => break,
            }
        }
        Err(EngineError::WrongState(format!(
            "pgfork cannot follow branch '{}' back to its source to tell whether its data was masked: \
             promote its rows instead (pgfork promote {})",
            branch.name, branch.name
        )))
    }
}

fn busy(what: String, op: Op) -> EngineError {
    EngineError::Busy {
        what,
        op: op.kind.as_str(),
        pid: op.owner.pid,
    }
}
