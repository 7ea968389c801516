//! Copying a remote database in: `pg_basebackup` (physical) and parallel
//! `pg_dump` / `pg_restore` (logical), with progress.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use pgfork_os::RunAs;

use crate::remote::{RemoteUrl, remote_env, remote_error};
use crate::{PgBinaries, PgError, SUPERUSER};

/// Receives progress of a long copy: `done` of `total` units (kB or tables).
pub type OnProgress<'a> = &'a dyn Fn(u64, u64);

/// Runs `cmd`, feeding each `\r`- or `\n`-terminated stderr line to
/// `on_line`, and returns all of stderr for error messages.
fn run_with_lines(
    mut cmd: Command,
    program: &str,
    on_line: &dyn Fn(&str),
) -> Result<(bool, String), PgError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| PgError::Command {
        program: program.into(),
        detail: e.to_string(),
    })?;
    let mut stderr = child.stderr.take().expect("piped");
    let mut all = Vec::new();
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stderr.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\r' || b == b'\n' {
                on_line(&String::from_utf8_lossy(&line));
                line.clear();
            } else {
                line.push(b);
            }
        }
        all.extend_from_slice(&buf[..n]);
        // Keep the tail only: verbose output of a big dump is long.
        if all.len() > 256 * 1024 {
            all.drain(..all.len() - 64 * 1024);
        }
    }
    let status = child.wait().map_err(|e| PgError::Command {
        program: program.into(),
        detail: e.to_string(),
    })?;
    Ok((status.success(), String::from_utf8_lossy(&all).into_owned()))
}

/// Takes a base backup of `url` into the empty directory `datadir`, as
/// `run_as`, streaming the WAL it needs and (if `slot`) creating a
/// physical replication slot for the standby that will follow.
pub fn basebackup(
    bins: &PgBinaries,
    url: &RemoteUrl,
    password: Option<&str>,
    datadir: &Path,
    run_as: &RunAs,
    slot: Option<&str>,
    progress: OnProgress,
) -> Result<(), PgError> {
    let mut cmd = Command::new(bins.tool("pg_basebackup"));
    cmd.arg("-d")
        .arg(url.conninfo(None))
        .arg("-D")
        .arg(datadir)
        .args(["-X", "stream", "-c", "fast", "-P", "--no-password"])
        .current_dir("/");
    if let Some(slot) = slot {
        cmd.args(["-C", "-S", slot]);
    }
    remote_env(&mut cmd, password);
    if run_as.needs_switch() {
        cmd.uid(run_as.uid).gid(run_as.gid);
    }
    let on_line = |l: &str| {
        // "12345/67890 kB (18%), 0/1 tablespace"
        if let Some((done, rest)) = l.trim().split_once('/')
            && let Some(total) = rest.split_whitespace().next()
            && let (Ok(d), Ok(t)) = (done.trim().parse::<u64>(), total.parse::<u64>())
        {
            progress(d, t);
        }
    };
    let (ok, stderr) = run_with_lines(cmd, "pg_basebackup", &on_line)?;
    if ok {
        Ok(())
    } else {
        Err(remote_error(url, "take a base backup", &stderr))
    }
}

/// Dumps `url`'s database into directory `dir` with `jobs` parallel
/// workers (directory format), leaving out subscriptions, which would try
/// to connect elsewhere from every branch.
pub fn dump(
    bins: &PgBinaries,
    url: &RemoteUrl,
    password: Option<&str>,
    dir: &Path,
    jobs: u32,
    tables: u64,
    progress: OnProgress,
) -> Result<(), PgError> {
    let mut cmd = Command::new(bins.tool("pg_dump"));
    cmd.arg("-d")
        .arg(url.conninfo(None))
        .args([
            "-F",
            "d",
            "-j",
            &jobs.max(1).to_string(),
            "-v",
            "--no-password",
            "--no-subscriptions",
            "-f",
        ])
        .arg(dir)
        .current_dir("/");
    remote_env(&mut cmd, password);
    let done = std::cell::Cell::new(0u64);
    let on_line = |l: &str| {
        if l.contains("dumping contents of table") || l.contains("finished item") {
            done.set(done.get() + 1);
            progress(done.get().min(tables), tables);
        }
    };
    let (ok, stderr) = run_with_lines(cmd, "pg_dump", &on_line)?;
    if ok {
        Ok(())
    } else {
        Err(remote_error(url, "dump it", &stderr))
    }
}

/// A database of a server pgfork runs, reached as superuser over its socket.
#[derive(Debug, Clone, Copy)]
pub struct LocalDb<'a> {
    /// Unix socket directory.
    pub socket_dir: &'a Path,
    /// Port (names the socket).
    pub port: u16,
    /// Database.
    pub dbname: &'a str,
}

/// Restores directory-format dump `dir` into database `dbname` of a local
/// server (superuser over its unix socket), in parallel, stopping at the
/// first error so that a failed import is never taken for a good one.
pub fn restore(
    bins: &PgBinaries,
    target: &LocalDb,
    dir: &Path,
    jobs: u32,
    tables: u64,
    progress: OnProgress,
) -> Result<(), PgError> {
    let mut cmd = Command::new(bins.tool("pg_restore"));
    cmd.arg("-h")
        .arg(target.socket_dir)
        .args([
            "-p",
            &target.port.to_string(),
            "-U",
            SUPERUSER,
            "-d",
            target.dbname,
        ])
        .args([
            "-j",
            &jobs.max(1).to_string(),
            "-v",
            "--exit-on-error",
            "--no-tablespaces",
        ])
        .arg(dir)
        .env_remove("PGPASSWORD")
        .current_dir("/");
    let done = std::cell::Cell::new(0u64);
    let on_line = |l: &str| {
        if l.contains("processing data for table")
            || l.contains("finished item") && l.contains("TABLE DATA")
        {
            done.set(done.get() + 1);
            progress(done.get().min(tables), tables);
        }
    };
    let (ok, stderr) = run_with_lines(cmd, "pg_restore", &on_line)?;
    if ok {
        Ok(())
    } else {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        Err(PgError::Command {
            program: "pg_restore".into(),
            detail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        })
    }
}

/// Resets the WAL of a cleanly shut down cluster: every old segment goes,
/// so nothing written before (such as values masking replaced) survives
/// in WAL. Refused by pg_resetwal if the cluster was not shut down cleanly.
pub fn reset_wal(bins: &PgBinaries, datadir: &Path, run_as: &RunAs) -> Result<(), PgError> {
    let mut cmd = Command::new(bins.tool("pg_resetwal"));
    cmd.arg("-D")
        .arg(datadir)
        .env("LC_ALL", "C")
        .current_dir("/");
    if run_as.needs_switch() {
        cmd.uid(run_as.uid).gid(run_as.gid);
    }
    let out = cmd.output().map_err(|e| PgError::Command {
        program: "pg_resetwal".into(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PgError::Command {
            program: "pg_resetwal".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
