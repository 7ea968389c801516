//! Bad input and hostile conditions: each refused with an error that says
//! what to do, a stable JSON code, and nothing lost or left behind.

mod common;

use std::fs;
use std::os::fd::AsRawFd;

use common::*;
use serde_json::json;

/// Names of the objects in a JSON list.
fn names(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .expect("list")
        .iter()
        .map(|o| o["name"].as_str().or(o["id"].as_str()).unwrap().to_string())
        .collect()
}

#[test]
fn bad_and_duplicate_names_are_refused_and_nothing_is_lost() {
    let h = TestHome::new(Pool::Plain, "names");
    h.create_source("shop");
    load_items(&mut connect(&h.source_dsn("shop")), "base", 10);
    let feat = h.create_branch("feat", "shop", &[]);

    let too_long = "a".repeat(49);
    for bad in [
        "Shop",
        "1abc",
        "a b",
        "a/b",
        "x;drop",
        "postgres",
        "pg_x",
        too_long.as_str(),
    ] {
        for args in [
            vec!["source", "create", bad],
            vec!["branch", "create", bad, "--from", "shop"],
        ] {
            let err = h.fails(&args);
            assert_eq!(err.code, "invalid_name", "{args:?}: {}", err.message);
            assert!(
                err.message.contains(bad),
                "the message names the input: {}",
                err.message
            );
        }
    }
    // Sources and branches share one namespace.
    for args in [
        ["source", "create", "shop"].as_slice(),
        &["source", "create", "feat"],
        &["branch", "create", "shop", "--from", "shop"],
        &["branch", "create", "feat", "--from", "shop"],
    ] {
        let err = h.fails(args);
        assert_eq!(err.code, "name_taken", "{args:?}");
        assert!(
            err.message.contains("already exists") && err.message.contains("namespace"),
            "{}",
            err.message
        );
    }
    let human = h.fails_human(&["source", "create", "Shop"]);
    assert!(human.contains("error: invalid name 'Shop'"), "{human}");

    // Nothing was lost or half-made.
    assert_eq!(names(&h.json(&["source", "list"])), ["shop"]);
    assert_eq!(names(&h.json(&["branch", "list"])), ["feat"]);
    assert_eq!(names(&h.json(&["snapshot", "list"])), ["shop@1"]);
    assert_eq!(h.branch_dsn("feat"), dsn_of(&feat));
    assert_eq!(tagged(&mut connect(&dsn_of(&feat)), "base"), 10);
    h.assert_settled();
}

#[test]
fn unknown_objects_are_refused_with_stable_codes() {
    let h = TestHome::new(Pool::Plain, "unknown");
    let cases: &[(&[&str], &str)] = &[
        (&["source", "info", "nope"], "unknown_source"),
        (&["source", "dsn", "nope"], "unknown_source"),
        (&["source", "start", "nope"], "unknown_source"),
        (&["source", "stop", "nope"], "unknown_source"),
        (&["source", "delete", "nope", "--force"], "unknown_source"),
        (&["snapshot", "list", "--source", "nope"], "unknown_source"),
        (&["branch", "info", "nope"], "unknown_branch"),
        (&["branch", "dsn", "nope"], "unknown_branch"),
        (&["branch", "start", "nope"], "unknown_branch"),
        (&["branch", "stop", "nope"], "unknown_branch"),
        (&["branch", "reset", "nope"], "unknown_branch"),
        (&["branch", "delete", "nope"], "unknown_branch"),
        (&["branch", "set", "nope", "--protect"], "unknown_branch"),
        (&["snapshot", "info", "nope@1"], "unknown_snapshot"),
        (&["snapshot", "info", "42"], "unknown_snapshot"),
        (&["snapshot", "info", "garbage"], "unknown_snapshot"),
        (&["snapshot", "delete", "nope@1"], "unknown_snapshot"),
        (&["snapshot", "create", "nope"], "unknown_origin"),
        (
            &["branch", "create", "x", "--from", "nope"],
            "unknown_origin",
        ),
        (
            &["branch", "create", "x", "--from", "nope@3"],
            "unknown_snapshot",
        ),
        (
            &["branch", "create", "x", "--from", "nope", "--ttl", "soon"],
            "invalid_argument",
        ),
        (
            &[
                "branch", "create", "x", "--from", "nope", "--label", "novalue",
            ],
            "invalid_argument",
        ),
    ];
    for (args, code) in cases {
        let err = h.fails(args);
        assert_eq!(
            err.code,
            *code,
            "pgfork {}: {}",
            args.join(" "),
            err.message
        );
        assert!(
            err.message.contains("nope")
                || err.message.contains("42")
                || err.message.contains("garbage")
                || *code == "invalid_argument",
            "the message names what was not found: {}",
            err.message
        );
    }
    let human = h.fails_human(&["branch", "info", "nope"]);
    assert!(
        human.contains("no branch named 'nope'") && human.contains("pgfork branch list"),
        "{human}"
    );

    // A home that was never initialised says so, in both output modes.
    let fresh = TestHome::bare(Pool::Plain, "noinit");
    let err = fresh.fails(&["source", "list"]);
    assert_eq!(err.code, "not_initialised");
    assert!(err.message.contains("pgfork init"), "{}", err.message);
    h.assert_settled();
}

