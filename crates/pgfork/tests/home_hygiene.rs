//! Host hygiene of the home, played as the attacks a local user would try:
//! a home prepared by someone else, a planted `meta.db` link, world-readable
//! files (the pool image holds every row and every SCRAM verifier) and a
//! tick lock any user could hold. Modes are read back with
//! `symlink_metadata`, so a link never stands in for what it points to.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// uid and gid of `nobody`.
const NOBODY: u32 = 65534;

/// Permission bits of `path` itself (never of what a link points to).
fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `pgfork --json doctor`: its exit code and its one JSON document.
fn doctor(h: &TestHome) -> (Option<i32>, Value) {
    let out = h.run(&["--json", "doctor"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("doctor printed no single JSON document ({e}): {stdout}"));
    (out.status.code(), report)
}

/// The failed checks of a doctor report named `name`, by detail.
fn failed(report: &Value, name: &str) -> Vec<String> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["name"] == name && c["status"] == "fail")
        .map(|c| c["detail"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn assert_refused_home(err: &CmdError, needles: &[&str]) {
    assert_eq!(err.code, "unsafe_home", "{err:?}");
    for needle in needles {
        assert!(
            err.message.contains(needle),
            "no {needle:?} in: {}",
            err.message
        );
    }
}

/// A directory that another user made and left writable by everyone is
/// refused as it was found: nothing written into it, owner and mode kept.
#[test]
fn init_refuses_a_home_another_user_prepared() {
    let h = TestHome::bare(Pool::Plain, "foreign");
    fs::create_dir(&h.root).unwrap();
    chown(&h.root, Some(NOBODY), Some(NOBODY)).unwrap();
    chmod(&h.root, 0o777);

    let err = h.fails(&["init"]);
    assert_refused_home(
        &err,
        &["uid 65534", "0777", "--home", "chown", "chmod 0711"],
    );
    assert!(
        entries(&h.root).is_empty(),
        "init wrote into a refused home: {:?}",
        entries(&h.root)
    );
    let meta = fs::symlink_metadata(&h.root).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (NOBODY, 0o777));

    // Owned by root but writable by everyone: refused too.
    chown(&h.root, Some(0), Some(0)).unwrap();
    let err = h.fails(&["init"]);
    assert_refused_home(&err, &["0777", "writable by other users"]);
    assert!(entries(&h.root).is_empty());

    // Once made safe as the message says, the same directory is adopted.
    chmod(&h.root, 0o711);
    h.init(&[]);
    assert!(h.root.join("meta.db").is_file());
}

/// A directory above the home that others can write lets them swap the
/// home for their own: refused unless it is sticky (like /tmp).
#[test]
fn init_refuses_a_home_under_a_directory_others_can_write() {
    let parent = Pool::Plain
        .dir()
        .join(format!("above-{}", std::process::id()));
    fs::create_dir(&parent).unwrap();
    chmod(&parent, 0o777);
    {
        let h = TestHome::bare_in(&parent, Pool::Plain, "above");
        let err = h.fails(&["init"]);
        assert_refused_home(&err, &["writable by other users", "chmod go-w"]);
        assert!(!h.root.exists(), "init made the home anyway");

        // The sticky bit keeps others from renaming what is not theirs.
        chmod(&parent, 0o1777);
        h.init(&[]);
        assert_eq!(mode(&h.root), 0o711);
    }
    fs::remove_dir(&parent).unwrap();
}

/// A `meta.db` link planted before `init` is refused and what it points to
/// is left as it was; so is a link put in place of an initialised home's
/// meta.db, by every command.
#[test]
fn planted_meta_db_links_are_refused() {
    let h = TestHome::bare(Pool::Plain, "link");
    fs::create_dir(&h.root).unwrap();
    chmod(&h.root, 0o711);
    let target = h.root.with_extension("target");
    fs::write(&target, b"precious, not a database").unwrap();
    chmod(&target, 0o644);
    symlink(&target, h.root.join("meta.db")).unwrap();

    let err = h.fails(&["init"]);
    assert_refused_home(&err, &["meta.db", "symbolic link"]);
    assert_eq!(fs::read(&target).unwrap(), b"precious, not a database");
    assert_eq!(mode(&target), 0o644, "init changed the link's target");
    assert_eq!(entries(&h.root), ["meta.db".to_string()].into());
    fs::remove_file(h.root.join("meta.db")).unwrap();
    fs::remove_file(&target).unwrap();

    // An initialised home whose meta.db is swapped for a link to a real
    // database elsewhere (so that following it would work).
    let h = TestHome::new(Pool::Plain, "link2");
    let elsewhere = h.root.with_extension("meta.db");
    fs::rename(h.root.join("meta.db"), &elsewhere).unwrap();
    symlink(&elsewhere, h.root.join("meta.db")).unwrap();
    let before = fs::read(&elsewhere).unwrap();
    for args in [
        ["branch", "list"].as_slice(),
        &["source", "create", "shop"],
        &["token", "rotate"],
        &["init"],
    ] {
        let err = h.fails(args);
        assert_refused_home(&err, &["meta.db", "symbolic link"]);
    }
    let (code, report) = doctor(&h);
    assert_eq!(code, Some(1), "{report:#}");
    assert!(
        failed(&report, "home safety")
            .iter()
            .any(|d| d.contains("meta.db") && d.contains("symbolic link")),
        "{report:#}"
    );
    assert_eq!(fs::read(&elsewhere).unwrap(), before, "the target changed");

    // A link in place of the logs directory is refused the same way.
    fs::remove_file(h.root.join("meta.db")).unwrap();
    fs::rename(&elsewhere, h.root.join("meta.db")).unwrap();
    let logs_elsewhere = h.root.with_extension("logs");
    fs::rename(h.root.join("logs"), &logs_elsewhere).unwrap();
    symlink(&logs_elsewhere, h.root.join("logs")).unwrap();
    let err = h.fails(&["source", "create", "shop"]);
    assert_refused_home(&err, &["logs", "symbolic link"]);
    assert!(
        entries(&logs_elsewhere).is_empty(),
        "a log was written through the link"
    );
    fs::remove_file(h.root.join("logs")).unwrap();
    fs::rename(&logs_elsewhere, h.root.join("logs")).unwrap();
    h.ok(&["branch", "list"]);
}

/// Every file and directory pgfork made has the narrowest mode that works,
/// with a pool image, a source (its logs) and a tick (its lock).
#[test]
fn everything_in_a_home_has_the_narrowest_mode() {
    let h = TestHome::bare(Pool::Plain, "modes");
    h.init(&["--pool-image", "1G", "--fs", "xfs"]);
    h.create_source("shop");
    h.ok(&["tick"]);
    h.ok(&["snapshot", "create", "shop"]);

    let root = &h.root;
    assert_eq!(mode(root), 0o711, "home");
    for file in ["pool.img", "meta.db", "tick.lock"] {
        assert_eq!(mode(&root.join(file)), 0o600, "{file}");
    }
    for file in ["meta.db-wal", "meta.db-shm"] {
        if root.join(file).exists() {
            assert_eq!(mode(&root.join(file)), 0o600, "{file}");
        }
    }
    for dir in [
        "pool",
        "pool/sources",
        "pool/snapshots",
        "pool/branches",
        "pool/staging",
        "pool/views",
        "run",
    ] {
        assert_eq!(mode(&root.join(dir)), 0o711, "{dir}");
    }
    assert_eq!(mode(&root.join("pool/dumps")), 0o700, "pool/dumps");
    assert_eq!(mode(&root.join("logs")), 0o700, "logs");
    let logs = entries(&root.join("logs"));
    assert!(
        logs.contains("source-shop.log"),
        "no source log in {logs:?}"
    );
    for log in &logs {
        assert_eq!(mode(&root.join("logs").join(log)), 0o600, "logs/{log}");
    }
    // Made only by a physical source: 0711 as root (the standby, another
    // OS user, reads its passfile by name), 0700 otherwise.
    if root.join("secrets").exists() {
        assert_eq!(mode(&root.join("secrets")) & !0o711, 0, "secrets");
    }
    // Everything pgfork made directly in the home is its own.
    for name in entries(root) {
        assert_eq!(
            fs::symlink_metadata(root.join(&name)).unwrap().uid(),
            0,
            "{name}"
        );
    }
    let (code, report) = doctor(&h);
    assert_eq!(code, Some(0), "{report:#}");
}

/// `nobody` cannot open the tick lock, so cannot hold it (a shared flock
/// needs only read access) to keep every tick out.
#[test]
fn another_user_cannot_hold_the_tick_lock() {
    let h = TestHome::new(Pool::Xfs, "lock");
    h.ok(&["tick"]);
    let lock = h.root.join("tick.lock");
    assert_eq!(mode(&lock), 0o600);

    let as_nobody = |script: &str| {
        Command::new("/bin/sh")
            .args(["-c", script, "sh"])
            .arg(&lock)
            .uid(NOBODY)
            .gid(NOBODY)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run as nobody")
    };
    // nobody can reach the lock (the home is 0711): only its mode stops it.
    let reach = as_nobody("test -e \"$1\"").wait_with_output().unwrap();
    assert!(
        reach.status.success(),
        "nobody cannot even reach {}",
        lock.display()
    );

    // Would hold the lock for a minute if it could open it.
    let mut holder = as_nobody("exec flock -s \"$1\" sleep 60");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = holder.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = holder.kill();
            let _ = holder.wait();
            panic!("nobody is holding the tick lock");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(holder.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("Permission denied"), "{stderr}");
    let report = h.json(&["tick"]);
    assert!(
        report["errors"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
}

/// doctor fails on modes wider than needed (as a home of an older pgfork
/// has them); init narrows them, and doctor passes again.
#[test]
fn doctor_reports_wide_modes_and_init_narrows_them() {
    let h = TestHome::new(Pool::Xfs, "wide");
    let (code, report) = doctor(&h);
    assert_eq!(code, Some(0), "{report:#}");

    let meta_db = h.root.join("meta.db");
    let logs: PathBuf = h.root.join("logs");
    chmod(&meta_db, 0o644);
    chmod(&logs, 0o755);
    let (code, report) = doctor(&h);
    assert_eq!(code, Some(1), "{report:#}");
    let wide = failed(&report, "home modes");
    assert_eq!(wide.len(), 2, "{report:#}");
    assert!(
        wide.iter()
            .any(|d| d.contains("meta.db has mode 0644") && d.contains("pgfork init")),
        "{wide:?}"
    );
    assert!(
        wide.iter().any(|d| d.contains("logs has mode 0755")),
        "{wide:?}"
    );
    // doctor changed nothing.
    assert_eq!((mode(&meta_db), mode(&logs)), (0o644, 0o755));

    let report = h.init(&[]);
    assert!(
        report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("narrowed")),
        "{report:#}"
    );
    assert_eq!((mode(&meta_db), mode(&logs)), (0o600, 0o700));
    let (code, report) = doctor(&h);
    assert_eq!(code, Some(0), "{report:#}");
    assert!(failed(&report, "home modes").is_empty());
}
