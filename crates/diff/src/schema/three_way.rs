//! Three-way use: which objects a branch and its source both changed.
//!
//! Promote compares the base snapshot B with the branch X and with the
//! source as it is now S. An object is a conflict when both diffs change
//! it and they do not end in the same definition: the same change made on
//! both sides is not a conflict. Objects created or dropped along with
//! their parent are listed in the diffs too, so dropping a table on one
//! side and altering one of its columns on the other is a conflict on the
//! column.

use std::collections::{BTreeMap, BTreeSet};

use super::diff::{ChangeKind, SchemaDiff};
use super::id::ObjectId;
use super::model::Definition;

/// The objects a diff changes (added, removed or modified), leaving out
/// those only rebuilt because something they depend on changed.
pub fn changed_ids(d: &SchemaDiff) -> BTreeSet<ObjectId> {
    d.changes
        .iter()
        .filter(|c| c.kind != ChangeKind::Rebuilt)
        .map(|c| c.id.clone())
        .collect()
}

/// The objects changed on both sides since the base, to different results.
///
/// `base_to_branch` is the diff from the base snapshot to the branch,
/// `base_to_source` from the same base to the source as it is now. Besides
/// objects both diffs change differently, an object changed on one side
/// whose parent (or its parent's parent) the other side drops is a
/// conflict, and so is that parent: a column added to a table the other
/// side dropped, a comment on it.
///
/// An object one side only rebuilds (drops and makes again, unchanged,
/// because something it depends on changed) is made again from that
/// side's definition; if the other side changed it, applying the first
/// side's SQL would undo that change, so it is a conflict as well.
pub fn conflicts(base_to_branch: &SchemaDiff, base_to_source: &SchemaDiff) -> BTreeSet<ObjectId> {
    let results = |d: &SchemaDiff| -> BTreeMap<ObjectId, Option<Definition>> {
        d.changes
            .iter()
            .map(|c| (c.id.clone(), c.after.clone()))
            .collect()
    };
    let branch = results(base_to_branch);
    let source = results(base_to_source);
    let mut out: BTreeSet<ObjectId> = branch
        .iter()
        .filter(|(id, after)| source.get(*id).is_some_and(|s| s != *after))
        .map(|(id, _)| id.clone())
        .collect();
    let parents: BTreeMap<&ObjectId, &ObjectId> = base_to_branch
        .changes
        .iter()
        .chain(&base_to_source.changes)
        .filter_map(|c| Some((&c.id, c.parent.as_ref()?)))
        .collect();
    for (one, other) in [(&branch, &source), (&source, &branch)] {
        for (id, after) in one {
            if other.get(id) == Some(after) {
                continue;
            }
            // Walk up the parents (a comment, its column, the table); the
            // bound only guards against a malformed, cyclic diff.
            let mut at = id;
            for _ in 0..8 {
                let Some(parent) = parents.get(at) else { break };
                if other.get(*parent) == Some(&None) {
                    out.insert(id.clone());
                    out.insert((*parent).clone());
                }
                at = parent;
            }
        }
    }
    out
}
