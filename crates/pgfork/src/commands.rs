//! Dispatch of each command to the engine, and its output.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use pgfork_engine::storage::BranchSpace;
use pgfork_engine::{
    BranchCreate, ComputeRequest, DumpFormat, Engine, InitOptions, Mode, SourceAdd, compute, names,
};
use pgfork_pool::{Driver, FsKind, Home, space};

use crate::cli::{
    BranchCommand, Cli, Command, DriverArg, DumpFormatArg, FsArg, ModeArg, SnapshotCommand,
    SourceCommand, TokenCommand,
};
use crate::output;
use crate::progress::Spinner;

/// Runs one command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let home = Home::resolve(cli.home.as_deref());
    let json = cli.json;
    let spinner = Arc::new(Spinner::new(json));
    let result = match cli.command {
        Command::Init(args) => init(&home, args, json),
        Command::Doctor => doctor(&home, json),
        Command::Token(c) => token(&home, c, json),
        Command::Serve(args) => crate::serve::serve(home, args),
        Command::Mcp(args) => crate::serve::mcp(home, args.agent),
        Command::Agent(c) => crate::agents::agent(home, c, json),
        Command::Audit(args) => crate::agents::audit(home, args, json),
        Command::Proxy(args) => crate::agents::proxy(home, args),
        command => {
            let mut engine = Engine::open(home, spinner.clone())?;
            match command {
                Command::Gc => gc(&mut engine, json),
                Command::Tick => tick(&mut engine, json),
                Command::Diff(args) => crate::diff::diff(&mut engine, args, json),
                Command::Promote(args) => crate::diff::promote(&mut engine, args, json),
                Command::Approvals(c) => crate::approvals::approvals(&mut engine, c, json),
                Command::Rehearse(args) => {
                    let code = crate::rehearse::run(&mut engine, args, json);
                    spinner.finish();
                    return code;
                }
                Command::Source(c) => source(&mut engine, c, json),
                Command::Snapshot(c) => snapshot(&mut engine, c, json),
                Command::Branch(c) => branch(&mut engine, c, json),
                Command::Bench(cmd) => match cmd.what {
                    None => crate::bench::run(engine, cmd.branches, json),
                    Some(crate::cli::BenchWhat::Branches(args)) => {
                        crate::bench::run(engine, args, json)
                    }
                    Some(crate::cli::BenchWhat::Diff(args)) => {
                        crate::bench::diff_cost::run(engine, args, json)
                    }
                    Some(crate::cli::BenchWhat::Api(args)) => {
                        crate::bench::api::run(engine, args, json)
                    }
                    Some(crate::cli::BenchWhat::Sources(args)) => {
                        crate::bench::sources::run(engine, args, json)
                    }
                    Some(crate::cli::BenchWhat::Neighbours(args)) => {
                        crate::bench::neighbours::run(engine, args, json)
                    }
                    Some(crate::cli::BenchWhat::Rehearse(args)) => {
                        crate::bench::rehearse::run(engine, args, json)
                    }
                    Some(crate::cli::BenchWhat::Dashboard(args)) => {
                        crate::bench::dashboard::run(engine, args, json)
                    }
                },
                Command::Init(_)
                | Command::Doctor
                | Command::Token(_)
                | Command::Serve(_)
                | Command::Mcp(_)
                | Command::Agent(_)
                | Command::Audit(_)
                | Command::Proxy(_) => unreachable!("handled above"),
            }
        }
    };
    spinner.finish();
    result.map(|()| ExitCode::SUCCESS)
}

