//! `pgfork rehearse`: the report, for people or programs, and its exit code.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result};
use pgfork_engine::rehearse::{Outcome, RehearsalReport, outranked};
use pgfork_engine::{Engine, RehearseRequest, Severity};

use crate::cli::{RehearseArgs, RehearseFormat, SeverityArg};
use crate::output;

/// Runs the rehearsal; the exit code is the verdict's (0, 1 or 2).
pub fn run(engine: &mut Engine, args: RehearseArgs, json: bool) -> Result<ExitCode> {
    let (file, sql) = if args.file.as_os_str() == "-" {
        let mut sql = String::new();
        std::io::stdin()
            .read_to_string(&mut sql)
            .context("read the migration from stdin")?;
        ("stdin".to_string(), sql)
    } else {
        let sql = std::fs::read_to_string(&args.file).with_context(|| {
            format!(
                "read {} (give the migration as a UTF-8 SQL file)",
                args.file.display()
            )
        })?;
        (args.file.display().to_string(), sql)
    };
    let report = engine.rehearse(&RehearseRequest {
        from: args.from,
        file,
        sql,
        fresh: args.fresh,
        keep: args.keep,
        fail_on: match args.fail_on {
            SeverityArg::Warning => Severity::Warning,
            SeverityArg::Error => Severity::Error,
        },
        max_lock_ms: args.max_lock_ms,
    })?;
    if json || matches!(args.format, RehearseFormat::Json) {
        output::json(&report);
    } else {
        print_text(&report);
    }
    Ok(ExitCode::from(report.verdict.exit_code()))
}

fn print_text(r: &RehearsalReport) {
    println!("rehearsal of {} on a branch of {}", r.file, r.from);
    for s in &r.statements {
        let head = format!("{:>3}  line {:<4}", s.index, s.at.line);
        let first_line = s.sql.lines().next().unwrap_or("");
        match s.outcome {
            Outcome::NotRun => {
                println!("{head} not run      {first_line}");
                continue;
            }
            Outcome::Failed => {
                println!("{head} FAILED {:>7.1} ms  {first_line}", s.ms);
                if let Some(e) = &s.error {
                    let at =
                        e.at.map(|p| format!(" (line {}, column {})", p.line, p.column))
                            .unwrap_or_default();
                    println!("       {} [{}]{at}", e.message, e.sqlstate);
                    if let Some(h) = &e.hint {
                        println!("       hint: {h}");
                    }
                }
                continue;
            }
            Outcome::Applied => {}
        }
        // The server counts 0 rows for DDL too: only a count says something.
        let rows = s
            .rows
            .filter(|n| *n > 0)
            .map(|n| format!("  {n} rows"))
            .unwrap_or_default();
        println!("{head} applied {:>6.1} ms{rows}  {first_line}", s.ms);
        if !s.in_transaction {
            println!("       ran alone (not in a transaction): its locks were not observed");
        }
        for l in s
            .locks
            .iter()
            .filter(|l| l.blocks.is_some() && l.existing && !outranked(l, &s.locks))
        {
            println!(
                "       {} on {} for {:.1} ms: blocks {}",
                l.mode,
                l.relation,
                l.held_ms.unwrap_or(0.0),
                l.blocks.unwrap_or("")
            );
        }
        for w in &s.rewrites {
            println!(
                "       rewrote {} {} ({} bytes)",
                w.kind, w.relation, w.bytes
            );
        }
    }
    if !r.lints.is_empty() {
        println!("lints (squawk):");
        for f in &r.lints {
            let sev = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            println!("  line {:<4} {sev:<7} {}: {}", f.at.line, f.rule, f.message);
        }
    }
    if let Some(schema) = &r.schema {
        println!("schema changes: {}", schema.changes.len());
        for c in &schema.changes {
            println!("  {:?} {}", c.kind, c.id);
        }
    }
    if r.kept {
        println!(
            "branch {} kept: {}",
            r.branch,
            r.dsn.as_deref().unwrap_or("")
        );
    }
    let verdict = match r.verdict.exit_code() {
        0 => "applies",
        1 => "fails",
        _ => "applies, but blocked by its findings",
    };
    println!("verdict: {verdict} ({} ms)", r.elapsed_ms);
    for reason in &r.reasons {
        println!("  {reason}");
    }
}
