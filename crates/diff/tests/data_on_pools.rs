//! The data diff on real copy-on-write pools: a clone of a stopped cluster
//! is changed, and the diff must find exactly those changes while reading
//! only the pages that no longer share blocks. Needs the pools that
//! `scripts/test.sh` mounts (PGFORK_TEST_XFS, PGFORK_TEST_BTRFS); a
//! missing pool is a failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgfork_diff::data::{DataOptions, Method, Side, data_patch, diff_data, fk_order, read_tables};
use pgfork_os::RunAs;
use pgfork_pg::server::{StartSpec, start, stop};
use pgfork_pg::untrusted::session::{self, Endpoint};
use pgfork_pg::{PgBinaries, StopMode, conf, initdb};
use pgfork_pool::Driver;

struct Cluster {
    socket: PathBuf,
    pid: pgfork_os::ProcessId,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = stop(self.pid, StopMode::Immediate, Duration::from_secs(5));
    }
}

fn run(bins: &PgBinaries, dir: &Path, work: &Path, name: &str) -> Cluster {
    let run_as = RunAs::resolve("postgres").unwrap();
    let socket = work.join(format!("s-{name}"));
    let log = work.join(format!("{name}.log"));
    let socket_text = socket.display().to_string();
    let overrides = [
        ("listen_addresses", ""),
        ("unix_socket_directories", socket_text.as_str()),
        ("fsync", "off"),
        ("shared_buffers", "16MB"),
    ];
    let spec = StartSpec {
        bins,
        datadir: dir,
        log: &log,
        run_as: &run_as,
        socket_dir: &socket,
        port: 5432,
        overrides: &overrides,
        timeout: Duration::from_secs(60),
        cgroup: None,
    };
    let pm = start(&spec).unwrap_or_else(|e| panic!("start {name}: {e}"));
    Cluster {
        socket,
        pid: pm.pid,
    }
}

fn client(c: &Cluster) -> postgres::Client {
    session::superuser_in(
        &Endpoint {
            socket_dir: c.socket.clone(),
            port: 5432,
        },
        "postgres",
    )
    .unwrap()
}

