//! A diff for people: schema changes as a list and their DDL as SQL, rows
//! as tables with inserts, deletes, and updates shown before and after
//! with the changed cells marked. Every value is the branch's content, so
//! everything here goes through maud's escaping.

use maud::{Markup, html};
use pgfork_diff::data::{DataDiff, RowChange, TableDiff};
use pgfork_diff::schema::{ChangeKind, SchemaDiff};
use pgfork_engine::DiffReport;
use serde_json::Value;

/// The whole report.
pub fn report(r: &DiffReport) -> Markup {
    html! {
        p.muted { (r.from) " → " (r.to) ", compared in " (r.elapsed_ms) " ms" }
        @for w in &r.warnings { p.flash.error { (w) } }
        @if let Some(s) = &r.schema { (schema(s)) }
        @if let Some(d) = &r.data { (data(d)) }
    }
}

fn kind(k: ChangeKind) -> &'static str {
    match k {
        ChangeKind::Added => "added",
        ChangeKind::Removed => "removed",
        ChangeKind::Modified => "modified",
        ChangeKind::Rebuilt => "rebuilt",
    }
}

/// Schema changes, and the statements that make them.
pub fn schema(s: &SchemaDiff) -> Markup {
    html! {
        h3 { "Schema" }
        @if s.changes.is_empty() {
            p.muted { "No schema changes." }
        } @else {
            ul.schema-changes {
                // Children made or dropped with their parent say nothing
                // the parent's line does not.
                @for c in s.changes.iter().filter(|c| c.implied_by.is_none()) {
                    li.schema-change {
                        span class={ "kind " (kind(c.kind)) } { (kind(c.kind)) }
                        " " code { (c.id) }
                        @if !c.detail.is_empty() { " — " (c.detail) }
                    }
                }
            }
            pre.sql { (script(&s.script)) }
        }
    }
}

fn script(statements: &[String]) -> String {
    statements
        .iter()
        .map(|s| {
            let s = s.trim_end();
            if s.ends_with(';') {
                s.to_string()
            } else {
                format!("{s};")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Changed rows, table by table.
pub fn data(d: &DataDiff) -> Markup {
    let changed: Vec<&TableDiff> = d.tables.iter().filter(|t| !t.is_empty()).collect();
    html! {
        h3 { "Data" }
        @if changed.is_empty() && d.sequences.is_empty() {
            p.muted { "No rows changed." }
        }
        @for t in &changed { (table(t)) }
        @if !d.sequences.is_empty() {
            h3 { "Sequences" }
            ul { @for s in &d.sequences {
                li { code { (s.sequence) } ": " (opt(s.from)) " → " (opt(s.to)) }
            } }
        }
    }
}

fn opt(v: Option<i64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "unused".into())
}

/// The columns to show: the key's, then every other column any shown
/// row mentions, in the order they first appear.
fn columns(t: &TableDiff) -> Vec<String> {
    let mut cols: Vec<String> = t.key.clone().unwrap_or_default();
    let mut add = |name: &String| {
        if !cols.contains(name) {
            cols.push(name.clone());
        }
    };
    for r in &t.rows {
        match r {
            RowChange::Insert { row, .. }
            | RowChange::Delete { row, .. }
            | RowChange::Added { row }
            | RowChange::Removed { row } => {
                if let Value::Object(m) = row {
                    m.keys().for_each(&mut add);
                }
            }
            RowChange::Update { changes, .. } => changes.keys().for_each(&mut add),
        }
    }
    cols
}

fn text(v: Option<&Value>) -> Markup {
    match v {
        None => html! { span.muted { "…" } },
        Some(Value::Null) => html! { span.muted { "NULL" } },
        Some(Value::String(s)) => html! { (s) },
        Some(other) => html! { (other.to_string()) },
    }
}

fn table(t: &TableDiff) -> Markup {
    let cols = columns(t);
    let key_cols = t.key.clone().unwrap_or_default();
    let key_value = |key: &[Option<String>], col: &str| -> Option<Value> {
        key_cols
            .iter()
            .position(|k| k == col)
            .and_then(|i| key.get(i).cloned())
            .map(|v| v.map(Value::String).unwrap_or(Value::Null))
    };
    let shown = t.rows.len() as u64;
    let total = t.inserted + t.updated + t.deleted;
    html! {
        h3 { code { (t.table) } " "
             span.muted { "+" (t.inserted) " ~" (t.updated) " −" (t.deleted) } }
        div.scroll {
            table.rows data-table=(t.table) {
                thead { tr { th {} @for c in &cols { th { (c) } } } }
                tbody {
                    @for r in &t.rows {
                        @match r {
                            RowChange::Insert { row, .. } | RowChange::Added { row } => {
                                tr class=(if matches!(r, RowChange::Insert { .. }) { "insert" } else { "added" }) {
                                    td { "+" }
                                    @for c in &cols { td { (text(row.get(c))) } }
                                }
                            }
                            RowChange::Delete { row, .. } | RowChange::Removed { row } => {
                                tr class=(if matches!(r, RowChange::Delete { .. }) { "delete" } else { "removed" }) {
                                    td { "−" }
                                    @for c in &cols { td { (text(row.get(c))) } }
                                }
                            }
                            RowChange::Update { key, changes } => {
                                @for (side, class, mark) in [(0usize, "before", "was"), (1, "after", "now")] {
                                    tr class=(class) {
                                        td.muted { (mark) }
                                        @for c in &cols {
                                            @if let Some(pair) = changes.get(c) {
                                                td.changed { (text(Some(&pair[side]))) }
                                            } @else {
                                                td { (text(key_value(key, c).as_ref())) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if shown < total {
            p.hint { "Showing " (shown) " of " (total) " changed rows: "
                     code { "pgfork diff " } "shows them all with " code { "--limit" } "." }
        }
        @if !t.uncompared_columns.is_empty() {
            p.hint { "Not compared (on one side only): " (t.uncompared_columns.join(", ")) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgfork_diff::data::Method;
    use std::collections::BTreeMap;

    #[test]
    fn an_update_marks_only_its_changed_cells_and_escapes_values() {
        let mut changes = BTreeMap::new();
        changes.insert(
            "email".to_string(),
            [Value::from("a@x"), Value::from("<script>x</script>")],
        );
        let t = TableDiff {
            table: "public.customers".into(),
            key: Some(vec!["id".into()]),
            inserted: 0,
            updated: 1,
            deleted: 0,
            method: Method::Pages,
            pages: 1,
            rows: vec![RowChange::Update {
                key: vec![Some("7".into())],
                changes,
            }],
            uncompared_columns: vec![],
        };
        let html = table(&t).into_string();
        assert_eq!(html.matches("class=\"changed\"").count(), 2, "{html}");
        assert!(html.contains("<td>7</td>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;") && !html.contains("<script>"),
            "{html}"
        );
    }
}
