//! The data patch's plan, row by row: for each table the branch changed,
//! its rows on the three sides (base snapshot, branch, source now), the
//! rows that changed on both (conflicts), and the change that turns the
//! source's row into the branch's.

use std::collections::{BTreeMap, HashMap};

use pgfork_diff::data::{
    DataDiff, Key, RowChange, TableDiff, TableInfo, added_values, fetch_rows, multiset,
};
use serde_json::Value;

use super::{Conflict, Strategy};
use crate::diff::Opened;
use crate::{Engine, EngineError, Result};

/// Keeps the columns all three sides have.
fn project(row: Option<&Value>, columns: &[String]) -> Option<Value> {
    row.map(|r| match r {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| columns.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    })
}

fn keys_of(t: &TableDiff) -> Vec<Key> {
    t.rows
        .iter()
        .filter_map(|r| match r {
            RowChange::Insert { key, .. }
            | RowChange::Update { key, .. }
            | RowChange::Delete { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

/// The change that turns the source's row into the branch's.
fn change_to(key: Key, source: Option<Value>, branch: Option<Value>) -> Option<RowChange> {
    match (source, branch) {
        (None, None) => None,
        (Some(s), None) => Some(RowChange::Delete { key, row: s }),
        (None, Some(b)) => Some(RowChange::Insert { key, row: b }),
        (Some(s), Some(b)) if s == b => None,
        (Some(s), Some(b)) => {
            let mut changes = BTreeMap::new();
            if let (Value::Object(so), Value::Object(bo)) = (&s, &b) {
                for (c, bv) in bo {
                    let sv = so.get(c).cloned().unwrap_or(Value::Null);
                    if &sv != bv {
                        changes.insert(c.clone(), [sv, bv.clone()]);
                    }
                }
            }
            Some(RowChange::Update { key, changes })
        }
    }
}

impl Engine {
    /// The rows the patch writes: for each table the branch changed
    /// (`dx`), what turns the source's rows into the branch's, and the
    /// conflicts found on the way (rows that changed on both sides are
    /// left out unless `strategy` is `ours`).
    // The three sides, each as its connection and its tables, as promote
    // holds them: bundling them would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plan_rows(
        &self,
        dx: &DataDiff,
        b_tables: &BTreeMap<String, TableInfo>,
        x_tables: &BTreeMap<String, TableInfo>,
        s_tables: &BTreeMap<String, TableInfo>,
        b_side: &mut Opened,
        x_side: &mut Opened,
        target: &mut postgres::Client,
        strategy: Option<Strategy>,
        conflicts: &mut Vec<Conflict>,
    ) -> Result<DataDiff> {
        let mut plan = DataDiff {
            sequences: dx.sequences.clone(),
            ..DataDiff::default()
        };
        for t in &dx.tables {
            let Some(xt) = x_tables.get(&t.table) else {
                // Dropped on the branch: the schema patch's DROP TABLE takes
                // its rows (a source that changed them is a conflict: see
                // `dropped_written`).
                continue;
            };
            let Some(bt) = b_tables.get(&t.table) else {
                // New on the branch: the schema patch creates it; its rows
                // are all inserts.
                plan.tables.push(t.clone());
                continue;
            };
            let Some(st) = s_tables.get(&t.table) else {
                conflicts.push(Conflict {
                    object: t.table.clone(),
                    key: None,
                    reason: "the branch changed rows of a table the source has dropped".into(),
                    base: None,
                    branch: None,
                    source: None,
                });
                continue;
            };
            if t.key.is_none() {
                self.check_columns(t, bt, st, conflicts);
                plan.tables
                    .push(self.keyless_removals(target, t, st, conflicts)?);
                continue;
            }
            self.check_columns(t, bt, st, conflicts);
            // Compared: the columns all three have, and those the branch
            // added, which rows elsewhere read as the value they were added
            // with (the schema patch gives them the same).
            let added = added_values(&mut x_side.client, bt, xt)
                .map_err(|e| EngineError::WrongState(e.to_string()))?;
            let columns: Vec<String> = xt
                .columns
                .iter()
                .filter(|c| {
                    (bt.columns.contains(c) && st.columns.contains(c)) || added.contains_key(*c)
                })
                .cloned()
                .collect();
            let fill = |row: Option<Value>| -> Option<Value> {
                row.map(|mut r| {
                    if let Value::Object(m) = &mut r {
                        for (k, v) in &added {
                            m.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                    r
                })
            };
            let keys = keys_of(t);
            let fetch = |client: &mut postgres::Client,
                         info: &TableInfo|
             -> Result<HashMap<Key, Value>> {
                fetch_rows(client, info, &keys).map_err(|e| EngineError::WrongState(e.to_string()))
            };
            let b_rows = fetch(&mut b_side.client, bt)?;
            let x_rows = fetch(&mut x_side.client, xt)?;
            let s_rows = fetch(target, st)?;
            let mut rows = Vec::new();
            for key in keys {
                let b = fill(project(b_rows.get(&key), &columns));
                let x = project(x_rows.get(&key), &columns);
                let s = fill(project(s_rows.get(&key), &columns));
                let conflict = s != b && s != x;
                if conflict {
                    conflicts.push(Conflict {
                        object: t.table.clone(),
                        key: Some(key.clone()),
                        reason:
                            "the row changed on the branch and on the source since the snapshot"
                                .into(),
                        base: b.clone(),
                        branch: x.clone(),
                        source: s.clone(),
                    });
                    if strategy != Some(Strategy::Ours) {
                        continue;
                    }
                }
                rows.extend(change_to(key, s, x));
            }
            let mut out = t.clone();
            out.inserted = rows
                .iter()
                .filter(|r| matches!(r, RowChange::Insert { .. }))
                .count() as u64;
            out.updated = rows
                .iter()
                .filter(|r| matches!(r, RowChange::Update { .. }))
                .count() as u64;
            out.deleted = rows
                .iter()
                .filter(|r| matches!(r, RowChange::Delete { .. }))
                .count() as u64;
            out.rows = rows;
            if !out.is_empty() {
                plan.tables.push(out);
            }
        }
        Ok(plan)
    }

    /// A table without a key is a multiset: each row the branch removed
    /// takes one copy from the source, and a source that holds fewer copies
    /// than the branch removed is a conflict. The plan removes no more
    /// copies than the source holds (what either strategy leaves).
    fn keyless_removals(
        &self,
        target: &mut postgres::Client,
        t: &TableDiff,
        source: &TableInfo,
        conflicts: &mut Vec<Conflict>,
    ) -> Result<TableDiff> {
        let removed = t.rows.iter().filter_map(|r| match r {
            RowChange::Removed { row } if multiset::fits(source, row) => Some(row),
            _ => None,
        });
        let groups = multiset::copies(removed);
        let rows: Vec<Value> = groups.iter().map(|(row, _)| row.clone()).collect();
        let held = multiset::count_copies(target, source, &rows)
            .map_err(|e| EngineError::WrongState(e.to_string()))?;
        let mut allowed: HashMap<String, u64> = HashMap::new();
        for ((row, n), held) in groups.iter().zip(held) {
            if held < *n {
                conflicts.push(Conflict {
                    object: t.table.clone(),
                    key: None,
                    reason: format!(
                        "the branch removed {n} cop{} of this row from a table without a key, and the source \
                         holds {held} now",
                        if *n == 1 { "y" } else { "ies" }
                    ),
                    base: Some(row.clone()),
                    branch: None,
                    source: None,
                });
                allowed.insert(row.to_string(), held);
            }
        }
        let mut out = t.clone();
        out.rows.retain(|r| match r {
            RowChange::Removed { row } => match allowed.get_mut(&row.to_string()) {
                Some(0) => false,
                Some(left) => {
                    *left -= 1;
                    true
                }
                None => true,
            },
            _ => true,
        });
        out.deleted = out
            .rows
            .iter()
            .filter(|r| matches!(r, RowChange::Removed { .. }))
            .count() as u64;
        Ok(out)
    }
}
