//! `pgfork diff` output.

use anyhow::Result;
use pgfork_engine::diff_types::{RowChange, TableDiff};
use pgfork_engine::{DiffRequest, Engine};

use crate::cli::{DiffArgs, DiffFormat};
use crate::output;

/// Runs `diff` and prints its report.
pub fn diff(engine: &mut Engine, args: DiffArgs, json: bool) -> Result<()> {
    let req = DiffRequest {
        target: args.target,
        against: args.against,
        schema: !args.data_only,
        data: !args.schema_only,
        limit: args.limit,
        full: args.full,
    };
    let report = engine.diff(&req)?;
    if json || args.format == DiffFormat::Json {
        output::json(&report);
        return Ok(());
    }
    println!(
        "{} -> {}  ({} ms)",
        report.from, report.to, report.elapsed_ms
    );
    if let Some(data) = &report.data {
        if data.tables.is_empty() && data.sequences.is_empty() {
            println!("\nno rows changed");
        } else {
            println!();
            output::table(
                &["table", "inserted", "updated", "deleted", "read"],
                data.tables
                    .iter()
                    .map(|t| {
                        vec![
                            t.table.clone(),
                            t.inserted.to_string(),
                            t.updated.to_string(),
                            t.deleted.to_string(),
                            read(t),
                        ]
                    })
                    .collect(),
            );
            for t in &data.tables {
                print_rows(t);
            }
            for s in &data.sequences {
                println!("sequence {}: {} -> {}", s.sequence, opt(s.from), opt(s.to));
            }
        }
        println!(
            "\n{} tables skipped (no block changed), {} read without changes",
            data.skipped.len(),
            data.unchanged.len()
        );
    }
    Ok(())
}

fn opt(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn read(t: &TableDiff) -> String {
    match t.method {
        pgfork_engine::diff_types::Method::Pages => format!("{} pages", t.pages),
        pgfork_engine::diff_types::Method::Full => "whole table".into(),
    }
}

fn print_rows(t: &TableDiff) {
    let total = t.inserted + t.updated + t.deleted;
    println!(
        "\n{}{}",
        t.table,
        if total as usize > t.rows.len() {
            format!(" (first {} of {total})", t.rows.len())
        } else {
            String::new()
        }
    );
    for r in &t.rows {
        match r {
            RowChange::Insert { key, row } => println!("  + {} {row}", key_text(key)),
            RowChange::Delete { key, row } => println!("  - {} {row}", key_text(key)),
            RowChange::Update { key, changes } => {
                let cols: Vec<String> = changes
                    .iter()
                    .map(|(c, [o, n])| format!("{c}: {o} -> {n}"))
                    .collect();
                println!("  ~ {} {}", key_text(key), cols.join(", "));
            }
            RowChange::Added { row } => println!("  + {row}"),
            RowChange::Removed { row } => println!("  - {row}"),
        }
    }
}

fn key_text(key: &[Option<String>]) -> String {
    let parts: Vec<&str> = key.iter().map(|k| k.as_deref().unwrap_or("NULL")).collect();
    format!("({})", parts.join(", "))
}
