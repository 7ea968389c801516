//! A full disk during every operation that writes to the pool besides
//! branches (issue 12): creating a source, a logical import, a refresh, a
//! physical base backup, a snapshot's seal, masking, and meta.db itself.
//! Each must fail with `no_space`, a message naming what was being done,
//! about how much it needs and what still serves; leave the previous state
//! serving; and leave nothing behind.
//!
//! The home and its pool sit on an ext4 image of their own (the copy
//! driver: every copy really takes space), so that filling it breaks no
//! other test.

mod common;
mod production;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use common::*;
use production::Production;

const MIB: u64 = 1 << 20;

/// Rows of production's `bulk` table: about 150 MB.
const BULK_ROWS: i64 = 1_500_000;

/// Files that take all the free space of a filesystem but `leave` bytes,
/// removed on drop. As root, the filesystem's reserved blocks are taken too.
struct Filler {
    files: Vec<PathBuf>,
}

impl Filler {
    fn leaving(dir: &Path, leave: u64) -> Filler {
        let keep = dir.join("filler-keep");
        let mut filler = Filler { files: Vec::new() };
        if leave > 0 {
            allocate(&keep, leave).expect("room for the space to leave");
        }
        // Fill in shrinking pieces until not even a block fits.
        let mut piece = 1u64 << 30;
        let mut n = 0;
        while piece >= 4096 {
            let path = dir.join(format!("filler-{n}"));
            match allocate(&path, piece) {
                Ok(()) => {
                    filler.files.push(path);
                    n += 1;
                }
                Err(_) => {
                    let _ = fs::remove_file(&path);
                    piece /= 2;
                }
            }
        }
        if leave > 0 {
            fs::remove_file(&keep).expect("free the space to leave");
        }
        filler
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = fs::remove_file(f);
        }
    }
}

