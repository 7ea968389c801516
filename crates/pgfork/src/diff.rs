//! `pgfork diff` output.

use anyhow::Result;
use pgfork_engine::diff_types::{RowChange, TableDiff};
use pgfork_engine::{
    AssertionFile, DiffRequest, Engine, GateResult, PromoteReport, PromoteRequest, Strategy,
};

use crate::cli::{DiffArgs, DiffFormat, PromoteArgs, StrategyArg};
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
        sql: args.format == DiffFormat::Sql,
    };
    let report = engine.diff(&req)?;
    if json || args.format == DiffFormat::Json {
        output::json(&report);
        return Ok(());
    }
    if args.format == DiffFormat::Sql {
        println!("-- pgfork diff: {} -> {}", report.from, report.to);
        // What the patch does not carry, where a reader of the SQL sees it.
        for w in &report.warnings {
            println!("-- warning (not in this patch): {w}");
            eprintln!("warning: not in this patch: {w}");
        }
        println!("BEGIN;");
        for s in report.sql.iter().flatten() {
            println!("{s};");
        }
        println!("COMMIT;");
        return Ok(());
    }
    println!(
        "{} -> {}  ({} ms)",
        report.from, report.to, report.elapsed_ms
    );
    if let Some(schema) = &report.schema {
        if schema.is_empty() {
            println!("\nno schema changes");
        } else {
            println!("\nschema:\n{schema}");
        }
        for w in &schema.warnings {
            eprintln!("warning: {w}");
        }
    }
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

/// Runs `promote`: on a terminal, a remote source is only written after
/// the user saw what will be applied and said yes.
pub fn promote(engine: &mut Engine, args: PromoteArgs, json: bool) -> Result<()> {
    if args.replace {
        return crate::replace::promote_replace(engine, &args, json);
    }
    if args.request {
        return crate::approvals::request(engine, &args, json);
    }
    use std::io::{BufRead, IsTerminal, Write};
    let strategy = args.strategy.map(|s| match s {
        StrategyArg::Ours => Strategy::Ours,
        StrategyArg::Theirs => Strategy::Theirs,
    });
    let mut req = PromoteRequest {
        branch: args.branch.clone(),
        dry_run: args.dry_run,
        strategy,
        confirmed: args.yes,
        allow_partial: args.allow_partial,
        assertions: args
            .assert
            .iter()
            .map(|p| AssertionFile::read(p))
            .collect::<Result<_, _>>()?,
    };
    let source = engine.branch_info(&args.branch)?.source;
    let remote = engine.source_info(&source)?.mode != "local";
    if remote && !args.yes && !args.dry_run && std::io::stdin().is_terminal() && !json {
        let preview = engine.promote(&PromoteRequest {
            dry_run: true,
            ..req.clone()
        })?;
        print_promote(&preview);
        if !preview.conflicts.is_empty() && strategy.is_none() {
            anyhow::bail!(
                "{} conflicts: nothing applied; resolve them or pass --strategy ours|theirs",
                preview.conflicts.len()
            );
        }
        if preview.gates.iter().any(|g| !g.passed) {
            anyhow::bail!("a promotion gate failed (above): nothing applied");
        }
        print!(
            "Apply these {} statements to source {source}? [y/N] ",
            preview.statements.len()
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("not applied");
        }
        req.confirmed = true;
    }
    let report = engine.promote(&req)?;
    if json {
        output::json(&report);
    } else {
        print_promote(&report);
    }
    if !report.conflicts.is_empty() && report.strategy.is_none() {
        return Err(output::Reported(format!(
            "{} conflicts: nothing was applied; resolve them on the branch or the source, or pass --strategy ours|theirs",
            report.conflicts.len()
        ))
        .into());
    }
    let failed: Vec<&str> = report
        .gates
        .iter()
        .filter(|g| !g.passed)
        .map(|g| g.gate.as_str())
        .collect();
    if !failed.is_empty() {
        // Only a dry run gets here: a promote refuses with gate_failed.
        return Err(output::Reported(format!(
            "promotion gate{} {} failed: the promote would be refused",
            if failed.len() == 1 { "" } else { "s" },
            failed.join(", ")
        ))
        .into());
    }
    Ok(())
}

/// One promotion gate's outcome, for people.
fn print_gate(g: &GateResult) {
    let on = match g.on {
        pgfork_engine::gates::GateSide::Patch => "patch",
        pgfork_engine::gates::GateSide::Branch => "branch",
        pgfork_engine::gates::GateSide::Source => "source",
    };
    let verdict = if g.passed { "passed" } else { "FAILED" };
    let place = g.line.map(|l| format!(" (line {l})")).unwrap_or_default();
    println!("gate {}{place} on {on}: {verdict}: {}", g.gate, g.detail);
    if !g.passed {
        if let Some(sql) = &g.sql {
            println!("    {}", sql.replace('\n', "\n    "));
        }
        if !g.rows.is_empty() {
            println!("    {}", g.columns.join(" | "));
        }
        for row in &g.rows {
            let cells: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
            println!("    {}", cells.join(" | "));
        }
    }
}

fn print_promote(r: &PromoteReport) {
    for c in &r.conflicts {
        let key = c.key.as_deref().map(key_text).unwrap_or_default();
        println!("conflict {} {key}: {}", c.object, c.reason);
        if let (Some(b), Some(x), Some(s)) = (&c.base, &c.branch, &c.source) {
            println!("  base {b}\n  branch {x}\n  source {s}");
        }
    }
    for s in &r.before_transaction {
        let verb = if r.applied { "ran" } else { "would run" };
        println!("{verb} first, committed on its own (a new enum value the rest uses): {s}");
    }
    for g in &r.gates {
        print_gate(g);
    }
    let verb = if r.applied { "applied" } else { "would apply" };
    println!(
        "{verb} to {}: {} inserted, {} updated, {} deleted ({} statements)",
        r.source,
        r.inserted,
        r.updated,
        r.deleted,
        r.statements.len()
    );
    if !r.applied {
        for s in &r.statements {
            let shown: String = s.chars().take(200).collect();
            println!(
                "  {shown}{}",
                if s.len() > shown.len() { " ..." } else { "" }
            );
        }
    }
    if let Some(s) = &r.snapshot {
        println!("new snapshot of {}: {s}", r.source);
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
}
