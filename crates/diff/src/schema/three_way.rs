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
/// `base_to_source` from the same base to the source as it is now.
pub fn conflicts(base_to_branch: &SchemaDiff, base_to_source: &SchemaDiff) -> BTreeSet<ObjectId> {
    let results = |d: &SchemaDiff| -> BTreeMap<ObjectId, Option<Definition>> {
        d.changes
            .iter()
            .filter(|c| c.kind != ChangeKind::Rebuilt)
            .map(|c| (c.id.clone(), c.after.clone()))
            .collect()
    };
    let branch = results(base_to_branch);
    let source = results(base_to_source);
    branch
        .into_iter()
        .filter(|(id, after)| source.get(id).is_some_and(|s| s != after))
        .map(|(id, _)| id)
        .collect()
}