#[test]
fn deleting_what_others_depend_on_needs_force_which_cascades() {
    let h = TestHome::new(Pool::Btrfs, "deps");
    h.create_source("base");
    h.snapshot("base");
    h.create_branch("a", "base@1", &[]);
    let c = h.create_branch("c", "a", &[]);
    let a_snap = c["snapshot"].as_str().unwrap().to_string();
    h.create_branch("d", "base@1", &[]);

    let refusals: &[(&[&str], &[&str])] = &[
        (&["snapshot", "delete", "base@1"], &["branch a", "branch d"]),
        (&["branch", "delete", "a"], &["branch c"]),
        (
            &["source", "delete", "base"],
            &["branch a", "branch c", "branch d"],
        ),
    ];
    for (args, dependents) in refusals {
        let err = h.fails(args);
        assert_eq!(err.code, "has_dependents", "{args:?}");
        for d in *dependents {
            assert!(
                err.message.contains(d),
                "{args:?} should name {d}: {}",
                err.message
            );
        }
        assert!(err.message.contains("--force"), "{}", err.message);
    }
    // Refusing deleted nothing.
    assert_eq!(names(&h.json(&["branch", "list"])), ["a", "c", "d"]);
    assert_eq!(
        names(&h.json(&["snapshot", "list"])),
        ["base@1".to_string(), a_snap.clone()]
    );
    h.assert_settled();

    // --force takes the dependents along, deepest first.
    let deleted = h.json(&["snapshot", "delete", "base@1", "--force"]);
    let mut deleted: Vec<String> = deleted["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    let mut expected = vec![
        "branch a".to_string(),
        "branch c".to_string(),
        "branch d".to_string(),
        format!("snapshot {a_snap}"),
        "snapshot base@1".to_string(),
    ];
    expected.sort();
    assert_eq!(deleted, expected);
    assert_eq!(h.json(&["branch", "list"]), json!([]));
    assert_eq!(h.json(&["snapshot", "list"]), json!([]));
    h.assert_settled();

    // And a source with everything hanging off it.
    h.create_branch("e", "base", &[]);
    let deleted = h.json(&["source", "delete", "base", "--force"]);
    assert_eq!(
        deleted["deleted"].as_array().unwrap().len(),
        3,
        "{deleted:#}"
    );
    assert_eq!(h.json(&["source", "list"]), json!([]));
    assert!(entries(&h.pool_dir().join("snapshots")).is_empty());
    h.assert_settled();
}

#[test]
fn init_without_postgres_says_how_to_install_it() {
    let h = TestHome::bare(Pool::Plain, "nopg");
    let err = h.fails(&["init", "--pg-bin", "/nonexistent/bin"]);
    assert_eq!(err.code, "no_postgres");
    for needle in ["/nonexistent/bin", "apt-get install postgresql", "--pg-bin"] {
        assert!(
            err.message.contains(needle),
            "missing '{needle}': {}",
            err.message
        );
    }
    let human = h.fails_human(&["init", "--pg-bin", "/nonexistent/bin"]);
    assert!(human.contains("apt-get install postgresql"), "{human}");
    // The failed init left nothing that stops a good one.
    assert_eq!(h.init(&[])["driver"], "copy");
}

#[test]
fn init_on_a_plain_dir_picks_copy_and_names_the_fix() {
    let h = TestHome::bare(Pool::Plain, "plain");
    let ports = format!("{}-{}", h.ports.0, h.ports.1);
    let out = h.run(&["init", "--ports", &ports]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("copy (NOT copy-on-write)"), "{stdout}");
    assert!(
        stderr.contains("warning:")
            && stderr.contains("no copy-on-write")
            && stderr.contains("--pool-image"),
        "{stderr}"
    );
    let report = h.init(&[]);
    assert_eq!(report["driver"], "copy");
    assert_eq!(report["copy_on_write"], false);
    assert_eq!(report["filesystem"], "ext4");
    assert!(
        report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("--pool-image")),
        "{report:#}"
    );
    // Asking for a copy-on-write driver here is refused with the fix.
    let bare = TestHome::bare(Pool::Plain, "plain2");
    let err = bare.fails(&["init", "--driver", "reflink"]);
    assert_eq!(err.code, "driver_unavailable");
    assert!(err.message.contains("--pool-image"), "{}", err.message);
}

