//! Baseline: `CREATE DATABASE ... TEMPLATE` in the source cluster, until
//! the new database answers a query as the application role.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgfork_engine::SourceInfo;
use pgfork_pg::sql::quote_ident;

use crate::bench::conn::{AppConn, PATIENCE, first_query};

/// Prefix of every database the benchmark creates, so that leftovers of an
/// interrupted run can be found and dropped.
pub const DB_PREFIX: &str = "pgfork_bench_";

/// A superuser connection to the source over its unix socket.
pub fn superuser(src: &SourceInfo) -> Result<postgres::Client> {
    pgfork_pg::untrusted::session::maintenance(&pgfork_pg::untrusted::session::Endpoint {
        socket_dir: src.socket_dir.clone(),
        port: src.port,
    })
    .with_context(|| format!("connect to source {} as superuser", src.name))
}

/// Drops a database the benchmark made, sessions and all.
pub fn drop_database(src: &SourceInfo, name: &str) -> Result<()> {
    let force = if src.pg_major >= 13 {
        " WITH (FORCE)"
    } else {
        ""
    };
    superuser(src)?
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {}{force}",
            quote_ident(name)
        ))
        .with_context(|| format!("drop database {name}"))
}

/// Times `CREATE DATABASE copy TEMPLATE app [STRATEGY s]`, from opening the
/// superuser connection to the first query in the copy; drops it after.
pub fn create_database(
    src: &SourceInfo,
    app: &AppConn,
    strategy: Option<&str>,
) -> Result<Duration> {
    let name = format!("{DB_PREFIX}template");
    drop_database(src, &name)?;
    let result = measure(src, app, &name, strategy);
    let dropped = drop_database(src, &name);
    let took = result?;
    dropped?;
    Ok(took)
}

fn measure(
    src: &SourceInfo,
    app: &AppConn,
    name: &str,
    strategy: Option<&str>,
) -> Result<Duration> {
    let began = Instant::now();
    let mut su = superuser(src)?;
    let strategy = strategy
        .map(|s| format!(" STRATEGY {s}"))
        .unwrap_or_default();
    su.batch_execute(&format!(
        "CREATE DATABASE {} TEMPLATE {} OWNER {}{strategy}",
        quote_ident(name),
        quote_ident(&src.database),
        quote_ident(&src.user),
    ))
    .context("CREATE DATABASE ... TEMPLATE")?;
    first_query(&app.with_database(name), PATIENCE).context("first query in the new database")?;
    Ok(began.elapsed())
}
