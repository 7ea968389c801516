//! `pgfork promote --request` and `pgfork approvals`: promotion requests
//! and their decisions, audited like the API's and MCP's actions.

use std::time::Instant;

use anyhow::{Context, Result};
use pgfork_engine::audit::{Action, record_action};
use pgfork_engine::{Actor, Engine, PromotionRow};

use crate::cli::{ApprovalsCommand, PromoteArgs};
use crate::output;

/// Records a decision or request made on the command line in the audit log.
fn audit(
    engine: &Engine,
    action: &str,
    target: &str,
    began: Instant,
    error: Option<&anyhow::Error>,
) {
    let admin = Actor::Admin(pgfork_engine::identity::FIRST_ADMIN.into());
    let message = error.map(|e| format!("{e:#}"));
    let _ = record_action(
        engine.home(),
        &Action {
            actor: &admin,
            interface: "cli",
            client: "terminal",
            action,
            target,
            result: if error.is_some() { "error" } else { "ok" },
            error: message.as_deref().map(|m| ("error", m)),
            duration: began.elapsed(),
        },
    );
}

/// Runs one request or decision and records it in the audit log.
fn audited<T>(
    engine: &mut Engine,
    action: &str,
    target: &str,
    run: impl FnOnce(&mut Engine) -> pgfork_engine::Result<T>,
) -> Result<T> {
    let began = Instant::now();
    let result = run(engine).map_err(anyhow::Error::from);
    audit(engine, action, target, began, result.as_ref().err());
    result
}

/// `promote BRANCH --request [--note TEXT]`.
pub fn request(engine: &mut Engine, args: &PromoteArgs, json: bool) -> Result<()> {
    let migration = match &args.rehearse {
        Some(path) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path)
                .with_context(|| format!("read {} (the migration to rehearse)", path.display()))?,
        )),
        None => None,
    };
    let row = audited(engine, "promote --request", &args.branch, |e| {
        e.promotion_request(
            &args.branch,
            args.note.as_deref(),
            migration.as_ref().map(|(f, s)| (f.as_str(), s.as_str())),
        )
    })?;
    if json {
        output::json(&row);
    } else {
        println!(
            "promotion request {} of branch {} is open: an admin approves it with `pgfork approvals approve {}`",
            row.id, row.branch, row.id
        );
    }
    Ok(())
}

/// `approvals list | show | approve | reject`.
pub fn approvals(engine: &mut Engine, cmd: ApprovalsCommand, json: bool) -> Result<()> {
    match cmd {
        ApprovalsCommand::List { status } => {
            let rows = engine.promotion_list(status.as_deref())?;
            if json {
                output::json(&rows);
            } else {
                output::table(
                    &[
                        "id", "branch", "source", "status", "asked by", "asked", "rows", "note",
                    ],
                    rows.iter()
                        .map(|r| {
                            vec![
                                r.id.to_string(),
                                r.branch.clone(),
                                r.source.clone(),
                                r.status.clone(),
                                r.requested_by.clone(),
                                output::relative(&rfc3339(r.created_at)),
                                r.summary["rows_changed"].to_string(),
                                r.note.clone().unwrap_or_default(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        ApprovalsCommand::Show { id } => show(&engine.promotion_get(id)?, json)?,
        ApprovalsCommand::Approve { id } => {
            let (row, report) = audited(engine, "approvals approve", &id.to_string(), |e| {
                e.promotion_approve(id)
            })?;
            if json {
                output::json(&row);
            } else {
                println!(
                    "request {id} approved: branch {} promoted to {} ({} schema changes, {} rows inserted, {} updated, {} deleted)",
                    row.branch,
                    row.source,
                    report.schema_changes,
                    report.inserted,
                    report.updated,
                    report.deleted
                );
            }
        }
        ApprovalsCommand::Reject { id, reason } => {
            let row = audited(engine, "approvals reject", &id.to_string(), |e| {
                e.promotion_reject(id, &reason)
            })?;
            if json {
                output::json(&row);
            } else {
                println!("request {id} of branch {} rejected", row.branch);
            }
        }
    }
    Ok(())
}

fn show(r: &PromotionRow, json: bool) -> Result<()> {
    if json {
        output::json(r);
        return Ok(());
    }
    output::fields(&[
        ("request", r.id.to_string()),
        ("branch", r.branch.clone()),
        ("source", r.source.clone()),
        ("status", r.status.clone()),
        ("asked by", r.requested_by.clone()),
        ("asked", rfc3339(r.created_at)),
        ("note", r.note.clone().unwrap_or_default()),
        ("decided by", r.decided_by.clone().unwrap_or_default()),
        ("reason", r.reason.clone().unwrap_or_default()),
    ]);
    if let Some(r) = r.summary.get("rehearsal").filter(|v| !v.is_null()) {
        println!(
            "rehearsal of {}: {} ({} statements)",
            r["file"].as_str().unwrap_or(""),
            r["verdict"].as_str().unwrap_or(""),
            r["statements"].as_array().map_or(0, Vec::len)
        );
        for reason in r["reasons"].as_array().into_iter().flatten() {
            println!("  {}", reason.as_str().unwrap_or(""));
        }
    }
    println!("what the branch changed when asked:");
    for c in r.summary["schema_changes"].as_array().into_iter().flatten() {
        println!(
            "  {} {}",
            c["kind"].as_str().unwrap_or(""),
            c["object"].as_str().unwrap_or("")
        );
    }
    for t in r.summary["tables"].as_array().into_iter().flatten() {
        println!(
            "  {}: {} inserted, {} updated, {} deleted",
            t["table"].as_str().unwrap_or(""),
            t["inserted"],
            t["updated"],
            t["deleted"]
        );
    }
    Ok(())
}

fn rfc3339(secs: i64) -> String {
    pgfork_engine::view::timestamp(secs)
}
