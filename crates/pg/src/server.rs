//! Starting a postmaster directly, waiting for it by connecting, and
//! stopping it: SIGINT (fast shutdown), then SIGQUIT, then SIGKILL.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgfork_os::{ProcessId, RunAs};

use crate::untrusted::session::{self, Endpoint};
use crate::{PgBinaries, PgError, SUPERUSER};

/// Longest unix socket path the kernel accepts (sun_path minus NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How to start one postmaster.
#[derive(Debug, Clone)]
pub struct StartSpec<'a> {
    /// Binaries to run.
    pub bins: &'a PgBinaries,
    /// Data directory.
    pub datadir: &'a Path,
    /// Log file (stderr of the postmaster, appended).
    pub log: &'a Path,
    /// User to run as.
    pub run_as: &'a RunAs,
    /// Socket directory (must match the server's settings).
    pub socket_dir: &'a Path,
    /// Port (names the socket file).
    pub port: u16,
    /// Extra `-c name=value` settings for this start only.
    pub overrides: &'a [(&'a str, &'a str)],
    /// Give up waiting after this long.
    pub timeout: Duration,
    /// The control groups to start it in (`cgroup.procs` opened by the
    /// caller): the child enters them between fork and exec, so the
    /// postmaster and every process it forks are in them from the start.
    pub cgroup: Option<&'a pgfork_os::cgroup::Join>,
}

/// A running postmaster and a superuser connection to it.
pub struct Postmaster {
    /// The postmaster process.
    pub pid: ProcessId,
    /// Superuser connection over the unix socket, to the maintenance
    /// database `postgres` (see [`session::maintenance`]).
    pub client: postgres::Client,
    /// Time from spawn to the first accepted connection.
    pub ready_after: Duration,
}

/// How hard to stop a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGINT: abort sessions, write a shutdown checkpoint. Keeps data.
    Fast,
    /// SIGQUIT: no checkpoint; for servers about to be deleted.
    Immediate,
}

/// Socket file path of a server.
pub fn socket_path(socket_dir: &Path, port: u16) -> PathBuf {
    socket_dir.join(format!(".s.PGSQL.{port}"))
}

/// Checks that the socket path fits in `sun_path`.
pub fn check_socket_path(socket_dir: &Path, port: u16) -> Result<(), PgError> {
    let path = socket_path(socket_dir, port);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(PgError::SocketPathTooLong(path.display().to_string()));
    }
    Ok(())
}