#[test]
fn full_pool_during_clone_fails_cleanly_and_removes_the_partial_clone() {
    // A small filesystem of its own: filling a shared pool would break the
    // tests running next to this one.
    let disk = LoopMount::ext4(Pool::Plain, "fulldisk", 1024);
    let h = TestHome::bare_in(&disk.dir, Pool::Plain, "full");
    assert_eq!(h.init(&[])["driver"], "copy");
    h.create_source("big");
    pgbench_init(&h.source_dsn("big"), 4);
    let snap = h.snapshot("big");
    h.ok(&["source", "stop", "big"]);
    let snapshot_bytes = tree_bytes(std::path::Path::new(snap["data_dir"].as_str().unwrap()));

    // Leave half a snapshot's worth of free space.
    let filler_path = h.pool_dir().join("filler");
    let filler = fs::File::create(&filler_path).unwrap();
    let free = free_bytes(&h.pool_dir());
    assert!(free > snapshot_bytes, "the pool is too small for the test");
    let len = (free - snapshot_bytes / 2) as libc::off_t;
    // SAFETY: fallocate(2) on a file this test just created.
    let rc = unsafe { libc::fallocate(filler.as_raw_fd(), 0, 0, len) };
    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    assert!(free_bytes(&h.pool_dir()) < snapshot_bytes);

    let err = h.fails(&["branch", "create", "clone", "--from", "big@1"]);
    assert_eq!(err.code, "no_space", "{}", err.message);
    assert!(
        err.message.contains("filled up") && err.message.contains("partial clone was removed"),
        "{}",
        err.message
    );
    assert!(entries(&h.pool_dir().join("branches")).is_empty());
    assert_eq!(h.json(&["branch", "list"]), json!([]));
    h.assert_settled();

    // With room again the same branch works, with all the data.
    drop(filler);
    fs::remove_file(&filler_path).unwrap();
    let b = h.create_branch("clone", "big@1", &[]);
    assert_eq!(
        scalar(
            &mut connect(&dsn_of(&b)),
            "SELECT count(*) FROM pgbench_accounts"
        ),
        400_000
    );
    h.assert_settled();
}

/// Bytes available on the filesystem holding `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: statvfs(3) fills the zeroed struct we pass.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
        s.f_bavail * s.f_frsize
    }
}

#[test]
fn no_free_port_is_a_clear_error() {
    let h = TestHome::bare(Pool::Xfs, "noport");
    let only = format!("{0}-{0}", h.ports.0);
    h.json(&["init", "--ports", &only]);
    let src = h.create_source("solo");
    assert_eq!(port_of(&src), h.ports.0);
    h.snapshot("solo");
    let err = h.fails(&["branch", "create", "b", "--from", "solo@1"]);
    assert_eq!(err.code, "no_free_port");
    assert!(
        err.message.contains(&only) && err.message.contains("--ports"),
        "{}",
        err.message
    );
    assert_eq!(h.json(&["branch", "list"]), json!([]));
    h.assert_settled();
}

#[test]
fn postmaster_that_will_not_start_shows_its_log_and_leaves_no_process() {
    let h = TestHome::new(Pool::Btrfs, "nostart");
    h.create_source("app");
    let b = h.create_branch("broken", "app", &[]);
    let dsn = dsn_of(&b);
    load_items(&mut connect(&dsn), "kept", 3);
    h.ok(&["branch", "stop", "broken"]);

    let conf = h.pool_dir().join("branches/broken/postgresql.conf");
    let original = fs::read(&conf).unwrap();
    let mut garbage = original.clone();
    garbage.extend_from_slice(b"!!! this is not a setting\n");
    fs::write(&conf, &garbage).unwrap();

    let stderr = h.fails_human(&["branch", "start", "broken"]);
    for needle in ["did not start", "last lines of", "syntax error"] {
        assert!(stderr.contains(needle), "missing '{needle}':\n{stderr}");
    }
    let err = h.fails(&["branch", "start", "broken"]);
    assert_eq!(err.code, "start_failed");
    let dir = h.pool_dir().join("branches/broken");
    assert_eq!(
        processes_under(&dir),
        vec![],
        "a failed start left processes"
    );
    assert_eq!(h.branch("broken")["status"], "stopped");
    h.assert_settled();

    // Repaired, it starts with its data.
    fs::write(&conf, &original).unwrap();
    assert_eq!(h.json(&["branch", "start", "broken"])["status"], "running");
    assert_eq!(tagged(&mut connect(&dsn), "kept"), 3);
    h.assert_settled();
}

/// A reader that goes away (`pgfork ... | head`) ends a one-shot command
/// quietly, by SIGPIPE as Unix tools end, never with a panic.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let h = TestHome::new(Pool::Plain, "pipe");
    h.init(&[]);
    // A pipe whose read end is closed before pgfork starts.
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    let write_end =
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let out = h
        .command(&["doctor"])
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run pgfork doctor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}