fn allocate(path: &Path, len: u64) -> std::io::Result<()> {
    let file = fs::File::create(path)?;
    // SAFETY: fallocate(2) on a file just created.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Asserts a `no_space` failure of `args` whose message names `during` and
/// `kept`, the space needed and what to do; returns the message.
fn fails_full(h: &TestHome, args: &[&str], during: &str, kept: &str) -> String {
    let err = h.fails(args);
    assert_eq!(
        err.code,
        "no_space",
        "pgfork {}: {}\n{}",
        args.join(" "),
        err.message,
        err.stderr
    );
    for part in [during, kept, "filled up while", "needs about", "pgfork gc"] {
        assert!(
            err.message.contains(part),
            "pgfork {}: the message lacks '{part}': {}",
            args.join(" "),
            err.message
        );
    }
    err.message
}

/// Nothing of a failed operation is left in the pool's work directories.
fn assert_no_leftovers(h: &TestHome, what: &str) {
    for dir in ["staging", "dumps"] {
        let left = entries(&h.pool_dir().join(dir));
        assert!(left.is_empty(), "after {what}: pool/{dir} holds {left:?}");
    }
}

#[test]
fn a_full_pool_fails_each_operation_cleanly_and_keeps_what_serves() {
    let prod = Production::start("full");
    exec(
        &mut prod.app(),
        &format!(
            "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS pad \
             FROM generate_series(1, {BULK_ROWS}) g"
        ),
    );
    let disk = LoopMount::ext4(Pool::Plain, "diskfull", 1536);
    let h = TestHome::bare_in(&disk.dir, Pool::Plain, "full");
    assert_eq!(h.init(&["--min-free", "0"])["driver"], "copy");
    let app_url = prod.url("app", "app-secret-pw");
    h.ok(&[
        "source",
        "add",
        "imp",
        "--from",
        &app_url,
        "--mode",
        "logical",
        "--save-password",
    ]);
    // Reading a freshly restored table sets its hint bits, and with data
    // checksums each such page goes to the WAL in full: 150 MB of WAL
    // the tests' nearly full pool has no room for. Set them now.
    let mut imp = h.source_superuser("imp", "shop");
    exec(&mut imp, "VACUUM (FREEZE) bulk");
    exec(&mut imp, "CHECKPOINT");
    drop(imp);
    h.create_source("loc");
    load_items(&mut connect(&h.source_dsn("loc")), "base", 100);
    let big_rules = h.root.join("big-mask.toml");
    let mut text = String::from("# ");
    text.push_str(&"x".repeat(16 << 20));
    text.push_str("\n[public.people]\nemail = \"email\"\n");
    fs::write(&big_rules, text).unwrap();
    let rules = h.root.join("mask.toml");
    fs::write(&rules, "[public.bulk]\npad = \"hash\"\n").unwrap();
    let sources = || {
        h.json(&["source", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // Over the unix socket: a copied source has no password of ours.
    let serving = |name: &str, table: &str, rows: i64| {
        let db = if name == "imp" { "shop" } else { name };
        let n = scalar(
            &mut h.source_superuser(name, db),
            &format!("SELECT count(*) FROM {table}"),
        );
        assert_eq!(n, rows, "source {name} lost rows of {table}");
    };

    // A new local source: initdb cannot write its catalogs.
    {
        let _full = Filler::leaving(&h.pool_dir(), 2 * MIB);
        fails_full(
            &h,
            &["source", "create", "other"],
            "creating source 'other'",
            "Source 'other' was not made",
        );
        assert_eq!(sources(), ["imp", "loc"]);
        assert!(!h.pool_dir().join("sources/other").exists());
    }

    // A physical source with no room for the base backup: refused before
    // anything is written, and the remote keeps no replication slot.
    {
        let _full = Filler::leaving(&h.pool_dir(), 8 * MIB);
        let msg = fails_full(
            &h,
            &[
                "source",
                "add",
                "phys",
                "--from",
                &prod.url("replicator", "rep-secret-pw"),
                "--mode",
                "physical",
                "--role",
                "app",
            ],
            "a base backup of",
            "Source 'phys' was not added",
        );
        assert!(!msg.contains("rep-secret-pw"), "{msg}");
        assert_eq!(sources(), ["imp", "loc"]);
        assert_eq!(
            scalar(
                &mut prod.superuser("postgres"),
                "SELECT count(*) FROM pg_replication_slots"
            ),
            0,
            "a failed base backup left its replication slot on the primary"
        );
    }

    // A logical import with room for the database but not for the dump
    // beside it: it passes the check up front and fails in flight.
    let database = scalar(
        &mut prod.superuser("postgres"),
        "SELECT pg_database_size('shop')",
    ) as u64;
    {
        // pgfork's check up front counts 48 MiB for a new cluster.
        let _full = Filler::leaving(&h.pool_dir(), database + 48 * MIB + 4 * MIB);
        fails_full(
            &h,
            &[
                "source", "add", "imp2", "--from", &app_url, "--mode", "logical",
            ],
            "an import of",
            "Source 'imp2' was not added",
        );
        assert_eq!(sources(), ["imp", "loc"]);
        assert_no_leftovers(&h, "the failed import");
        assert!(!h.pool_dir().join("sources/imp2").exists());
    }

    // A refresh with less room than the database: refused up front, so
    // the source keeps its room to write; the previous import serves on.
    {
        let _full = Filler::leaving(&h.pool_dir(), 100 * MIB);
        fails_full(
            &h,
            &["source", "refresh", "imp"],
            "refreshing source 'imp'",
            "still serves its previous import",
        );
        serving("imp", "bulk", BULK_ROWS);
        let info = h.json(&["source", "info", "imp"]);
        assert_eq!(info["status"], "running", "{info:#}");
        assert!(
            info.to_string().contains("filled up while refreshing"),
            "the failed refresh is not recorded: {info:#}"
        );
        assert_no_leftovers(&h, "the failed refresh");
    }

    // A snapshot whose copy fits but whose seal cannot write its WAL.
    {
        let copy = tree_bytes(&h.pool_dir().join("sources/loc"));
        let _full = Filler::leaving(&h.pool_dir(), copy + 4 * MIB);
        fails_full(
            &h,
            &["snapshot", "create", "loc"],
            "taking a snapshot of loc",
            "No snapshot was kept",
        );
        assert_eq!(
            h.json(&["snapshot", "list"]).as_array().map(Vec::len),
            Some(0)
        );
        assert!(entries(&h.pool_dir().join("snapshots")).is_empty());
        serving("loc", "items", 100);
    }

    // A reset, whose new clone (a full copy on this driver) cannot be
    // made: the branch keeps its data and goes on running.
    let snap = h.snapshot("loc");
    let b = h.create_branch("work", "loc", &[]);
    exec(
        &mut connect(&dsn_of(&b)),
        "DELETE FROM items WHERE id <= 40",
    );
    {
        let _full = Filler::leaving(&h.pool_dir(), MIB);
        fails_full(
            &h,
            &["branch", "reset", "work"],
            "resetting branch 'work'",
            "Branch 'work' keeps its data",
        );
        let info = h.branch("work");
        assert_eq!(info["status"], "running", "{info:#}");
        assert_eq!(
            scalar(&mut connect(&dsn_of(&b)), "SELECT count(*) FROM items"),
            60,
            "the branch lost its data in a failed reset"
        );
        assert_eq!(
            entries(&h.pool_dir().join("branches")),
            ["work".to_string()].into()
        );
    }
    // With room, the reset happens.
    h.ok(&["branch", "reset", "work"]);
    assert_eq!(
        scalar(
            &mut connect(&h.branch_dsn("work")),
            "SELECT count(*) FROM items"
        ),
        100
    );
    h.ok(&["branch", "delete", "work"]);
    h.ok(&["snapshot", "delete", snap["id"].as_str().unwrap()]);

    // meta.db: the home's filesystem is the pool's here, so a full pool
    // is a full home too. Rules too big for the space left are refused,
    // and the source keeps what it had (no rules).
    {
        let _full = Filler::leaving(&h.pool_dir(), MIB);
        let err = h.fails(&[
            "source",
            "mask",
            "imp",
            "--rules",
            big_rules.to_str().unwrap(),
        ]);
        assert_eq!(err.code, "no_space", "{}", err.message);
        assert!(
            err.message.contains("meta.db") && err.message.contains("filesystem is full"),
            "{}",
            err.message
        );
    }
    h.ok(&["source", "mask", "imp", "--rules", rules.to_str().unwrap()]);

    // Masking: the copy fits, rewriting the masked table does not.
    {
        let copy = tree_bytes(&h.pool_dir().join("sources/imp"));
        let _full = Filler::leaving(&h.pool_dir(), copy + 40 * MIB);
        fails_full(
            &h,
            &["snapshot", "create", "imp"],
            "taking a snapshot of imp (copy, masking, seal)",
            "No snapshot was kept",
        );
        assert!(entries(&h.pool_dir().join("snapshots")).is_empty());
        serving("imp", "bulk", BULK_ROWS);
    }

    // With room again, everything that failed works.
    h.ok(&["snapshot", "create", "loc"]);
    h.ok(&["source", "refresh", "imp"]);
    serving("imp", "bulk", BULK_ROWS);
    h.assert_settled();
}
