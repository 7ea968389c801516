//! Putting statements in an order that applies.
//!
//! Each step (the statements of one object at one phase) is a node; an
//! edge says one step must run before another. Among the steps free to
//! run, drops go first, then the lowest phase, then columns by position,
//! then by identity, so that the script is stable and reads in the usual
//! order (schemas, types, tables, ..., grants, comments) wherever the
//! dependencies allow it.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use super::id::ObjectId;

/// The statements of one object at one phase.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// The object.
    pub id: ObjectId,
    /// A drop (runs in the first part of the script where it can).
    pub drop: bool,
    /// Phase rank: creation phase for creates, drop rank for drops.
    pub rank: u8,
    /// Position (a column's attnum), so new columns keep their order.
    pub position: i32,
    /// The statements.
    pub sql: Vec<String>,
}

/// Sort key among ready steps: creates after drops, then rank, position,
/// identity, and index (for stability).
type Key<'a> = (bool, u8, i32, &'a ObjectId, usize);

impl Step {
    fn key(&self, index: usize) -> Key<'_> {
        (!self.drop, self.rank, self.position, &self.id, index)
    }
}

/// The order to run `steps` in, so that for every edge `(a, b)` step `a`
/// runs before `b`; and the steps that were put out of order because the
/// edges make a cycle (each one ran before something it should have
/// waited for), which the caller reports.
pub(crate) fn sort(steps: &[Step], edges: &BTreeSet<(usize, usize)>) -> (Vec<usize>, Vec<usize>) {
    let n = steps.len();
    let mut blockers = vec![0usize; n];
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        if a != b && a < n && b < n {
            blockers[b] += 1;
            after[a].push(b);
        }
    }
    let mut ready: BinaryHeap<Reverse<Key>> = (0..n)
        .filter(|&i| blockers[i] == 0)
        .map(|i| Reverse(steps[i].key(i)))
        .collect();
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let mut forced = Vec::new();
    while order.len() < n {
        let next = match ready.pop() {
            Some(Reverse(key)) => key.4,
            None => {
                // A cycle: run the step that would come first anyway and
                // let the caller say so.
                let Some(i) = (0..n)
                    .filter(|&i| !done[i])
                    .min_by(|&a, &b| steps[a].key(a).cmp(&steps[b].key(b)))
                else {
                    break;
                };
                forced.push(i);
                blockers[i] = 0;
                i
            }
        };
        if done[next] {
            continue;
        }
        done[next] = true;
        order.push(next);
        for &b in &after[next] {
            if done[b] {
                continue;
            }
            blockers[b] = blockers[b].saturating_sub(1);
            if blockers[b] == 0 {
                ready.push(Reverse(steps[b].key(b)));
            }
        }
    }
    (order, forced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::id::ObjectKind;

    fn step(name: &str, drop: bool, rank: u8) -> Step {
        Step {
            id: ObjectId::new(ObjectKind::Table, name),
            drop,
            rank,
            position: 0,
            sql: vec![name.to_string()],
        }
    }

    #[test]
    fn drops_come_first_then_phases_unless_an_edge_says_otherwise() {
        let steps = vec![
            step("create_view", false, 10),
            step("create_table", false, 5),
            step("drop_a", true, 3),
            step("create_fn", false, 8),
            step("drop_b", true, 1),
        ];
        let (order, forced) = sort(&steps, &BTreeSet::new());
        assert!(forced.is_empty());
        assert_eq!(order, vec![4, 2, 1, 3, 0]);
        // The table's column default calls the function: function first.
        let edges = BTreeSet::from([(3, 1)]);
        let (order, _) = sort(&steps, &edges);
        assert_eq!(order, vec![4, 2, 3, 1, 0]);
        // A drop that must wait for an alteration waits.
        let edges = BTreeSet::from([(1, 4)]);
        let (order, _) = sort(&steps, &edges);
        assert_eq!(order, vec![2, 1, 4, 3, 0]);
    }

    #[test]
    fn cycles_are_broken_and_reported() {
        let steps = vec![step("a", false, 1), step("b", false, 2)];
        let edges = BTreeSet::from([(0, 1), (1, 0)]);
        let (order, forced) = sort(&steps, &edges);
        assert_eq!(order, vec![0, 1]);
        assert_eq!(forced, vec![0]);
    }
}