fn init(home: &Home, args: crate::cli::InitArgs, json: bool) -> Result<()> {
    let pool_image = match &args.pool_image {
        Some(size) => {
            let bytes = space::parse_size(size)
                .with_context(|| format!("--pool-image '{size}' is not a size like 20G or 512M"))?;
            let fs = match args.fs {
                FsArg::Xfs => FsKind::Xfs,
                FsArg::Btrfs => FsKind::Btrfs,
            };
            Some((bytes, fs))
        }
        None => None,
    };
    let opts = InitOptions {
        driver: args.driver.map(|d| match d {
            DriverArg::Btrfs => Driver::Btrfs,
            DriverArg::Reflink => Driver::Reflink,
            DriverArg::Copy => Driver::Copy,
        }),
        pool_image,
        pg_bin: args.pg_bin,
        os_user: args.os_user,
        ports: args
            .ports
            .as_deref()
            .map(pgfork_engine::config::parse_ports)
            .transpose()?,
        max_branches_per_source: args.max_branches_per_source,
        min_free: args.min_free.as_deref().map(parse_size).transpose()?,
        branch_uids: args
            .branch_uids
            .as_deref()
            .map(pgfork_os::UidRange::parse)
            .transpose()
            .map_err(pgfork_engine::EngineError::InvalidArgument)?,
        branch_space: args
            .branch_space
            .as_deref()
            .map(BranchSpace::parse)
            .transpose()?,
    };
    let report = pgfork_engine::init(home, opts)?;
    if json {
        output::json(&report);
        return Ok(());
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    output::fields(&[
        ("home", report.home.display().to_string()),
        ("pool", report.pool.display().to_string()),
        (
            "image",
            report
                .image
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("filesystem", report.filesystem.to_string()),
        (
            "driver",
            format!(
                "{}{}",
                report.driver,
                if report.copy_on_write {
                    " (copy-on-write)"
                } else {
                    " (NOT copy-on-write)"
                }
            ),
        ),
        (
            "postgres",
            format!("{} in {}", report.postgres, report.pg_bin.display()),
        ),
        ("os user", report.os_user.clone()),
        (
            "branch uids",
            report
                .branch_uids
                .map(|r| r.to_string())
                .unwrap_or_else(|| "none (not root: no isolation between servers)".into()),
        ),
        ("ports", format!("{}-{}", report.ports.0, report.ports.1)),
        (
            "quota",
            report
                .max_branches_per_source
                .map(|n| format!("{n} branches per source"))
                .unwrap_or_else(|| "none".into()),
        ),
        (
            "min free",
            report
                .min_free
                .map(space::human_bytes)
                .unwrap_or_else(|| "none".into()),
        ),
    ]);
    if let Some(token) = &report.api_token {
        output::fields(&[("api token", token.clone())]);
        eprintln!(
            "The API token is shown only now (meta.db keeps its hash); `pgfork token rotate` makes a new one."
        );
    }
    eprintln!(
        "{} Next: pgfork source create NAME",
        if report.created {
            "Home created."
        } else {
            "Home updated."
        }
    );
    Ok(())
}

/// Parses a size like 2G for --min-free.
pub fn parse_size(text: &str) -> Result<u64> {
    space::parse_size(text).with_context(|| format!("'{text}' is not a size like 2G or 512M"))
}

fn token(home: &Home, cmd: TokenCommand, json: bool) -> Result<()> {
    let shown = |name: &str, token: String, note: &str| {
        if json {
            output::json(&serde_json::json!({ "name": name, "api_token": token }));
        } else {
            println!("{token}");
            eprintln!("{note}");
        }
    };
    match cmd {
        TokenCommand::Rotate { name } => {
            let token = pgfork_engine::rotate_admin_token(home, &name)?;
            shown(
                &name,
                token,
                "The old token no longer works; this one is shown only now.",
            );
        }
        TokenCommand::Create { name, admin: _ } => {
            let token = pgfork_engine::admin_token_create(home, &name)?;
            shown(
                &name,
                token,
                "Admin token made; it is shown only now (`pgfork token revoke NAME` ends it).",
            );
        }
        TokenCommand::List => {
            let tokens = pgfork_engine::admin_token_list(home)?;
            if json {
                output::json(&tokens);
            } else {
                for t in &tokens {
                    println!(
                        "{}\tadmin\t{}",
                        t.name,
                        pgfork_engine::view::timestamp(t.created_at)
                    );
                }
            }
        }
        TokenCommand::Revoke { name } => {
            pgfork_engine::admin_token_revoke(home, &name)?;
            if json {
                output::json(&serde_json::json!({ "revoked": name }));
            } else {
                eprintln!("admin token '{name}' revoked");
            }
        }
    }
    Ok(())
}

fn doctor(home: &Home, json: bool) -> Result<()> {
    let report = pgfork_engine::doctor(home);
    if json {
        output::json(&report);
    } else {
        output::table(
            &["check", "status", "detail"],
            report
                .checks
                .iter()
                .map(|c| vec![c.name.to_string(), c.status.to_string(), c.detail.clone()])
                .collect(),
        );
    }
    if report.failed() {
        // With --json the report is the one document printed.
        return Err(output::Reported("doctor found problems (status fail above)".into()).into());
    }
    Ok(())
}

fn gc(engine: &mut Engine, json: bool) -> Result<()> {
    let report = engine.gc()?;
    if json {
        output::json(&report);
        return Ok(());
    }
    for d in &report.deleted {
        println!("deleted {d}");
    }
    for (name, why) in &report.kept {
        println!("kept {name}: {why}");
    }
    if report.deleted.is_empty() && report.kept.is_empty() {
        println!("nothing has expired");
    }
    Ok(())
}

fn tick(engine: &mut Engine, json: bool) -> Result<()> {
    let report = engine.tick()?;
    if json {
        output::json(&report);
    } else {
        for s in &report.refreshed {
            println!("refreshed {s}");
        }
        for s in &report.snapshots {
            println!("snapshot {s}");
        }
        for s in &report.pruned {
            println!("pruned {s}");
        }
        for (what, why) in &report.errors {
            eprintln!("error: {what}: {why}");
        }
    }
    if !report.errors.is_empty() {
        bail!("{} scheduled task(s) failed", report.errors.len());
    }
    Ok(())
}

fn deleted(list: Vec<String>, json: bool) {
    if json {
        output::json(&serde_json::json!({ "deleted": list }));
    } else {
        for d in list {
            println!("deleted {d}");
        }
    }
}

fn source(engine: &mut Engine, cmd: SourceCommand, json: bool) -> Result<()> {
    match cmd {
        SourceCommand::Create { name } => {
            let info = engine.source_create(&name)?;
            if json {
                output::json(&info);
            } else {
                output::source(&info);
                eprintln!("Load data with: psql \"$(pgfork source dsn {name})\" -f schema.sql");
            }
        }
        SourceCommand::Add(args) => {
            let req = SourceAdd {
                name: args.name,
                url: args.from,
                mode: match args.mode {
                    ModeArg::Physical => Mode::Physical,
                    ModeArg::Logical => Mode::Logical,
                },
                refresh_every: args
                    .refresh_every
                    .as_deref()
                    .map(|t| names::parse_duration("--refresh-every", t, names::INTERVAL))
                    .transpose()?,
                role: args.role,
                save_password: args.save_password,
            };
            let info = engine.source_add(&req)?;
            if json {
                output::json(&info)
            } else {
                output::source(&info)
            }
        }
        SourceCommand::Refresh { name } => {
            let info = engine.source_refresh(&name)?;
            if json {
                output::json(&info)
            } else {
                output::source(&info)
            }
        }
        SourceCommand::Mask(args) => {
            if args.clear {
                engine.source_unmask(&args.name, args.allow_unmasked)?;
                if json {
                    output::json(
                        &serde_json::json!({ "source": args.name, "masking": "none", "unmasked_allowed": args.allow_unmasked }),
                    );
                } else {
                    println!("masking rules of {} removed", args.name);
                }
            } else {
                let rules = args.rules.expect("clap requires --rules without --clear");
                let report = engine.source_mask(&args.name, &rules)?;
                if json {
                    output::json(&report);
                } else {
                    println!(
                        "{} columns of {} will be masked in every new snapshot",
                        report.masked_columns, report.source
                    );
                }
            }
        }
        SourceCommand::List => {
            let list = engine.source_list()?;
            if json {
                output::json(&list)
            } else {
                output::sources(&list)
            }
        }
        SourceCommand::Info { name } => {
            let info = engine.source_info(&name)?;
            if json {
                output::json(&info)
            } else {
                output::source(&info)
            }
        }
        SourceCommand::Dsn { name, superuser } => {
            let info = engine.source_info(&name)?;
            let dsn = if superuser {
                info.superuser_dsn()
            } else {
                info.dsn_with_password().unwrap_or_default()
            };
            if json {
                output::json(&serde_json::json!({ "name": name, "dsn": dsn }));
            } else {
                println!("{dsn}");
            }
        }
        SourceCommand::Start { name } => {
            let info = engine.source_start(&name)?;
            if json {
                output::json(&info)
            } else {
                println!("source {name} is {}", info.status)
            }
        }
        SourceCommand::Stop { name } => {
            let info = engine.source_stop(&name)?;
            if json {
                output::json(&info)
            } else {
                println!("source {name} is {}", info.status)
            }
        }
        SourceCommand::Delete { name, force } => deleted(engine.source_delete(&name, force)?, json),
        SourceCommand::Limits(args) => {
            let req = compute_request(
                "--branch-",
                args.branch_cpu.as_deref(),
                args.branch_memory.as_deref(),
                args.branch_pids.as_deref(),
            )?;
            let max_size = match args.branch_max_size.as_deref() {
                None => None,
                Some("none") => Some(None),
                Some(size) => Some(Some(parse_size(size)?)),
            };
            // A size the pool cannot enforce is refused before the compute
            // limits change.
            if let Some(size) = max_size {
                engine.check_storage_limit(size)?;
            }
            let limits = engine.source_limits(&args.name, &req)?;
            let mut storage = engine.source_storage_limits(&args.name)?;
            if let Some(size) = max_size {
                storage.branch_max_size = size;
                storage = engine.set_source_storage_limits(&args.name, storage)?;
            }
            if json {
                let mut out = serde_json::to_value(&limits)?;
                out["branch_max_size"] = serde_json::json!(storage.branch_max_size);
                output::json(&out)
            } else {
                output::source_limits(&limits);
                println!(
                    "branch max size: {}",
                    storage
                        .branch_max_size
                        .map(space::human_bytes)
                        .unwrap_or_else(|| "none".into())
                );
            }
        }
        SourceCommand::Gates(args) => {
            use pgfork_engine::gates::{AssertionFile, GatesChange, parse_bound};
            // Every file is read and every value checked before anything
            // is stored.
            let change = GatesChange {
                clear: args.clear,
                files: if args.assert.is_empty() {
                    None
                } else {
                    Some(
                        args.assert
                            .iter()
                            .map(|p| AssertionFile::read(p))
                            .collect::<Result<_, _>>()?,
                    )
                },
                max_rows: args
                    .max_rows
                    .as_deref()
                    .map(|t| parse_bound("--max-rows", t))
                    .transpose()?,
                max_tables: args
                    .max_tables
                    .as_deref()
                    .map(|t| parse_bound("--max-tables", t))
                    .transpose()?,
            };
            let gates = if change.is_empty() {
                engine.source_gates(&args.name)?
            } else {
                engine.set_source_gates(&args.name, &change)?
            };
            if json {
                output::json(&gates)
            } else {
                output::source_gates(&gates);
            }
        }
    }
    Ok(())
}

fn snapshot(engine: &mut Engine, cmd: SnapshotCommand, json: bool) -> Result<()> {
    match cmd {
        SnapshotCommand::Create { of, unmasked } => {
            let info = engine.snapshot_create_opts(&of, unmasked)?;
            if json {
                output::json(&info);
            } else {
                println!("{}", info.id);
            }
        }
        SnapshotCommand::List { source } => {
            let list = engine.snapshot_list(source.as_deref())?;
            if json {
                output::json(&list)
            } else {
                output::snapshots(&list)
            }
        }
        SnapshotCommand::Info { id } => {
            let info = engine.snapshot_info(&id)?;
            if json {
                output::json(&info)
            } else {
                output::snapshot(&info)
            }
        }
        SnapshotCommand::Delete { id, force } => deleted(engine.snapshot_delete(&id, force)?, json),
        SnapshotCommand::Schedule {
            source,
            every,
            keep,
            off,
        } => {
            let every = if off {
                None
            } else {
                every
                    .as_deref()
                    .map(|t| names::parse_duration("--every", t, names::INTERVAL))
                    .transpose()?
            };
            let policy = engine.snapshot_schedule(&source, every, keep)?;
            if json {
                output::json(&policy);
            } else if let Some(secs) = policy.snapshot_every {
                println!(
                    "{source}: a snapshot every {}, keeping {keep} (run by `pgfork tick` or `pgfork serve`)",
                    humantime::format_duration(std::time::Duration::from_secs(secs as u64))
                );
            } else {
                println!("{source}: no scheduled snapshots");
            }
        }
    }
    Ok(())
}

fn branch(engine: &mut Engine, cmd: BranchCommand, json: bool) -> Result<()> {
    match cmd {
        BranchCommand::Create(args) => {
            let req = BranchCreate {
                name: args.name,
                from: args.from,
                ttl: args.ttl.as_deref().map(names::parse_ttl).transpose()?,
                labels: names::parse_labels(&args.label)?,
                protect: args.protect,
                durable: args.durable,
                fresh: args.fresh,
                schema_only: args.schema_only,
                unmasked: args.unmasked,
                proxy_only: false,
                max_size: args.max_size.as_deref().map(parse_size).transpose()?,
                compute: compute_request(
                    "--",
                    args.cpu.as_deref(),
                    args.memory.as_deref(),
                    args.pids.as_deref(),
                )?,
                for_agent: None,
            };
            if engine.config().driver == Driver::Copy && !json {
                eprintln!("note: copy driver: this clone copies every byte (see `pgfork doctor`)");
            }
            let info = engine.branch_create(&req)?;
            if json {
                output::json(&info);
            } else {
                println!("{}", info.dsn);
            }
        }
        BranchCommand::List { label, agent } => {
            let list = engine.branch_list_by(&names::parse_labels(&label)?, agent.as_deref())?;
            if json {
                output::json(&list)
            } else {
                output::branches(&list);
                output::branch_errors(&list);
            }
        }
        BranchCommand::Info {
            name,
            show_password,
        } => {
            let mut info = engine.branch_info(&name)?;
            info.unshared_bytes = Some(engine.branch_unshared_bytes(&name)?);
            if show_password {
                info = info.reveal();
            }
            if json {
                output::json(&info)
            } else {
                output::branch(&info)
            }
        }
        BranchCommand::Dsn { name } => {
            let dsn = engine
                .branch_info(&name)?
                .dsn_with_password()
                .unwrap_or_default();
            if json {
                output::json(&serde_json::json!({ "name": name, "dsn": dsn }));
            } else {
                println!("{dsn}");
            }
        }
        BranchCommand::Start { name } => {
            let info = engine.branch_start(&name)?;
            if json {
                output::json(&info)
            } else {
                println!("branch {name} is {} on port {}", info.status, info.port)
            }
        }
        BranchCommand::Stop { name } => {
            let info = engine.branch_stop(&name)?;
            if json {
                output::json(&info)
            } else {
                println!("branch {name} is {}", info.status)
            }
        }
        BranchCommand::Share {
            name,
            agent,
            read_only,
        } => {
            let member = engine.branch_share(&name, &agent, read_only)?;
            if json {
                output::json(&member);
            } else {
                println!(
                    "branch {name} is shared with agent {agent} ({}), as role {}",
                    if read_only {
                        "read-only"
                    } else {
                        "read and write"
                    },
                    member.role
                );
            }
        }
        BranchCommand::Unshare { name, agent } => {
            engine.branch_unshare(&name, &agent)?;
            if json {
                output::json(&serde_json::json!({ "branch": name, "unshared": agent }));
            } else {
                println!("branch {name} is no longer shared with agent {agent}");
            }
        }
        BranchCommand::Members { name } => {
            let members = engine.branch_members(&name)?;
            if json {
                output::json(&members);
            } else {
                for m in &members {
                    println!(
                        "{}\t{}\t{}",
                        m.agent,
                        if m.read_only {
                            "read-only"
                        } else {
                            "read-write"
                        },
                        m.role
                    );
                }
            }
        }
        BranchCommand::Reset { name } => {
            let info = engine.branch_reset(&name)?;
            if json {
                output::json(&info);
            } else {
                println!(
                    "branch {name} is back at {} and {}",
                    info.snapshot, info.status
                );
            }
        }
        BranchCommand::Delete { name, force } => deleted(engine.branch_delete(&name, force)?, json),
        BranchCommand::Dump { name, file, format } => {
            let format = match format {
                DumpFormatArg::Custom => DumpFormat::Custom,
                DumpFormatArg::Plain => DumpFormat::Plain,
            };
            match file {
                Some(path) => {
                    let mut out = std::fs::File::create(&path)
                        .with_context(|| format!("create {}", path.display()))?;
                    engine.branch_dump(&name, format, &mut out)?;
                }
                None => {
                    use std::io::IsTerminal;
                    if format == DumpFormat::Custom && std::io::stdout().is_terminal() {
                        bail!(
                            "a custom-format dump is binary: redirect it (> {name}.dump), use --file, or --format plain"
                        );
                    }
                    engine.branch_dump(&name, format, &mut std::io::stdout().lock())?;
                }
            }
        }
        BranchCommand::Set(args) => {
            let ttl = match (args.ttl.as_deref(), args.no_ttl) {
                (Some(t), _) => Some(Some(names::parse_ttl(t)?)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let protect = match (args.protect, args.unprotect) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let add: BTreeMap<String, String> = names::parse_labels(&args.label)?;
            let limits = compute_request(
                "--",
                args.cpu.as_deref(),
                args.memory.as_deref(),
                args.pids.as_deref(),
            )?;
            // The limits first: a refusal there changes nothing else.
            engine.branch_set_limits(&args.name, &limits)?;
            let info = engine.branch_set(&args.name, ttl, protect, &add, &args.unlabel)?;
            if json {
                output::json(&info)
            } else {
                output::branch(&info)
            }
        }
    }
    Ok(())
}

/// Compute limits from `--{prefix}cpu`, `--{prefix}memory` and
/// `--{prefix}pids` (each absent: unchanged; `none`: no limit).
fn compute_request(
    prefix: &str,
    cpu: Option<&str>,
    memory: Option<&str>,
    pids: Option<&str>,
) -> Result<ComputeRequest> {
    Ok(ComputeRequest {
        cpu_millis: cpu
            .map(|t| compute::parse_cpu(&format!("{prefix}cpu"), t))
            .transpose()?,
        memory: memory
            .map(|t| compute::parse_memory(&format!("{prefix}memory"), t))
            .transpose()?,
        pids: pids
            .map(|t| compute::parse_pids(&format!("{prefix}pids"), t))
            .transpose()?,
    })
}
