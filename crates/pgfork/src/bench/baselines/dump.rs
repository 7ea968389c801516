//! Baseline: `pg_dump -Fc | pg_restore` into a new database of the source
//! cluster, until it answers a query as the application role.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pgfork_engine::{Engine, SourceInfo};
use pgfork_pg::sql::quote_ident;

use super::template::{DB_PREFIX, drop_database, superuser};
use crate::bench::conn::{AppConn, PATIENCE, first_query};

/// Times creating an empty database, `pg_dump -Fc | pg_restore` into it
/// (one stream, as the application role) and the first query; drops it after.
pub fn dump_restore(engine: &Engine, src: &SourceInfo, app: &AppConn) -> Result<Duration> {
    let bins = &engine.config().bins;
    for tool in ["pg_dump", "pg_restore"] {
        if !bins.has(tool) {
            bail!("{tool} not found in {}", bins.dir.display());
        }
    }
    let name = format!("{DB_PREFIX}restore");
    drop_database(src, &name)?;
    let result = measure(engine, src, app, &name);
    let dropped = drop_database(src, &name);
    let took = result?;
    dropped?;
    Ok(took)
}

fn measure(engine: &Engine, src: &SourceInfo, app: &AppConn, name: &str) -> Result<Duration> {
    let bins = &engine.config().bins;
    let began = Instant::now();
    superuser(src)?
        .batch_execute(&format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(name),
            quote_ident(&src.user)
        ))
        .context("create the restore database")?;

    let mut dump = Command::new(bins.tool("pg_dump"));
    dump.arg("-Fc")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    app.apply_env(&mut dump);
    let mut dump = dump.spawn().context("run pg_dump")?;
    let dump_out = dump.stdout.take().expect("piped");
    let mut dump_err = dump.stderr.take().expect("piped");
    // Drained on a thread: a full stderr pipe would stall pg_dump.
    let dump_err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = dump_err.read_to_string(&mut text);
        text
    });

    let target = app.with_database(name);
    let mut restore = Command::new(bins.tool("pg_restore"));
    restore
        .args(["--no-owner", "--no-privileges", "-d", name])
        .stdin(Stdio::from(dump_out));
    target.apply_env(&mut restore);
    let restored = restore.output().context("run pg_restore")?;
    let dumped = dump.wait().context("wait for pg_dump")?;
    let dump_err = dump_err.join().unwrap_or_default();
    if !dumped.success() {
        bail!("pg_dump failed ({dumped}): {}", dump_err.trim());
    }
    if !restored.status.success() {
        bail!(
            "pg_restore failed ({}): {}",
            restored.status,
            String::from_utf8_lossy(&restored.stderr).trim()
        );
    }
    first_query(&target, PATIENCE).context("first query in the restored database")?;
    Ok(began.elapsed())
}
