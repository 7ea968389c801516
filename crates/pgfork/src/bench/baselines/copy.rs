//! Baseline: `cp -a` of the snapshot's data directory inside the pool, then
//! a postmaster started on the copy, until it answers a query.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pgfork_engine::Engine;
use pgfork_pg::conf::write_owned;
use pgfork_pg::server::{self, StartSpec};
use pgfork_pg::{Postmaster, StopMode};
use pgfork_pool::Home;

use crate::bench::conn::{AppConn, PATIENCE, first_query};

/// Directory in the pool for baseline copies: outside sources, snapshots
/// and branches, so the engine's reconcile never mistakes it for its own.
const TMP_DIR: &str = "pgfork-bench-tmp";
/// Name of the copy's socket directory and log (`bench-` is a prefix the
/// engine's reconcile leaves alone).
const SERVER_NAME: &str = "bench-copy";

fn copy_dir(home: &Home) -> PathBuf {
    home.pool().join(TMP_DIR).join("copy")
}

fn socket_dir(home: &Home) -> PathBuf {
    home.run().join(SERVER_NAME)
}

fn log_path(home: &Home) -> PathBuf {
    home.logs().join(format!("{SERVER_NAME}.log"))
}

/// Copies the snapshot with `cp -a` (`--reflink=never` unless `reflink`),
/// starts it with a branch's settings (`branch_conf`, the `pgfork.conf` of
/// a branch), and waits for a first query as the application role.
/// Returns (to first query, copy alone). The copy is removed after.
pub fn copy_and_start(
    engine: &Engine,
    snapshot_dir: &Path,
    app: &AppConn,
    branch_conf: &str,
    reflink: bool,
) -> Result<(Duration, Duration)> {
    let home = engine.home();
    remove_copy(home)?;
    let dst = copy_dir(home);
    let parent = dst.parent().expect("copy dir has a parent");
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    use std::os::unix::fs::PermissionsExt;
    // The server's OS user must be able to pass through to the copy.
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;

    let result = measure(engine, snapshot_dir, &dst, app, branch_conf, reflink);
    let removed = remove_copy(home);
    let figures = result?;
    removed?;
    Ok(figures)
}

fn measure(
    engine: &Engine,
    snapshot_dir: &Path,
    dst: &Path,
    app: &AppConn,
    branch_conf: &str,
    reflink: bool,
) -> Result<(Duration, Duration)> {
    let began = Instant::now();
    let mut cp = Command::new("cp");
    cp.arg("-a");
    if !reflink {
        cp.arg("--reflink=never");
    }
    let out = cp
        .arg(snapshot_dir)
        .arg(dst)
        .stdin(Stdio::null())
        .output()
        .context("run cp")?;
    if !out.status.success() {
        bail!(
            "cp -a failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let copied = began.elapsed();
    let (pm, port) = start(engine, dst, branch_conf)?;
    let answered = first_query(
        &AppConn {
            port,
            ..app.clone()
        },
        PATIENCE,
    );
    let to_query = began.elapsed();
    drop(pm.client);
    server::stop(pm.pid, StopMode::Immediate, Duration::from_secs(5))?;
    answered.context("first query on the copy")?;
    Ok((to_query, copied))
}

/// Starts a postmaster on the copy with a branch's settings: what pgfork
/// itself does after cloning, so only the copy differs. Returns the port.
fn start(engine: &Engine, dir: &Path, branch_conf: &str) -> Result<(Postmaster, u16)> {
    let home = engine.home();
    let config = engine.config();
    let socket_dir = socket_dir(home);
    let port = free_port()?;
    write_owned(
        &dir.join("pgfork.conf"),
        copy_conf(branch_conf, port, &socket_dir).as_bytes(),
        &config.run_as,
    )?;
    let spec = StartSpec {
        bins: &config.bins,
        datadir: dir,
        log: &log_path(home),
        run_as: &config.run_as,
        socket_dir: &socket_dir,
        port,
        overrides: &[],
        timeout: Duration::from_secs(120),
        cgroup: None,
    };
    Ok((server::start(&spec)?, port))
}

/// A branch's `pgfork.conf` with the copy's own port and socket directory.
fn copy_conf(branch_conf: &str, port: u16, socket_dir: &Path) -> String {
    let mut out = String::new();
    for line in branch_conf.lines() {
        match line.split_once(" = ").map(|(k, _)| k) {
            Some("port") => out.push_str(&format!("port = {port}")),
            Some("unix_socket_directories") => out.push_str(&format!(
                "unix_socket_directories = '{}'",
                socket_dir.display().to_string().replace('\'', "''")
            )),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A TCP port nobody listens on right now (the kernel picks it).
fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("find a free port for the copy")?;
    Ok(listener.local_addr()?.port())
}

/// Stops any server left on a baseline copy and removes the copy, its
/// socket directory and log.
pub fn remove_copy(home: &Home) -> Result<()> {
    let tmp = home.pool().join(TMP_DIR);
    let dst = copy_dir(home);
    if let Some(pid) = server::running_postmaster(&dst) {
        server::stop(pid, StopMode::Immediate, Duration::from_secs(5))?;
    }
    server::kill_leftovers(&dst);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("remove {}", tmp.display()))?;
    }
    let _ = std::fs::remove_dir_all(socket_dir(home));
    let _ = std::fs::remove_file(log_path(home));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_conf_moves_port_and_socket_only() {
        let conf = "# x\nport = 15433\nunix_socket_directories = '/h/run/branch-a'\nfsync = off\n";
        let out = copy_conf(conf, 40000, Path::new("/h/run/it's"));
        assert_eq!(
            out,
            "# x\nport = 40000\nunix_socket_directories = '/h/run/it''s'\nfsync = off\n"
        );
    }
}
