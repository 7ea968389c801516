//! `pgfork agent`, `pgfork audit` and `pgfork proxy`: flags to the engine's
//! agents and audit log, and the policy proxy.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pgfork_engine::agents::{AgentCreate, AgentInfo, AgentSecret, Policy};
use pgfork_engine::audit::AuditQuery;
use pgfork_engine::{Engine, names};
use pgfork_pool::Home;

use crate::cli::{AgentCommand, AgentCreateArgs, AuditArgs, PolicyArg, ProxyArgs};
use crate::output;

/// A duration flag within `limit`, where `0` means none.
fn duration(flag: &str, text: &str, limit: names::Limit) -> Result<Option<Duration>> {
    if text.trim() == "0" {
        return Ok(None);
    }
    Ok(Some(names::parse_duration(
        &format!("--{flag}"),
        text,
        limit,
    )?))
}

fn open(home: Home) -> Result<Engine> {
    Ok(Engine::open(home, Arc::new(pgfork_engine::Quiet))?)
}

/// `pgfork agent ...`.
pub fn agent(home: Home, cmd: AgentCommand, json: bool) -> Result<()> {
    let mut engine = open(home)?;
    match cmd {
        AgentCommand::Create(args) => {
            let req = create_request(*args)?;
            let created = engine.agent_create(&req)?;
            print_secret(&created, json);
        }
        AgentCommand::List => {
            let list = engine.agent_list()?;
            if json {
                output::json(&list);
            } else {
                output::table(
                    &[
                        "name",
                        "source",
                        "policy",
                        "status",
                        "branch",
                        "max conns",
                        "created",
                    ],
                    list.iter()
                        .map(|a| {
                            vec![
                                a.name.clone(),
                                a.source.clone(),
                                a.policy.clone(),
                                a.status.to_string(),
                                a.branch.clone().unwrap_or_else(|| "-".into()),
                                a.max_connections.to_string(),
                                output::relative(&a.created_at),
                            ]
                        })
                        .collect(),
                );
            }
        }
        AgentCommand::Info { name } => print_info(&engine.agent_info(&name)?, json),
        AgentCommand::Rotate { name } => print_secret(&engine.agent_rotate(&name)?, json),
        AgentCommand::Revoke { name } => {
            let info = engine.agent_revoke(&name)?;
            if json {
                output::json(&info);
            } else {
                eprintln!(
                    "agent {name} revoked: a running proxy ends its sessions within a second"
                );
            }
        }
    }
    Ok(())
}

fn create_request(a: AgentCreateArgs) -> Result<AgentCreate> {
    let policy = match a.policy {
        PolicyArg::ReadOnly => Policy::ReadOnly,
        PolicyArg::DryRun => Policy::DryRun,
        PolicyArg::Branch => Policy::Branch,
    };
    let ttl = a
        .ttl
        .as_deref()
        .map(pgfork_engine::names::parse_ttl)
        .transpose()?;
    let statement_timeout = match a.statement_timeout.as_deref() {
        Some(t) => duration("statement-timeout", t, names::STATEMENT_TIMEOUT)?,
        None => None,
    };
    let max_storage = a
        .max_storage
        .as_deref()
        .map(crate::commands::parse_size)
        .transpose()?;
    // Scale to zero only concerns branches.
    let idle_stop = if policy == Policy::Branch {
        duration("idle-stop", &a.idle_stop, names::IDLE)?
    } else {
        None
    };
    Ok(AgentCreate {
        name: a.name,
        source: a.source,
        policy,
        branch: a.branch,
        ttl,
        max_rows: a.max_rows,
        statement_timeout,
        max_storage,
        idle_stop,
        per_session: a.per_session,
        keep: a.keep,
        fresh: a.fresh,
        audit_params: a.audit_params,
        max_connections: a.max_connections,
        max_branches: a.max_branches,
        max_ttl: Some(pgfork_engine::names::parse_ttl(&a.max_ttl)?),
        parent: a.parent,
    })
}

fn print_secret(s: &AgentSecret, json: bool) {
    if json {
        output::json(s);
    } else {
        println!("{}", s.dsn);
        println!("PGFORK_TOKEN={}", s.api_token);
        eprintln!(
            "agent {} ({} on {}): its proxy DSN and API token are shown only now; `pgfork agent rotate {}` \
             makes new ones",
            s.agent.name, s.agent.policy, s.agent.source, s.agent.name
        );
    }
}

fn print_info(a: &AgentInfo, json: bool) {
    if json {
        output::json(a);
        return;
    }
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    output::fields(&[
        ("name", a.name.clone()),
        ("source", a.source.clone()),
        ("policy", a.policy.clone()),
        ("status", a.status.to_string()),
        ("branch", a.branch.clone().unwrap_or_else(|| "-".into())),
        ("max connections", a.max_connections.to_string()),
        ("max rows", opt(a.max_rows)),
        ("statement timeout ms", opt(a.statement_timeout_ms)),
        ("max storage bytes", opt(a.max_storage)),
        ("idle stop s", opt(a.idle_stop_secs)),
        ("created", a.created_at.clone()),
    ]);
}

