//! Shared helpers for pgfork's integration tests.
//!
//! The tests drive the built `pgfork` binary the way a user does, against
//! real PostgreSQL servers on real copy-on-write filesystems. Nothing is
//! mocked.
//!
//! # Pools, and the one policy for missing ones
//!
//! Every test runs in its own home on one of three pools, named by
//! environment variables that `scripts/test.sh` sets after loop-mounting
//! them (as root):
//!
//! | variable            | filesystem          | driver `init` must pick |
//! | ------------------- | ------------------- | ----------------------- |
//! | `PGFORK_TEST_XFS`   | XFS, `reflink=1`    | `reflink`               |
//! | `PGFORK_TEST_BTRFS` | btrfs               | `btrfs`                 |
//! | `PGFORK_TEST_PLAIN` | ext4 (no CoW)       | `copy`                  |
//!
//! **A test whose pool variable is missing fails** with a message that
//! says to run `scripts/test.sh` as root. Nothing is ever skipped: a plain
//! `cargo test` without the script fails loudly (the unit tests of the
//! other crates still run), and a green run means every test ran on a
//! real pool. `PGFORK_TEST_PG_BIN` may name the PostgreSQL bin directory
//! for pgbench and pg_amcheck; by default the newest
//! `/usr/lib/postgresql/*/bin` is used.
//!
//! # Isolation between parallel tests
//!
//! Each [`TestHome`] gets its own directory and its own range of TCP ports,
//! reserved with a lock file (so test binaries run at the same time, or
//! under nextest, do not collide either). On drop it deletes every source
//! with `--force`, kills any process still working under the home, unmounts
//! a pool image and removes the directory.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

mod dump;
#[allow(unused_imports)] // Each test binary uses a different subset.
pub use dump::{data_digest, schema_dump};

/// The binary under test.
pub const PGFORK: &str = env!("CARGO_BIN_EXE_pgfork");

/// Environment variable that makes pgfork SIGKILL itself at a named point.
pub const FAILPOINT_ENV: &str = "PGFORK_FAILPOINT";

/// First port handed to test homes: above pgfork's default range
/// (15432-16431), so a developer's own pgfork is never disturbed.
const PORT_BASE: u16 = 20000;
/// Ports per home: a source and a dozen branches fit.
const PORTS_PER_HOME: u16 = 20;
/// Number of port slots: 20000-27999, below the kernel's ephemeral ports
/// (32768 and up), which the client ends of connections take.
const PORT_SLOTS: u16 = 400;

/// A pool prepared by `scripts/test.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Loop-mounted XFS with reflink=1.
    Xfs,
    /// Loop-mounted btrfs.
    Btrfs,
    /// A filesystem without copy-on-write (ext4).
    Plain,
}

impl Pool {
    /// The environment variable naming this pool's directory.
    pub fn env(self) -> &'static str {
        match self {
            Pool::Xfs => "PGFORK_TEST_XFS",
            Pool::Btrfs => "PGFORK_TEST_BTRFS",
            Pool::Plain => "PGFORK_TEST_PLAIN",
        }
    }

    /// The clone driver `pgfork init` must pick on this pool.
    pub fn driver(self) -> &'static str {
        match self {
            Pool::Xfs => "reflink",
            Pool::Btrfs => "btrfs",
            Pool::Plain => "copy",
        }
    }

    /// How snapshots of a running source are taken with this pool's driver.
    pub fn snapshot_method(self) -> &'static str {
        match self {
            Pool::Btrfs => "atomic",
            Pool::Xfs | Pool::Plain => "online-backup",
        }
    }

    /// The pool directory. Panics (the policy above) if the variable is
    /// missing or does not name a directory.
    pub fn dir(self) -> PathBuf {
        let var = self.env();
        let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
            panic!(
                "\n\n{var} is not set. pgfork's integration tests run on real XFS, btrfs and ext4 \
                 pools that scripts/test.sh prepares (as root: it loop-mounts image files).\n\
                 Run `scripts/test.sh`, or mount the pools yourself and export \
                 PGFORK_TEST_XFS, PGFORK_TEST_BTRFS and PGFORK_TEST_PLAIN.\n\
                 These tests are never skipped: a missing pool is a failure.\n\n"
            );
        };
        let dir = PathBuf::from(value);
        assert!(
            dir.is_dir(),
            "{var}={} is not a directory: run scripts/test.sh",
            dir.display()
        );
        fs::canonicalize(&dir).expect("canonical pool path")
    }
}

