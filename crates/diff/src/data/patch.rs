//! SQL that applies a data diff to another database of the same shape.
//!
//! Rows travel as JSON and are turned back into rows by the target itself
//! (`jsonb_populate_recordset(NULL::table, ...)`), so every type converts
//! exactly as the server's own input functions do (opaque values travel as
//! their output text, which the input function reads back). Functions and
//! operators are pg_catalog's by name, whatever the search path.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use pgfork_pg::untrusted::expr::op;

use super::catalog::{TableInfo, ident};
use super::multiset;
use super::{DataDiff, RowChange, TableDiff};
use crate::DiffError;

/// Rows per statement.
const BATCH: usize = 500;

fn literal(v: &Value) -> String {
    format!("'{}'::pg_catalog.jsonb", v.to_string().replace('\'', "''"))
}

/// `t.c = r.c AND ...` over the key columns, with pg_catalog's `=`: the
/// patch may run where the search path shows someone else's operators.
fn key_match(key_cols: &[String]) -> String {
    key_cols
        .iter()
        .map(|c| format!("t.{0} {1} r.{0}", ident(c), op("=")))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn key_object(cols: &[String], key: &[Option<String>]) -> Map<String, Value> {
    cols.iter()
        .zip(key)
        .map(|(c, v)| {
            (
                c.clone(),
                v.clone().map(Value::String).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// Statements for one table's changes, as (deletes, inserts and updates):
/// deletes run child tables first, the rest parent tables first.
fn table_patch(t: &TableDiff, info: &TableInfo) -> Result<(Vec<String>, Vec<String>), DiffError> {
    let name = info.sql_name();
    let writable: Vec<&String> = info
        .columns
        .iter()
        .filter(|c| !info.generated.contains(c))
        .collect();
    let mut deletes = Vec::new();
    let mut writes = Vec::new();
    let mut inserts: Vec<Value> = Vec::new();
    let mut removes: Vec<Value> = Vec::new();
    let mut removed: Vec<&Value> = Vec::new();
    // Updates grouped by the set of columns they change.
    let mut updates: BTreeMap<Vec<String>, Vec<Value>> = BTreeMap::new();
    let key_cols: Vec<String> = t.key.clone().unwrap_or_default();
    for change in &t.rows {
        match change {
            RowChange::Insert { row, .. } | RowChange::Added { row } => inserts.push(row.clone()),
            RowChange::Delete { key, .. } => {
                removes.push(Value::Object(key_object(&key_cols, key)))
            }
            RowChange::Update { key, changes } => {
                let mut obj = key_object(&key_cols, key);
                for (c, [_, new]) in changes {
                    obj.insert(c.clone(), new.clone());
                }
                let cols: Vec<String> = changes
                    .keys()
                    .filter(|c| !info.generated.contains(c))
                    .cloned()
                    .collect();
                if !cols.is_empty() {
                    updates.entry(cols).or_default().push(Value::Object(obj));
                }
            }
            RowChange::Removed { row } => {
                if !multiset::fits(info, row) {
                    return Err(DiffError::Refused(format!(
                        "table {} has no key, and the rows the branch removed from it have columns the \
                         target's table lacks, so they cannot be found again: apply that change by hand",
                        t.table
                    )));
                }
                removed.push(row)
            }
        }
    }
    // Without a key a row is its values: each removal takes one copy.
    for batch in multiset::copies(removed).chunks(BATCH) {
        deletes.push(multiset::delete_copies(info, batch));
    }
    for batch in removes.chunks(BATCH) {
        let on = key_match(&key_cols);
        deletes.push(format!(
            "DELETE FROM {name} t USING pg_catalog.jsonb_populate_recordset(NULL::{name}, {}) r WHERE {on}",
            literal(&Value::Array(batch.to_vec()))
        ));
    }
    for batch in inserts.chunks(BATCH) {
        let cols = writable
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        writes.push(format!(
            "INSERT INTO {name} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM pg_catalog.jsonb_populate_recordset(NULL::{name}, {})",
            literal(&Value::Array(batch.to_vec()))
        ));
    }
    for (cols, rows) in &updates {
        for batch in rows.chunks(BATCH) {
            let set = cols
                .iter()
                .map(|c| format!("{0} = r.{0}", ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let on = key_match(&key_cols);
            writes.push(format!(
                "UPDATE {name} t SET {set} FROM pg_catalog.jsonb_populate_recordset(NULL::{name}, {}) r WHERE {on}",
                literal(&Value::Array(batch.to_vec()))
            ));
        }
    }
    Ok((deletes, writes))
}

/// Statements applying `diff` (which must list every changed row: compare
/// with an unlimited `limit`) to a database whose tables are `tables`,
/// ordered by `order` (referenced tables first, see
/// [`super::catalog::fk_order`]). Sequences only move forward. The tables'
/// user triggers are off while their rows are written.
pub fn data_patch(
    diff: &DataDiff,
    tables: &BTreeMap<String, TableInfo>,
    order: &[String],
) -> Result<Vec<String>, DiffError> {
    let mut per_table: BTreeMap<&str, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for t in &diff.tables {
        let total = (t.inserted + t.updated + t.deleted) as usize;
        if t.rows.len() < total {
            return Err(DiffError::Refused(format!(
                "the diff of {} lists {} of {total} changed rows: compare with no row limit to build a patch",
                t.table,
                t.rows.len()
            )));
        }
        let info = tables.get(&t.table).ok_or_else(|| {
            DiffError::Refused(format!(
                "table {} is not on the side the patch is built for",
                t.table
            ))
        })?;
        per_table.insert(t.table.as_str(), table_patch(t, info)?);
    }
    // The branch's rows are what its triggers made of them: writing them
    // again must not run those triggers a second time (an `updated_at`, a
    // counter). Foreign key checks are internal triggers and still run.
    let mut sql = Vec::new();
    let mut enable = Vec::new();
    for name in per_table.keys() {
        let info = &tables[*name];
        for (trigger, mode) in &info.triggers {
            sql.push(format!(
                "ALTER TABLE {} DISABLE TRIGGER {trigger}",
                info.sql_name()
            ));
            let how = match mode {
                'A' => "ALWAYS ",
                'R' => "REPLICA ",
                _ => "",
            };
            enable.push(format!(
                "ALTER TABLE {} ENABLE {how}TRIGGER {trigger}",
                info.sql_name()
            ));
        }
    }
    for name in order.iter().rev() {
        if let Some((deletes, _)) = per_table.get(name.as_str()) {
            sql.extend(deletes.iter().cloned());
        }
    }
    for name in order {
        if let Some((_, writes)) = per_table.get(name.as_str()) {
            sql.extend(writes.iter().cloned());
        }
    }
    sql.extend(enable);
    for s in &diff.sequences {
        if let Some(to) = s.to {
            let (schema, seq) = s
                .sequence
                .split_once('.')
                .unwrap_or(("public", &s.sequence));
            let name = format!("{}.{}", ident(schema), ident(seq));
            sql.push(format!(
                "SELECT pg_catalog.setval('{}'::pg_catalog.regclass, greatest({to}, (SELECT last_value FROM {name})))",
                name.replace('\'', "''")
            ));
        }
    }
    Ok(sql)
}