/// `pgfork audit`.
pub fn audit(home: Home, args: AuditArgs, json: bool) -> Result<()> {
    let engine = open(home)?;
    if args.verify {
        let report = engine.audit_verify()?;
        if json && report.ok {
            output::json(&report);
        } else if report.ok {
            println!(
                "audit log intact: {} records, every link checked",
                report.records
            );
        }
        if !report.ok {
            bail!(
                "audit log broken at record {}: {}",
                report
                    .broken_at
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "?".into()),
                report.problem.unwrap_or_default()
            );
        }
        return Ok(());
    }
    let since_ms = match args.since.as_deref() {
        Some(s) => {
            let d = humantime::parse_duration(s)
                .with_context(|| format!("--since '{s}' is not a duration like 1h"))?;
            Some(names::since_ms(pgfork_pool::meta::now() * 1000, d))
        }
        None => None,
    };
    let rows = engine.audit_query(&AuditQuery {
        agent: args.agent,
        since_ms,
        limit: Some(args.limit),
        ..AuditQuery::default()
    })?;
    if json {
        output::json(&rows);
        return Ok(());
    }
    output::table(
        &[
            "id",
            "time",
            "agent",
            "target",
            "ms",
            "tag",
            "rows",
            "tx",
            "error",
            "statement",
        ],
        rows.iter()
            .map(|r| {
                let secs = r.at_ms / 1000;
                let mut stmt = r.statement.replace('\n', " ");
                if stmt.chars().count() > 80 {
                    stmt = stmt.chars().take(77).collect::<String>() + "...";
                }
                vec![
                    r.id.to_string(),
                    pgfork_engine::view::timestamp(secs),
                    r.agent.clone(),
                    r.target.clone(),
                    format!("{:.1}", r.duration_us as f64 / 1000.0),
                    r.tag.clone().unwrap_or_default(),
                    r.rows.map(|n| n.to_string()).unwrap_or_default(),
                    r.tx_status.clone().unwrap_or_default(),
                    r.sqlstate
                        .clone()
                        .filter(|s| s != "00000")
                        .unwrap_or_default(),
                    stmt,
                ]
            })
            .collect(),
    );
    Ok(())
}

fn options(
    listen: &str,
    max_connections: usize,
    max_message: &str,
    transaction_limit: Option<(&str, &str)>,
) -> Result<pgfork_proxy::ProxyOptions> {
    let defaults = pgfork_proxy::ProxyOptions::default();
    let transaction_limit = match transaction_limit {
        Some((flag, text)) => names::parse_duration(flag, text, names::STATEMENT_TIMEOUT)?,
        None => defaults.transaction_limit,
    };
    Ok(pgfork_proxy::ProxyOptions {
        listen: listen
            .parse()
            .with_context(|| format!("'{listen}' is not ADDR:PORT (e.g. 127.0.0.1:6432)"))?,
        max_connections,
        max_message: crate::commands::parse_size(max_message)? as usize,
        transaction_limit,
        ..defaults
    })
}

/// `pgfork proxy`: the proxy alone, until SIGINT or SIGTERM.
pub fn proxy(home: Home, args: ProxyArgs) -> Result<()> {
    drop(open(home.clone())?);
    let opts = options(
        &args.listen,
        args.max_connections,
        &args.max_message_size,
        Some(("--transaction-limit", &args.transaction_limit)),
    )?;
    pgfork_engine::agents::set_proxy_addr(&home, &args.listen)?;
    // One thread: a proxy's work is short and I/O bound, and on a small
    // machine waking tasks across threads costs more than it gains.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        pgfork_proxy::run(home, opts, shutdown_signal(), |addr| {
            eprintln!("pgfork proxy: listening on {addr}");
        })
        .await
    })?;
    Ok(())
}

/// Starts the proxy on its own runtime thread, for `pgfork serve`.
///
/// The daemon's first line on stderr stays the API's (programs wait for
/// it), so the proxy says nothing when it starts, and if its address is
/// taken (another daemon has it) it says so a moment later and the API
/// runs without it.
pub fn spawn_proxy(home: Home, listen: &str, transaction_limit: &str) -> Result<()> {
    let opts = options(
        listen,
        2000,
        "64M",
        Some(("--proxy-transaction-limit", transaction_limit)),
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .thread_name("pgfork-proxy")
        .enable_all()
        .build()?;
    let addr = listen.to_string();
    std::thread::Builder::new()
        .name("pgfork-proxy".into())
        .spawn(move || {
            rt.block_on(async move {
                let at = addr.clone();
                let h = home.clone();
                let run = pgfork_proxy::run(home, opts, std::future::pending::<()>(), move |_| {
                    if let Err(e) = pgfork_engine::agents::set_proxy_addr(&h, &at) {
                        tracing::warn!("proxy: recording its address: {e}");
                    }
                    tracing::info!("policy proxy on postgres://{at}");
                });
                if let Err(e) = run.await {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    eprintln!(
                        "pgfork serve: the policy proxy is not running: {e} (choose another address with --proxy-listen, or off)"
                    );
                }
            })
        })?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
