//! `pgfork serve` and `pgfork mcp`: flags to options, then the API crate.

use std::time::Duration;

use anyhow::{Context, Result};
use pgfork_api::{ReaperOptions, ServeOptions};
use pgfork_engine::names;
use pgfork_pool::Home;

use crate::cli::ServeArgs;

/// A duration flag within `limit`, where `0` means never.
fn optional_duration(flag: &str, text: &str, limit: names::Limit) -> Result<Option<Duration>> {
    if text.trim() == "0" {
        return Ok(None);
    }
    Ok(Some(names::parse_duration(
        &format!("--{flag}"),
        text,
        limit,
    )?))
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn serve(home: Home, args: ServeArgs) -> Result<()> {
    let listen = args.listen.parse().with_context(|| {
        format!(
            "--listen '{}' is not ADDR:PORT (e.g. 127.0.0.1:7432)",
            args.listen
        )
    })?;
    let every = optional_duration("reap-every", &args.reap_every, names::REAP_EVERY)?
        .context("--reap-every must be longer than zero")?;
    let opts = ServeOptions {
        listen,
        allow_remote: args.allow_remote,
        reaper: ReaperOptions {
            every,
            idle_stop: optional_duration("idle-stop", &args.idle_stop, names::IDLE)?,
            idle_delete: optional_duration("idle-delete", &args.idle_delete, names::IDLE)?,
        },
        notify_url: args
            .notify_url
            .as_deref()
            .map(pgfork_api::notify::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
    };
    if args.max_branches_per_source.is_some() || args.min_free.is_some() {
        let min_free = args
            .min_free
            .as_deref()
            .map(crate::commands::parse_size)
            .transpose()?;
        pgfork_engine::set_branch_limits(&home, args.max_branches_per_source, min_free)?;
    }
    if args.proxy_listen != "off" {
        crate::agents::spawn_proxy(
            home.clone(),
            &args.proxy_listen,
            &args.proxy_transaction_limit,
        )?;
    }
    pgfork_api::serve(home, opts)?;
    Ok(())
}

/// Runs the MCP server on stdio: as the home's owner, or with `--agent
/// NAME` as that agent, proven by its token in `PGFORK_TOKEN`.
pub fn mcp(home: Home, agent: Option<String>) -> Result<()> {
    let actor = match agent {
        None => pgfork_engine::Actor::owner(),
        Some(name) => {
            let token = std::env::var("PGFORK_TOKEN").map_err(|_| {
                anyhow::anyhow!(
                    "--agent {name} needs the agent's API token in PGFORK_TOKEN (printed by `pgfork agent create` \
                     and `pgfork agent rotate`)"
                )
            })?;
            match pgfork_engine::resolve_token(&home, token.trim())? {
                Some(actor) if actor.agent() == Some(name.as_str()) => actor,
                _ => anyhow::bail!(
                    "PGFORK_TOKEN is not a valid token of agent '{name}' (unknown, rotated or revoked): \
                     `pgfork agent rotate {name}` makes a new one"
                ),
            }
        }
    };
    pgfork_api::mcp_stdio(home, actor)?;
    Ok(())
}