/// A test's own pgfork home on one pool, cleaned up on drop.
pub struct TestHome {
    /// The home directory (canonical).
    pub root: PathBuf,
    /// The pool it lives on.
    pub pool: Pool,
    /// Its TCP port range, inclusive.
    pub ports: (u16, u16),
    /// Everything its commands wrote on stderr, to search for secrets.
    stderr: Mutex<String>,
    _ports: PortLock,
}

/// A small filesystem of its own for one test, in a sparse image file on
/// a pool, loop-mounted; unmounted and removed on drop (declare it before
/// the [`TestHome`] inside it, so that the home is dropped first).
pub struct LoopMount {
    /// Where it is mounted.
    pub dir: PathBuf,
    image: PathBuf,
}

impl LoopMount {
    /// An ext4 filesystem of `mib` MiB (nothing reserved for root): no copy-on-write of any kind, so
    /// that copies really take space (XFS and btrfs share blocks even in
    /// plain file copies, through copy_file_range).
    pub fn ext4(pool: Pool, name: &str, mib: u64) -> LoopMount {
        let n = HOMES.fetch_add(1, Ordering::SeqCst);
        let base = pool
            .dir()
            .join(format!("{name}-{}-{n}", std::process::id()));
        let image = base.with_extension("img");
        fs::File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .expect("create image file");
        // No blocks reserved for root: the tests run as root, and pgfork
        // reads the space free to everyone (statvfs f_bavail).
        run_tool(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(&image),
        );
        fs::create_dir(&base).expect("mountpoint");
        run_tool(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&base),
        );
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&base, fs::Permissions::from_mode(0o711)).expect("chmod");
        LoopMount { dir: base, image }
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if is_mountpoint(&self.dir) {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
        let _ = fs::remove_dir(&self.dir);
        let _ = fs::remove_file(&self.image);
    }
}

/// An error as `pgfork --json` reports it.
#[derive(Debug, Clone)]
pub struct CmdError {
    /// The stable code (`unknown_branch`, ...).
    pub code: String,
    /// The message for people.
    pub message: String,
    /// What the command wrote on stderr.
    pub stderr: String,
}