/// Starts a postmaster and waits until it accepts a connection.
///
/// The postmaster runs in its own session (so a terminal's Ctrl-C does not
/// reach it), as `run_as`, with stderr appended to the log. If it exits or
/// does not become ready in time it is killed, and the error carries the
/// tail of its log: a failed start leaves no process behind.
pub fn start(spec: &StartSpec) -> Result<Postmaster, PgError> {
    check_socket_path(spec.socket_dir, spec.port)?;
    prepare_socket_dir(spec.socket_dir, spec.run_as)?;
    kill_leftovers(spec.datadir);
    remove_stale_socket(spec.socket_dir, spec.port);

    // The server writes through this descriptor, so the file can be
    // pgfork's own and owner-only; no link is followed to open it.
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(spec.log)
        .map_err(PgError::io("open log", spec.log))?;
    let log_err = log.try_clone().map_err(PgError::io("open log", spec.log))?;

    let mut cmd = Command::new(spec.bins.tool("postgres"));
    cmd.arg("-D").arg(spec.datadir);
    for (name, value) in spec.overrides {
        cmd.arg("-c").arg(format!("{name}={value}"));
    }
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .current_dir(spec.datadir);
    if spec.run_as.needs_switch() {
        cmd.uid(spec.run_as.uid).gid(spec.run_as.gid);
    }
    // Collected before the fork: the child must not allocate.
    let cgroup_fds = spec.cgroup.map(|j| j.fds()).unwrap_or_default();
    // SAFETY: setsid and write(2) (in `enter`) are async-signal-safe, and
    // the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            pgfork_os::cgroup::enter(&cgroup_fds)
        });
    }
    let spawned = Instant::now();
    let child = cmd.spawn().map_err(|e| PgError::Command {
        program: spec.bins.tool("postgres").display().to_string(),
        detail: if spec.cgroup.is_some() {
            format!("{e} (starting it in its control group; `pgfork doctor` checks cgroups)")
        } else {
            e.to_string()
        },
    })?;
    let mut guard = StartGuard {
        child: Some(child),
        datadir: spec.datadir.to_path_buf(),
        pid: None,
    };
    let pid = guard.pid_id();

    let deadline = spawned + spec.timeout;
    // Until the postmaster says it is ready in postmaster.pid, a connection
    // attempt only makes it fork a backend to refuse us, which slows its
    // start; so watch the file (cheaply, every millisecond), then connect.
    let lock = spec.datadir.join("postmaster.pid");
    loop {
        if pm_status(&lock).is_some_and(|s| s == "ready" || s == "standby") {
            break;
        }
        if let Some(err) = guard.check_exit(spec) {
            return Err(err);
        }
        if Instant::now() >= deadline {
            return Err(guard.fail(spec, format!("not ready after {:?}", spec.timeout)));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut pause = Duration::from_millis(1);
    loop {
        let ep = Endpoint {
            socket_dir: spec.socket_dir.to_path_buf(),
            port: spec.port,
        };
        match session::maintenance(&ep) {
            Ok(client) => {
                let ready_after = spawned.elapsed();
                guard.release();
                return Ok(Postmaster {
                    pid,
                    client,
                    ready_after,
                });
            }
            Err(e) if !is_transient(&e) => {
                return Err(guard.fail(spec, format!("connecting as {SUPERUSER} failed: {e}")));
            }
            Err(_) => {}
        }
        if let Some(err) = guard.check_exit(spec) {
            return Err(err);
        }
        if Instant::now() >= deadline {
            return Err(guard.fail(spec, format!("not ready after {:?}", spec.timeout)));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The status word on line 8 of `postmaster.pid` (`starting`, `ready`,
/// `standby`, `stopping`), once the postmaster has written it.
fn pm_status(lock: &Path) -> Option<String> {
    let text = std::fs::read_to_string(lock).ok()?;
    text.lines().nth(7).map(|l| l.trim().to_string())
}

/// Connection failures that mean "not ready yet": no socket file yet,
/// nobody listening, or the server still starting up (SQLSTATE 57P03).
fn is_transient(e: &postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        return db.code() == &postgres::error::SqlState::CANNOT_CONNECT_NOW;
    }
    // Socket missing or refused: tokio-postgres reports these as I/O errors
    // without a database error.
    true
}

/// Kills a half-started postmaster unless released.
struct StartGuard {
    child: Option<Child>,
    datadir: PathBuf,
    pid: Option<ProcessId>,
}

impl StartGuard {
    fn pid_id(&mut self) -> ProcessId {
        let child = self.child.as_ref().expect("child present");
        let raw = child.id() as i32;
        // The child is ours until reaped, so /proc/PID is there to read.
        let id = ProcessId::of(raw).unwrap_or(ProcessId {
            pid: raw,
            start_ticks: 0,
        });
        self.pid = Some(id);
        id
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// If the postmaster has exited, the error to report (port conflicts
    /// told apart so the caller can pick another port).
    fn check_exit(&mut self, spec: &StartSpec) -> Option<PgError> {
        let status = self.exited()?;
        let err = self.fail(spec, format!("postmaster exited ({status})"));
        if let PgError::StartFailed { log_tail, .. } = &err
            && (log_tail.contains("could not bind") || log_tail.contains("Address already in use"))
            && log_tail.contains(&spec.port.to_string())
        {
            return Some(PgError::PortInUse { port: spec.port });
        }
        Some(err)
    }

    fn fail(&mut self, spec: &StartSpec, reason: String) -> PgError {
        self.kill();
        PgError::StartFailed {
            datadir: spec.datadir.to_path_buf(),
            reason,
            log: spec.log.to_path_buf(),
            log_tail: log_tail(spec.log, 15),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            if child.try_wait().ok().flatten().is_none() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGQUIT);
                let deadline = Instant::now() + Duration::from_secs(5);
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                let _ = child.wait();
            }
            if let Ok(dir) = std::fs::canonicalize(&self.datadir) {
                kill_orphans(&dir);
            }
        }
    }

    /// The postmaster is up: keep it. A thread reaps it when it exits, so a
    /// long-lived pgfork (the daemon) never collects zombies.
    fn release(&mut self) {
        if let Some(mut child) = self.child.take() {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn prepare_socket_dir(dir: &Path, owner: &RunAs) -> Result<(), PgError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(PgError::io("create socket directory", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(PgError::io("chmod socket directory", dir))?;
    owner
        .chown(dir)
        .map_err(PgError::io("chown socket directory", dir))
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(64 * 1024);
    let text = String::from_utf8_lossy(&text[start..]);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The postmaster recorded in `DATADIR/postmaster.pid`, if it still runs.
pub fn running_postmaster(datadir: &Path) -> Option<ProcessId> {
    let text = std::fs::read_to_string(datadir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    let id = ProcessId::of(pid)?;
    // The pid may have been reused: it must be a postgres whose working
    // directory is this data directory.
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    let same = std::fs::canonicalize(datadir)
        .map(|d| d == cwd)
        .unwrap_or(false);
    (same && id.is_alive()).then_some(id)
}

/// Stops a postmaster: `mode`'s signal, then SIGQUIT, then SIGKILL, and
/// then any of its children still working in its data directory (each
/// child runs in a session of its own, so no process group reaches them
/// all). Returns once no process of it is left.
pub fn stop(pid: ProcessId, mode: StopMode, grace: Duration) -> Result<(), PgError> {
    // Where it works, to find its children after it is gone.
    let datadir = std::fs::read_link(format!("/proc/{}/cwd", pid.pid))
        .ok()
        .filter(|_| pid.is_alive());
    let finish = |datadir: &Option<std::path::PathBuf>| {
        if let Some(dir) = datadir {
            kill_orphans(dir);
        }
    };
    if !pid.is_alive() {
        finish(&datadir);
        return Ok(());
    }
    let first = match mode {
        StopMode::Fast => Signal::SIGINT,
        StopMode::Immediate => Signal::SIGQUIT,
    };
    pid.signal(first);
    if pid.wait_exit(grace) {
        finish(&datadir);
        return Ok(());
    }
    tracing::warn!(pid = pid.pid, "postmaster ignored {first}; sending SIGQUIT");
    pid.signal(Signal::SIGQUIT);
    if pid.wait_exit(Duration::from_secs(5)) {
        finish(&datadir);
        return Ok(());
    }
    tracing::warn!(pid = pid.pid, "postmaster ignored SIGQUIT; sending SIGKILL");
    pid.signal(Signal::SIGKILL);
    if pid.wait_exit(Duration::from_secs(5)) {
        finish(&datadir);
        Ok(())
    } else {
        Err(PgError::StopFailed { pid: pid.pid })
    }
}

/// Clears what is left of a postmaster that died: backends still attached
/// to its shared memory, and its lock file. PostgreSQL itself refuses to
/// start while the pid in the lock file exists, and a killed postmaster
/// stays a zombie until its new parent reaps it, which can take a while.
pub fn kill_leftovers(datadir: &Path) {
    if running_postmaster(datadir).is_some() {
        return;
    }
    if let Ok(dir) = std::fs::canonicalize(datadir) {
        kill_orphans(&dir);
    }
    let lock = datadir.join("postmaster.pid");
    if lock_pid(&lock).is_some() {
        let _ = std::fs::remove_file(&lock);
    }
}

/// The pid on the first line of a PostgreSQL lock file.
fn lock_pid(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Removes a socket's lock file (and the socket) left by a dead postmaster;
/// like `postmaster.pid`, it blocks a new start while a zombie holds the pid.
fn remove_stale_socket(socket_dir: &Path, port: u16) {
    let socket = socket_path(socket_dir, port);
    let lock = socket.with_file_name(format!(".s.PGSQL.{port}.lock"));
    if let Some(pid) = lock_pid(&lock)
        && !ProcessId::of(pid).is_some_and(|p| p.is_alive())
    {
        let _ = std::fs::remove_file(&lock);
        let _ = std::fs::remove_file(&socket);
    }
}

/// SIGKILLs every postgres process working in `datadir` (canonical): the
/// children a dead postmaster left. Only processes named postgres are
/// touched.
pub fn kill_orphans(datadir: &Path) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut victims = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
            continue;
        };
        if cwd != datadir {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end().starts_with("postgres") {
            victims.push(pid);
        }
    }
    for pid in &victims {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL);
    }
    for pid in victims {
        if let Some(id) = ProcessId::of(pid) {
            id.wait_exit(Duration::from_secs(2));
        }
    }
}
