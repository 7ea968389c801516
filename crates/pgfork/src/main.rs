//! `pgfork`: the command-line interface. Wiring only; the work is in the
//! engine and the crates below it.

mod agents;
mod approvals;
mod bench;
mod cli;
mod commands;
mod diff;
mod output;
mod progress;
mod rehearse;
mod replace;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if !matches!(
        cli.command,
        cli::Command::Serve(_) | cli::Command::Proxy(_) | cli::Command::Mcp(_)
    ) {
        // A one-shot command whose reader went away (`pgfork ... | head`)
        // ends quietly, as Unix tools do, rather than panicking in
        // println!. The daemons keep Rust's default of ignoring SIGPIPE:
        // a client that hangs up must not end them.
        // SAFETY: restoring a signal's default disposition at start-up,
        // before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // The database driver's own debug output would show SQL that pgfork
    // sends, password verifiers included: keep it at info.
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info,tokio_postgres=info",
        _ => "debug,tokio_postgres=info,postgres=info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGFORK_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let json = cli.json;
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) if json && err.downcast_ref::<output::Reported>().is_some() => {
            // The JSON document already printed says what went wrong.
            ExitCode::FAILURE
        }
        Err(err) => {
            let code = err
                .downcast_ref::<pgfork_engine::EngineError>()
                .map(|e| e.code())
                .unwrap_or("error");
            if json {
                output::json(
                    &serde_json::json!({ "error": { "code": code, "message": format!("{err:#}") } }),
                );
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}
