//! The three-way check's conflicts outside the rows: what the branch
//! dropped that the source wrote since the snapshot, and columns the
//! source dropped that the branch wrote. (Row conflicts are found where
//! the rows are planned, in [`super::plan`].)

use std::collections::BTreeMap;

use pgfork_diff::data::{DataOptions, RowChange, Side, TableDiff, TableInfo, diff_data};
use pgfork_diff::schema::{ChangeKind, ObjectKind, SchemaDiff};
use pgfork_pg::untrusted::session;
use pgfork_pool::meta::SourceRow;

use super::Conflict;
use crate::diff::Opened;
use crate::{Engine, EngineError, Result, ServerKind};

/// Tables the branch dropped (no columns listed) and columns it dropped
/// from tables it kept, by `schema.table`.
pub(super) fn dropped_by(diff: &SchemaDiff) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in &diff.changes {
        if c.kind != ChangeKind::Removed {
            continue;
        }
        match c.id.kind {
            ObjectKind::Table => {
                out.insert(c.id.name.clone(), Vec::new());
            }
            ObjectKind::Column if c.implied_by.is_none() => {
                if let Some((table, column)) = c.id.name.rsplit_once('.') {
                    out.entry(table.to_string())
                        .or_default()
                        .push(column.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

impl Engine {
    /// Conflicts over what the branch dropped (`dropped`, see [`dropped_by`]):
    /// if the source wrote them since the snapshot, promoting would throw
    /// those writes away.
    pub(super) fn dropped_written(
        &self,
        source: &SourceRow,
        dropped: &BTreeMap<String, Vec<String>>,
        b_side: &mut Opened,
        target: &mut postgres::Client,
        conflicts: &mut Vec<Conflict>,
    ) -> Result<()> {
        let tables: Vec<String> = dropped.keys().cloned().collect();
        let opts = DataOptions {
            limit: usize::MAX,
            full: source.mode == "logical",
            tables: Some(tables),
        };
        let source_dir = self.source_dir(&source.name);
        // The local copy's blocks stand for a local or physical source;
        // a logical one is compared whole.
        let mut source_maintenance = if source.mode == "logical" {
            None
        } else {
            Some(
                session::maintenance(&self.endpoint(ServerKind::Source, &source.name, source.port))
                    .map_err(EngineError::sql("connect to the source for a checkpoint"))?,
            )
        };
        let ds = {
            let mut a = Side {
                client: &mut b_side.client,
                maintenance: Some(&mut b_side.maintenance),
                datadir: &b_side.datadir,
            };
            let mut s = Side {
                client: target,
                maintenance: source_maintenance.as_mut(),
                datadir: &source_dir,
            };
            diff_data(&mut a, &mut s, &opts).map_err(|e| EngineError::WrongState(e.to_string()))?
        };
        for t in &ds.tables {
            let Some(columns) = dropped.get(&t.table) else {
                continue;
            };
            let whole_table = columns.is_empty();
            let written: Vec<&String> = columns
                .iter()
                .filter(|c| {
                    t.rows.iter().any(|r| match r {
                        RowChange::Update { changes, .. } => changes.contains_key(*c),
                        RowChange::Insert { row, .. } => row.get(*c).is_some_and(|v| !v.is_null()),
                        _ => false,
                    })
                })
                .collect();
            if whole_table {
                conflicts.push(Conflict {
                    object: t.table.clone(),
                    key: None,
                    reason: "the branch dropped this table, and the source changed its rows since the snapshot".into(),
                    base: None,
                    branch: None,
                    source: None,
                });
            }
            for c in written {
                conflicts.push(Conflict {
                    object: format!("{}.{c}", t.table),
                    key: None,
                    reason:
                        "the branch dropped this column, and the source wrote it since the snapshot"
                            .into(),
                    base: None,
                    branch: None,
                    source: None,
                });
            }
        }
        Ok(())
    }

    /// A column the source dropped cannot take the branch's writes.
    pub(super) fn check_columns(
        &self,
        t: &TableDiff,
        base: &TableInfo,
        source: &TableInfo,
        conflicts: &mut Vec<Conflict>,
    ) {
        for column in base.columns.iter().filter(|c| !source.columns.contains(c)) {
            let written = t.rows.iter().any(|r| match r {
                RowChange::Update { changes, .. } => changes.contains_key(column),
                RowChange::Insert { row, .. } => row.get(column).is_some_and(|v| !v.is_null()),
                _ => false,
            });
            if written {
                conflicts.push(Conflict {
                    object: format!("{}.{column}", t.table),
                    key: None,
                    reason: "the source dropped this column, and the branch wrote it".into(),
                    base: None,
                    branch: None,
                    source: None,
                });
            }
        }
    }
}