fn work_dir(var: &str, name: &str) -> PathBuf {
    let pool = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: run scripts/test.sh (as root), which mounts the test pools")
    });
    let dir = pool.join(format!("datadiff-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run_as = RunAs::resolve("postgres").unwrap();
    run_as.chown(&dir).unwrap();
    dir
}

fn exactly_the_changed_rows_are_found(var: &str, driver: Driver) {
    let bins = PgBinaries::find(None).unwrap();
    let run_as = RunAs::resolve("postgres").unwrap();
    let work = work_dir(var, driver.name());
    let origin = work.join("origin");
    driver
        .create_root(&origin, Some((run_as.uid, run_as.gid)))
        .unwrap();
    initdb::initdb(&bins, &origin, &run_as).unwrap();
    conf::install(&origin, &run_as).unwrap();
    {
        let c = run(&bins, &origin, &work, "origin");
        let mut db = client(&c);
        // Sessions pin search_path to pg_catalog; the test's own objects go to public.
        db.batch_execute(
            "SET search_path = public;
             CREATE TABLE items (id int PRIMARY KEY, v text, n int);
             INSERT INTO items SELECT g, 'item ' || g, g % 100 FROM generate_series(1, 50000) g;
             CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b));
             INSERT INTO pairs SELECT g, 'k' || (g % 3), g FROM generate_series(1, 3000) g;
             CREATE TABLE log (line text);
             INSERT INTO log SELECT 'line ' || g FROM generate_series(1, 2000) g;
             CREATE TABLE untouched (id int PRIMARY KEY);
             INSERT INTO untouched SELECT generate_series(1, 1000);
             CREATE SEQUENCE s; SELECT nextval('s');",
        )
        .unwrap();
        db.batch_execute("VACUUM FREEZE").unwrap();
        drop(db);
        // A clean shutdown, as a sealed snapshot would be.
        stop(c.pid, StopMode::Fast, Duration::from_secs(30)).unwrap();
    }
    // The base stays as it is; a view of it is started to be read.
    let branch_dir = work.join("branch");
    driver.clone_dir(&origin, &branch_dir).unwrap();
    let view_dir = work.join("view");
    driver.clone_dir(&origin, &view_dir).unwrap();
    let branch = run(&bins, &branch_dir, &work, "branch");
    let view = run(&bins, &view_dir, &work, "view");
    let mut b = client(&branch);
    b.batch_execute(
        "SET search_path = public;
         UPDATE items SET v = 'changed' WHERE id IN (5, 17, 25000, 49999);
         UPDATE items SET n = n + 1 WHERE id BETWEEN 30000 AND 30005;
         DELETE FROM items WHERE id IN (7, 8, 40000, 40001, 40002);
         INSERT INTO items SELECT g, 'new', 0 FROM generate_series(60001, 60007) g;
         UPDATE pairs SET v = -1 WHERE a = 10 AND b = 'k1';
         DELETE FROM pairs WHERE a = 11;
         INSERT INTO log VALUES ('added 1'), ('added 2'), ('added 3');
         DELETE FROM log WHERE line IN ('line 10', 'line 1999');
         ALTER TABLE items ADD COLUMN tag text DEFAULT 'none';
         UPDATE items SET tag = 'special' WHERE id = 3;
         CREATE TABLE fresh (id int PRIMARY KEY);
         INSERT INTO fresh SELECT generate_series(1, 12);
         SELECT nextval('s'); SELECT nextval('s');",
    )
    .unwrap();

    let mut v = client(&view);
    let opts = DataOptions {
        limit: 100,
        full: false,
        tables: None,
    };
    let (mut vm, mut bm) = (client(&view), client(&branch));
    let mut old = Side {
        client: &mut v,
        maintenance: Some(&mut vm),
        datadir: &origin,
    };
    let mut new = Side {
        client: &mut b,
        maintenance: Some(&mut bm),
        datadir: &branch_dir,
    };
    let diff = diff_data(&mut old, &mut new, &opts).unwrap();
    let table = |name: &str| {
        diff.tables
            .iter()
            .find(|t| t.table == name)
            .unwrap_or_else(|| panic!("{name}: {diff:#?}"))
    };

    let items = table("public.items");
    // Row 3 changed only in the column the branch added: compared against
    // the value old rows read for it (its default).
    assert_eq!(
        (items.inserted, items.updated, items.deleted),
        (7, 11, 5),
        "{items:#?}"
    );
    let tag_changed = items.rows.iter().any(|r| {
        matches!(r, pgfork_diff::data::RowChange::Update { key, changes }
            if key == &vec![Some("3".to_string())]
                && changes.get("tag") == Some(&[serde_json::json!("none"), serde_json::json!("special")]))
    });
    assert!(tag_changed, "{items:#?}");
    assert_eq!(items.method, Method::Pages);
    // 50,000 rows fill ~320 pages; the changes touch a few dozen at most.
    assert!(items.pages < 40, "read {} pages", items.pages);
    let pairs = table("public.pairs");
    assert_eq!(
        (pairs.inserted, pairs.updated, pairs.deleted),
        (0, 1, 1),
        "{pairs:#?}"
    );
    let log = table("public.log");
    assert_eq!((log.inserted, log.deleted), (3, 2), "{log:#?}");
    let fresh = table("public.fresh");
    assert_eq!((fresh.inserted, fresh.method), (12, Method::Full));
    assert!(
        diff.skipped.contains(&"public.untouched".to_string()),
        "{:?}",
        diff.skipped
    );
    assert_eq!(diff.sequences.len(), 1, "{:?}", diff.sequences);
    assert_eq!(
        (diff.sequences[0].from, diff.sequences[0].to),
        (Some(1), Some(3))
    );

    // The whole-table comparison agrees on every count.
    let full = diff_data(
        &mut old,
        &mut new,
        &DataOptions {
            limit: 100,
            full: true,
            tables: None,
        },
    )
    .unwrap();
    for t in &diff.tables {
        let f = full.tables.iter().find(|f| f.table == t.table).unwrap();
        assert_eq!(
            (f.inserted, f.updated, f.deleted),
            (t.inserted, t.updated, t.deleted),
            "{}",
            t.table
        );
    }
    // The patch built from an unlimited diff, applied to the base (with the
    // new table made first, as the schema patch would), leaves no difference.
    let all = diff_data(
        &mut old,
        &mut new,
        &DataOptions {
            limit: usize::MAX,
            full: false,
            tables: None,
        },
    )
    .unwrap();
    old.client
        .batch_execute("CREATE TABLE public.fresh (id int PRIMARY KEY); ALTER TABLE public.items ADD COLUMN tag text DEFAULT 'none'")
        .unwrap();
    let tables = read_tables(old.client).unwrap();
    let order = fk_order(old.client, &tables).unwrap();
    // Rows removed from a table without a key go one copy each.
    let patch = data_patch(&all, &tables, &order).unwrap();
    assert!(
        patch
            .iter()
            .any(|s| s.starts_with("DELETE FROM ONLY \"public\".\"log\"")),
        "{patch:?}"
    );
    let mut tx = old.client.transaction().unwrap();
    for sql in &patch {
        tx.batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    tx.commit().unwrap();
    let after = diff_data(
        &mut old,
        &mut new,
        &DataOptions {
            limit: 10,
            full: true,
            tables: None,
        },
    )
    .unwrap();
    assert!(after.tables.is_empty(), "{:#?}", after.tables);
    assert!(after.sequences.is_empty(), "{:?}", after.sequences);
    // A diff that lists only some rows is refused as a patch: it would lose rows.
    let mut limited = all.clone();
    limited
        .tables
        .iter_mut()
        .find(|t| t.rows.len() > 1)
        .expect("a table with several changed rows")
        .rows
        .truncate(1);
    let refused = data_patch(&limited, &tables, &order)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("compare with no row limit"), "{refused}");

    drop((branch, view));
    for d in [&branch_dir, &view_dir, &origin] {
        driver.remove(d).unwrap();
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn data_diff_on_reflink_xfs() {
    exactly_the_changed_rows_are_found("PGFORK_TEST_XFS", Driver::Reflink);
}

#[test]
fn data_diff_on_btrfs_snapshots() {
    exactly_the_changed_rows_are_found("PGFORK_TEST_BTRFS", Driver::Btrfs);
}