/// Generates one `#[test]` per clone driver, each calling the function of
/// the same name with the pool that driver runs on: `btrfs::NAME` on the
/// btrfs pool, `reflink::NAME` on XFS, `copy::NAME` on ext4.
#[macro_export]
macro_rules! on_every_pool {
    ($($test:ident),* $(,)?) => {
        mod btrfs {
            $( #[test] fn $test() { $crate::$test($crate::common::Pool::Btrfs) } )*
        }
        mod reflink {
            $( #[test] fn $test() { $crate::$test($crate::common::Pool::Xfs) } )*
        }
        mod copy {
            $( #[test] fn $test() { $crate::$test($crate::common::Pool::Plain) } )*
        }
    };
}

static HOMES: AtomicUsize = AtomicUsize::new(0);

impl TestHome {
    /// A home on `pool`, initialised, whose driver is checked to be the
    /// pool's. `name` (short: it ends up in socket paths) names the
    /// directory and seeds the port range.
    pub fn new(pool: Pool, name: &str) -> TestHome {
        let home = TestHome::bare(pool, name);
        let report = home.init(&[]);
        assert_eq!(
            report["driver"],
            pool.driver(),
            "init on {} picked the wrong driver: {report:#}",
            pool.env()
        );
        home
    }

    /// A home directory on `pool` with its ports reserved, not initialised.
    pub fn bare(pool: Pool, name: &str) -> TestHome {
        TestHome::bare_in(&pool.dir(), pool, name)
    }

    /// Like [`TestHome::bare`], in directory `base` (a filesystem of the
    /// kind `pool` names, such as a [`LoopMount`]).
    pub fn bare_in(base: &Path, pool: Pool, name: &str) -> TestHome {
        let n = HOMES.fetch_add(1, Ordering::SeqCst);
        let root = base.join(format!("{name}-{}-{n}", std::process::id()));
        if root.exists() {
            panic!("{} exists already", root.display());
        }
        let lock = PortLock::reserve(name);
        TestHome {
            root,
            pool,
            ports: lock.range,
            stderr: Mutex::new(String::new()),
            _ports: lock,
        }
    }

    /// `pgfork init` with this home's port range and `extra` options;
    /// returns its JSON report, asserting success.
    pub fn init(&self, extra: &[&str]) -> Value {
        let ports = format!("{}-{}", self.ports.0, self.ports.1);
        let mut args = vec!["init", "--ports", &ports];
        args.extend_from_slice(extra);
        self.json(&args)
    }

    /// A `pgfork --home HOME ARGS` command with a clean environment (no
    /// failpoint, no log filter, no other home), ready to adjust and run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(PGFORK);
        cmd.arg("--home")
            .arg(&self.root)
            .args(args)
            .env_remove(FAILPOINT_ENV)
            .env_remove("PGFORK_HOME")
            .env_remove("PGFORK_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a command made by [`TestHome::command`], recording its stderr.
    pub fn output(&self, cmd: &mut Command) -> Output {
        let out = cmd.output().expect("run pgfork");
        let mut seen = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Runs `pgfork ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.output(&mut self.command(args))
    }

    /// Runs `pgfork ARGS`, asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "pgfork {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs `pgfork --json ARGS`, asserts success and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("pgfork {} printed no JSON ({e}): {out}", args.join(" ")))
    }

    /// The names of the branches `branch list` shows.
    pub fn branch_names(&self) -> Vec<String> {
        self.json(&["branch", "list"])
            .as_array()
            .expect("branch list is an array")
            .iter()
            .map(|b| b["name"].as_str().expect("a branch's name").to_string())
            .collect()
    }

    /// Runs `pgfork --json ARGS`, asserts it fails the documented way (exit
    /// code 1, a JSON error object on stdout) and returns the error.
    pub fn fails(&self, args: &[&str]) -> CmdError {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        parse_error(&out, &all)
    }

    /// Runs `pgfork ARGS` (human output), asserts exit code 1 and an
    /// `error: ...` line on stderr, and returns stderr.
    pub fn fails_human(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "pgfork {} should fail with exit code 1:\nstdout: {}\nstderr: {stderr}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains("error: "),
            "no `error:` on stderr: {stderr}"
        );
        stderr
    }

    /// Runs `pgfork ARGS` with failpoint `name` armed and asserts that
    /// pgfork killed itself there (SIGKILL), which proves the point was
    /// reached.
    pub fn crash_at(&self, name: &str, args: &[&str]) {
        let out = self.output(self.command(args).env(FAILPOINT_ENV, name));
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "pgfork {} with failpoint {name} should have been SIGKILLed there, got {}:\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Everything the commands of this home have written on stderr.
    pub fn stderr_seen(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The pool directory inside the home.
    pub fn pool_dir(&self) -> PathBuf {
        self.root.join("pool")
    }

    /// `source create NAME`, returning its JSON.
    pub fn create_source(&self, name: &str) -> Value {
        let info = self.json(&["source", "create", name]);
        assert_eq!(info["status"], "running", "{info:#}");
        info
    }

    /// The application DSN of a source (with password).
    pub fn source_dsn(&self, name: &str) -> String {
        self.json(&["source", "dsn", name])["dsn"]
            .as_str()
            .expect("dsn")
            .to_string()
    }

    /// `snapshot create OF`, returning its JSON.
    pub fn snapshot(&self, of: &str) -> Value {
        let info = self.json(&["snapshot", "create", of]);
        assert_eq!(info["status"], "ready", "{info:#}");
        info
    }

    /// `branch create NAME --from FROM EXTRA...`, returning its JSON (whose
    /// `dsn` carries the password).
    pub fn create_branch(&self, name: &str, from: &str, extra: &[&str]) -> Value {
        let mut args = vec!["branch", "create", name, "--from", from];
        args.extend_from_slice(extra);
        let info = self.json(&args);
        assert_eq!(info["status"], "running", "{info:#}");
        info
    }

    /// `branch info NAME` as JSON (password masked).
    pub fn branch(&self, name: &str) -> Value {
        self.json(&["branch", "info", name])
    }

    /// The DSN of a branch (with password).
    pub fn branch_dsn(&self, name: &str) -> String {
        self.json(&["branch", "dsn", name])["dsn"]
            .as_str()
            .expect("dsn")
            .to_string()
    }

    /// The unix socket directory of a branch.
    pub fn branch_socket(&self, name: &str) -> PathBuf {
        self.root.join("run").join(format!("branch-{name}"))
    }

    /// A superuser connection to a branch over its unix socket.
    pub fn branch_superuser(&self, name: &str, dbname: &str) -> postgres::Client {
        let port = port_of(&self.branch(name));
        superuser(&self.branch_socket(name), port, dbname)
    }

    /// A superuser connection to a source over its unix socket.
    pub fn source_superuser(&self, name: &str, dbname: &str) -> postgres::Client {
        let info = self.json(&["source", "info", name]);
        let socket = PathBuf::from(info["socket_dir"].as_str().expect("socket_dir"));
        superuser(&socket, port_of(&info), dbname)
    }

    /// Asserts that the home holds exactly what its rows say and nothing
    /// else: what a reconcile must leave after any crash.
    ///
    /// - every directory under `pool/{sources,snapshots,branches}` has a
    ///   row, and every row its directory;
    /// - nothing is half-done (every status is `running` or `stopped`);
    /// - `run/` and `logs/` hold entries of known sources and branches only
    ///   (no `seal-*` left over);
    /// - every process working under the home belongs to a running source
    ///   or branch, and every running one has its postmaster;
    /// - every port of the range not held by a row can be bound, and the
    ///   ports of running servers cannot (but those of branches without TCP,
    ///   made for the proxy's agents).
    pub fn assert_settled(&self) {
        let sources = self.json(&["source", "list"]);
        let branches = self.json(&["branch", "list"]);
        let snapshots = self.json(&["snapshot", "list"]);
        let names = |list: &Value| -> BTreeSet<String> {
            list.as_array()
                .expect("list")
                .iter()
                .map(|o| o["name"].as_str().expect("name").to_string())
                .collect()
        };
        let source_names = names(&sources);
        let branch_names = names(&branches);
        let snapshot_numbers: BTreeSet<String> = snapshots
            .as_array()
            .expect("list")
            .iter()
            .map(|s| s["number"].to_string())
            .collect();

        let pool = self.pool_dir();
        assert_eq!(
            entries(&pool.join("sources")),
            source_names,
            "source directories vs rows"
        );
        assert_eq!(
            entries(&pool.join("branches")),
            branch_names,
            "branch directories vs rows"
        );
        assert_eq!(
            entries(&pool.join("snapshots")),
            snapshot_numbers,
            "snapshot directories vs rows"
        );

        let mut servers: BTreeMap<String, &Value> = BTreeMap::new();
        for (kind, list) in [("source", &sources), ("branch", &branches)] {
            for o in list.as_array().expect("list") {
                servers.insert(format!("{kind}-{}", o["name"].as_str().expect("name")), o);
            }
        }
        for s in snapshots.as_array().expect("list") {
            assert_eq!(s["status"], "ready", "unfinished snapshot: {s:#}");
        }
        for (key, o) in &servers {
            let status = o["status"].as_str().expect("status");
            assert!(
                status == "running" || status == "stopped",
                "{key} is left '{status}': {o:#}"
            );
        }

        for entry in entries(&self.root.join("run")) {
            assert!(
                servers.contains_key(&entry),
                "run/{entry} belongs to no source or branch"
            );
        }
        for entry in entries(&self.root.join("logs")) {
            let key = entry.strip_suffix(".log").unwrap_or(&entry);
            assert!(
                servers.contains_key(key),
                "logs/{entry} belongs to no source or branch"
            );
        }

        let running: BTreeMap<PathBuf, i64> = servers
            .values()
            .filter(|o| o["status"] == "running")
            .map(|o| {
                let dir = PathBuf::from(o["data_dir"].as_str().expect("data_dir"));
                (dir, o["pid"].as_i64().expect("running server has a pid"))
            })
            .collect();
        for (pid, cwd) in processes_under(&self.root) {
            assert!(
                running.contains_key(&cwd),
                "process {pid} ({}) works in {} which is no running source or branch",
                comm(pid),
                cwd.display()
            );
        }
        for (dir, pid) in &running {
            let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok();
            assert_eq!(
                cwd.as_deref(),
                Some(dir.as_path()),
                "the postmaster {pid} of {} is not running",
                dir.display()
            );
        }

        // A branch made for the proxy's agents has no TCP listener: its
        // port is only reserved.
        let mut held = BTreeMap::new();
        for o in servers.values() {
            held.insert(port_of(o), o["status"] == "running" && o["tcp"] != false);
        }
        for port in self.ports.0..=self.ports.1 {
            match held.get(&port) {
                None => assert!(port_is_free(port), "port {port} is held by nobody yet busy"),
                Some(true) => assert!(!port_is_free(port), "port {port} should be served"),
                Some(false) => {}
            }
        }
    }
}

impl TestHome {
    /// The port meta.db records for branch `name`, read straight from
    /// meta.db (no pgfork command, which would reconcile first).
    pub fn recorded_port(&self, name: &str) -> Option<u16> {
        let db = rusqlite::Connection::open_with_flags(
            self.root.join("meta.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        db.query_row("SELECT port FROM branches WHERE name = ?1", [name], |r| {
            r.get::<_, u16>(0)
        })
        .ok()
    }

    /// The control group directories meta.db records for this home's
    /// servers (issue 12), read straight from meta.db.
    pub fn recorded_cgroups(&self) -> Vec<PathBuf> {
        let Ok(db) = rusqlite::Connection::open_with_flags(
            self.root.join("meta.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        ) else {
            return Vec::new();
        };
        let Ok(mut stmt) = db.prepare("SELECT path FROM cgroups ORDER BY path") else {
            return Vec::new(); // A meta.db older than the table.
        };
        stmt.query_map([], |r| r.get::<_, String>(0))
            .map(|rows| rows.flatten().map(PathBuf::from).collect())
            .unwrap_or_default()
    }
}

/// Last resort for a test that failed half-way: removes control groups
/// pgfork recorded and no longer needs (their processes were killed), and
/// their `pgfork-HOMEID-*` parents once empty. rmdir only: a group with a
/// process in it stays (and is reported).
fn remove_cgroups(paths: &[PathBuf]) {
    for path in paths {
        if !path.exists() {
            continue;
        }
        let mut removed = false;
        for _ in 0..100 {
            if fs::remove_dir(path).is_ok() || !path.exists() {
                removed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !removed {
            eprintln!("cleanup: could not remove control group {}", path.display());
            continue;
        }
        // BASE/pgfork-HOMEID-KIND/NAME: the parent too, if empty.
        if let Some(parent) = path.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        let cgroups = self.recorded_cgroups();
        if self.root.join("meta.db").exists() {
            let out = self.command(&["--json", "source", "list"]).output();
            let sources: Vec<String> = out
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect();
            for name in sources {
                let ok = self
                    .command(&["source", "delete", &name, "--force"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !ok {
                    eprintln!(
                        "cleanup: could not delete source {name} of {}",
                        self.root.display()
                    );
                }
            }
        }
        // Last resort: whatever still works under the home (a test that
        // failed half-way, a postmaster pgfork lost track of).
        let leftovers = processes_under(&self.root);
        for (pid, _) in &leftovers {
            // SAFETY: plain kill(2) of a process of this test's home.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        for (pid, _) in &leftovers {
            wait_gone(*pid, Duration::from_secs(5));
        }
        remove_cgroups(&cgroups);
        let pool = self.pool_dir();
        if is_mountpoint(&pool) {
            let _ = Command::new("umount").arg(&pool).status();
        }
        if self.root.exists()
            && let Err(e) = fs::remove_dir_all(&self.root)
        {
            eprintln!("cleanup: could not remove {}: {e}", self.root.display());
        }
    }
}

fn parse_error(out: &Output, args: &[&str]) -> CmdError {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "pgfork {} should fail with exit code 1:\nstdout: {stdout}\nstderr: {stderr}",
        args.join(" ")
    );
    let value: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "error of pgfork {} is not JSON ({e}): {stdout}",
            args.join(" ")
        )
    });
    let code = value["error"]["code"].as_str().unwrap_or_default();
    let message = value["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !code.is_empty() && !message.is_empty(),
        "error object lacks code or message: {value:#}"
    );
    CmdError {
        code: code.into(),
        message: message.into(),
        stderr,
    }
}

/// A reserved range of ports, released on drop.
struct PortLock {
    range: (u16, u16),
    file: PathBuf,
}

impl PortLock {
    /// Reserves the first free slot at or after the one `name` hashes to,
    /// by creating its lock file. A lock whose process is gone is stale and
    /// taken over.
    fn reserve(name: &str) -> PortLock {
        let dir = std::env::temp_dir().join("pgfork-test-ports");
        fs::create_dir_all(&dir).expect("port lock directory");
        let start = name
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
            % PORT_SLOTS as u32;
        for i in 0..PORT_SLOTS as u32 {
            let slot = ((start + i) % PORT_SLOTS as u32) as u16;
            let file = dir.join(slot.to_string());
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
            {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    let first = PORT_BASE + slot * PORTS_PER_HOME;
                    return PortLock {
                        range: (first, first + PORTS_PER_HOME - 1),
                        file,
                    };
                }
                Err(_) => {
                    let owner: Option<i32> = fs::read_to_string(&file)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    let alive = owner.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                    // An empty file is being written right now: leave it.
                    if owner.is_some() && !alive {
                        let _ = fs::remove_file(&file);
                    }
                }
            }
        }
        panic!("no free port slot in {}", dir.display());
    }
}

impl Drop for PortLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
    }
}

/// Names in a directory (empty if it does not exist).
pub fn entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The `port` field of a JSON object.
pub fn port_of(info: &Value) -> u16 {
    info["port"].as_u64().expect("port") as u16
}

/// The `dsn` field of a JSON object.
pub fn dsn_of(info: &Value) -> String {
    info["dsn"].as_str().expect("dsn").to_string()
}

/// The password inside a `postgres://user:password@host...` DSN.
pub fn password_of(dsn: &str) -> String {
    let rest = dsn.strip_prefix("postgres://").expect("postgres:// DSN");
    let userinfo = rest.split('@').next().expect("userinfo");
    let (_, password) = userinfo.split_once(':').expect("DSN with a password");
    password.to_string()
}

/// Connects with a DSN as a client application would.
pub fn connect(dsn: &str) -> postgres::Client {
    try_connect(dsn).unwrap_or_else(|e| panic!("connect to {}: {}", redact(dsn), describe(&e)))
}

/// Tries to connect with a DSN; the error, if any.
pub fn try_connect(dsn: &str) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = dsn.parse().expect("DSN parses");
    config.connect_timeout(Duration::from_secs(10));
    config.connect(postgres::NoTls)
}

/// A superuser connection over a unix socket, as pgfork itself makes.
pub fn superuser(socket_dir: &Path, port: u16, dbname: &str) -> postgres::Client {
    postgres::Config::new()
        .host_path(socket_dir)
        .port(port)
        .user("postgres")
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(10))
        .connect(postgres::NoTls)
        .unwrap_or_else(|e| {
            panic!(
                "superuser connect via {}: {}",
                socket_dir.display(),
                describe(&e)
            )
        })
}

/// A DSN with its password masked, for failure messages.
pub fn redact(dsn: &str) -> String {
    match dsn.split_once('@') {
        Some((head, tail)) => match head.rsplit_once(':') {
            Some((user, _)) if user.contains("//") => format!("{user}:***@{tail}"),
            _ => dsn.to_string(),
        },
        None => dsn.to_string(),
    }
}

/// A client error with the server's message, which `Display` leaves out.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", e, db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// The single value of a query returning one `bigint`-compatible column.
pub fn scalar(client: &mut postgres::Client, sql: &str) -> i64 {
    client
        .query_one(&format!("SELECT ({sql})::bigint"), &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

/// The single text value of a query.
pub fn text(client: &mut postgres::Client, sql: &str) -> String {
    client
        .query_one(&format!("SELECT ({sql})::text"), &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

/// Runs SQL statements, panicking with the statement on failure.
pub fn exec(client: &mut postgres::Client, sql: &str) {
    client
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
}

/// Creates table `items` with `rows` rows tagged `tag` (as the role of
/// `client`), so that where data came from can be told apart later.
pub fn load_items(client: &mut postgres::Client, tag: &str, rows: i64) {
    exec(
        client,
        &format!(
            "CREATE TABLE IF NOT EXISTS items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
                                              tag text NOT NULL, payload text NOT NULL);
             CREATE INDEX IF NOT EXISTS items_tag ON items (tag);
             INSERT INTO items (tag, payload)
             SELECT '{tag}', md5(g::text) FROM generate_series(1, {rows}) g;"
        ),
    );
}

/// Rows of `items` carrying `tag`.
pub fn tagged(client: &mut postgres::Client, tag: &str) -> i64 {
    scalar(
        client,
        &format!("SELECT count(*) FROM items WHERE tag = '{tag}'"),
    )
}

/// A PostgreSQL client program (pgbench, pg_amcheck, psql...).
pub fn pg_tool(name: &str) -> PathBuf {
    let dir = match std::env::var_os("PGFORK_TEST_PG_BIN") {
        Some(d) => PathBuf::from(d),
        None => {
            let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
                .expect("/usr/lib/postgresql (install postgresql, or set PGFORK_TEST_PG_BIN)")
                .flatten()
                .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
                .collect();
            versions.sort();
            versions.pop().expect("a PostgreSQL version").1
        }
    };
    let tool = dir.join(name);
    assert!(tool.is_file(), "{} is missing", tool.display());
    tool
}

/// Runs a client program to completion, asserting success; returns stdout.
pub fn run_tool(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{:?} failed ({}):\nstdout: {}\nstderr: {}",
        cmd.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `pg_amcheck` of every database of the server on `socket_dir` and
/// `port`, as the superuser: every heap and index, each index entry
/// checked against the heap (the amcheck extension is installed where it
/// is missing). `Err` carries what it reported.
pub fn amcheck(socket_dir: &Path, port: u16) -> Result<(), String> {
    let out = Command::new(pg_tool("pg_amcheck"))
        .args(["--install-missing", "--heapallindexed", "--all"])
        .arg("--host")
        .arg(socket_dir)
        .args(["--port", &port.to_string(), "--username", "postgres"])
        .arg("--no-password")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run pg_amcheck: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.trim().is_empty() {
        return Ok(());
    }
    Err(format!(
        "pg_amcheck on {}:{port} ({}):\n{stdout}{}",
        socket_dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `pgbench -i -s SCALE` into the database of `dsn`, as its role.
pub fn pgbench_init(dsn: &str, scale: u32) {
    run_tool(
        Command::new(pg_tool("pgbench"))
            .args(["-i", "-q", "-s", &scale.to_string(), dsn])
            .env("PGCONNECT_TIMEOUT", "10"),
    );
}

/// Processes whose working directory is `dir` or below, as (pid, cwd).
/// Zombies have no working directory and are not listed.
pub fn processes_under(dir: &Path) -> Vec<(i32, PathBuf)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(cwd) = fs::read_link(entry.path().join("cwd"))
            && cwd.starts_with(dir)
        {
            found.push((pid, cwd));
        }
    }
    found
}

/// The command name of a process, for messages.
pub fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Whether a process exists and is not a zombie.
pub fn is_running(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_string));
            !matches!(state.as_deref(), Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Waits until process `pid` has exited (or is a zombie).
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    wait_until(timeout, || !is_running(pid))
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, check: impl FnMut() -> bool) -> bool {
    poll_until(timeout, Duration::from_millis(20), check)
}

/// Polls `check` every `every` until it holds or `timeout` passes.
pub fn poll_until(timeout: Duration, every: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Whether nothing listens on 127.0.0.1:`port` (binding it works).
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Whether `path` is a mount point, from `/proc/self/mountinfo`.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(real) = fs::canonicalize(path) else {
        return false;
    };
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(mp) == real)
}

/// Every file under `dir`, recursively, as (path, content).
pub fn read_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(content) = fs::read(&p) {
                out.push((p, content));
            }
        }
    }
    out
}

/// Extents of a file as `filefrag -v` (FIEMAP) reports them: how many
/// there are, and how many of them share their blocks with another file.
pub fn extents(path: &Path) -> (usize, usize) {
    let report = run_tool(Command::new("filefrag").arg("-v").arg(path));
    let rows: Vec<&str> = report
        .lines()
        .filter(|l| {
            l.trim_start()
                .split(':')
                .next()
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    let shared = rows.iter().filter(|l| l.contains("shared")).count();
    (rows.len(), shared)
}

/// Total size of the regular files under `dir`.
pub fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The SQLSTATE of a failed statement, or a panic if it succeeded.
pub fn sqlstate(result: Result<impl Sized, postgres::Error>, what: &str) -> String {
    match result {
        Ok(_) => panic!("{what} succeeded but must be refused"),
        Err(e) => e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| panic!("{what} failed without SQLSTATE: {e}")),
    }
}

/// Seconds since the epoch of an RFC 3339 UTC time as pgfork prints it
/// (`2026-01-31T12:00:00Z`).
pub fn rfc3339_secs(text: &str) -> i64 {
    let n = |range: std::ops::Range<usize>| -> i64 {
        text.get(range)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an RFC 3339 time: {text}"))
    };
    assert!(
        text.len() == 20 && text.ends_with('Z'),
        "not an RFC 3339 UTC time: {text}"
    );
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    days * 86400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// The first check named `name` of a `doctor --json` report.
pub fn doctor_check(report: &Value, name: &str) -> Value {
    report["checks"]
        .as_array()
        .expect("doctor's checks")
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("doctor has no '{name}' check: {report:#}"))
}
