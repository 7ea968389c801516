//! `pgfork promote BRANCH --replace` output and confirmation.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use pgfork_engine::{Engine, ReplaceReport, ReplaceRequest};

use crate::cli::PromoteArgs;
use crate::output;

/// Runs `promote --replace`: on a terminal, the source's data is only
/// replaced after the user saw the steps and said yes; elsewhere `--yes`
/// says it.
pub fn promote_replace(engine: &mut Engine, args: &PromoteArgs, json: bool) -> Result<()> {
    let mut req = ReplaceRequest {
        branch: args.branch.clone(),
        dry_run: args.dry_run,
        confirmed: args.yes,
    };
    if !args.yes && !args.dry_run && !json && std::io::stdin().is_terminal() {
        let preview = engine.promote_replace(&ReplaceRequest {
            dry_run: true,
            ..req.clone()
        })?;
        print_replace(&preview);
        print!(
            "Replace all data of source {} with branch {}'s? [y/N] ",
            preview.source, preview.branch
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("nothing was replaced");
        }
        req.confirmed = true;
    }
    let report = engine.promote_replace(&req)?;
    if json {
        output::json(&report);
    } else {
        print_replace(&report);
    }
    Ok(())
}

fn print_replace(r: &ReplaceReport) {
    if !r.replaced {
        println!(
            "would replace all data of source {} with branch {}'s:",
            r.source, r.branch
        );
        for (i, step) in r.steps.iter().enumerate() {
            println!("  {}. {step}", i + 1);
        }
        return;
    }
    let old = r.old_data_snapshot.as_deref().unwrap_or("-");
    println!(
        "source {} now holds branch {}'s data{}; its old data is snapshot {old} until you delete it \
         (pgfork snapshot delete {old}){}",
        r.source,
        r.branch,
        r.source_downtime_ms
            .map(|ms| format!(" (it did not serve for {:.1}s)", ms as f64 / 1000.0))
            .unwrap_or_default(),
        r.new_snapshot
            .as_deref()
            .map(|s| format!("; new snapshot: {s}"))
            .unwrap_or_default()
    );
    for l in &r.logins_removed {
        println!("  login removed: {l}");
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
}
