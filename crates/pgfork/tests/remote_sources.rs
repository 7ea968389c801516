//! Sources copied from real databases: a streaming standby (physical) and
//! a dump import (logical) of a "production" PostgreSQL that each test
//! starts outside the pool, and masking of personal data on the way.

mod common;
mod production;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use production::{PEOPLE, Production, free_port, postgres_uid};
use serde_json::Value;

/// The masking rules the tests use.
fn write_rules(home: &TestHome) -> PathBuf {
    let path = home.root.join("mask.toml");
    fs::write(
        &path,
        "[public.people]\nemail = \"email\"\nname = \"name\"\nphone = \"phone\"\n\n[public.orders]\nemail = \"email\"\n",
    )
    .unwrap();
    path
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

fn add_physical(home: &TestHome, prod: &Production) -> Value {
    home.json(&[
        "source",
        "add",
        "prod",
        "--from",
        &prod.url("replicator", "rep-secret-pw"),
        "--mode",
        "physical",
        "--role",
        "app",
    ])
}

fn physical_fresh_branch_sees_latest_commit(pool: Pool) {
    let prod = Production::start(&format!("phys-{}", pool.driver()));
    let home = TestHome::new(pool, "phys");
    let info = add_physical(&home, &prod);
    assert_eq!(info["mode"], "physical", "{info:#}");
    assert_eq!(info["status"], "running", "{info:#}");
    assert_eq!(
        info["remote"]["url"],
        format!("postgres://replicator@127.0.0.1:{}/shop", prod.port)
    );
    assert_eq!(info["lag"]["receiver"], "streaming", "{info:#}");
    // The standby (as postgres) reads its passfile by name; nobody else
    // reads it, and nobody but root lists or adds to the directory.
    let secrets = home.root.join("secrets");
    assert_eq!(
        fs::symlink_metadata(&secrets).unwrap().mode() & 0o777,
        0o711
    );
    let passfile = fs::symlink_metadata(secrets.join("prod.pgpass")).unwrap();
    assert_eq!(
        (passfile.mode() & 0o777, passfile.uid()),
        (0o600, postgres_uid().0)
    );

    // No rules yet: a snapshot would hand out personal data.
    let err = home.fails(&["snapshot", "create", "prod"]);
    assert!(err.message.contains("no masking rules"), "{err:?}");
    home.ok(&[
        "source",
        "mask",
        "prod",
        "--rules",
        write_rules(&home).to_str().unwrap(),
    ]);

    exec(
        &mut prod.app(),
        "INSERT INTO orders (email, amount) VALUES ('late@corp-example.com', 777001)",
    );
    let b = home.create_branch("fresh1", "prod", &["--fresh"]);
    let mut branch = connect(&dsn_of(&b));
    assert_eq!(
        scalar(
            &mut branch,
            "SELECT count(*) FROM orders WHERE amount = 777001"
        ),
        1
    );
    // The branch is writable and production does not see its writes.
    exec(
        &mut branch,
        "INSERT INTO orders (email, amount) VALUES ('x', 777002)",
    );
    assert_eq!(
        scalar(
            &mut prod.app(),
            "SELECT count(*) FROM orders WHERE amount = 777002"
        ),
        0
    );
    // The standby goes on replicating after a snapshot was taken of it.
    exec(
        &mut prod.app(),
        "INSERT INTO orders (email, amount) VALUES ('later@corp-example.com', 777003)",
    );
    let b2 = home.create_branch("fresh2", "prod", &["--fresh"]);
    assert_eq!(
        scalar(
            &mut connect(&dsn_of(&b2)),
            "SELECT count(*) FROM orders WHERE amount = 777003"
        ),
        1
    );
    assert_eq!(
        scalar(
            &mut branch,
            "SELECT count(*) FROM orders WHERE amount = 777003"
        ),
        0
    );

    home.ok(&["source", "delete", "prod", "--force"]);
    // The replication slot pgfork made on production is gone with it.
    assert_eq!(
        scalar(
            &mut prod.superuser("postgres"),
            "SELECT count(*) FROM pg_replication_slots"
        ),
        0
    );
    home.assert_settled();
}

#[test]
fn physical_fresh_branch_on_reflink() {
    physical_fresh_branch_sees_latest_commit(Pool::Xfs);
}

#[test]
fn physical_fresh_branch_on_btrfs() {
    physical_fresh_branch_sees_latest_commit(Pool::Btrfs);
}

fn physical_snapshots_under_load_pass_amcheck(pool: Pool) {
    let prod = Production::start(&format!("load-{}", pool.driver()));
    let home = TestHome::new(pool, "load");
    add_physical(&home, &prod);
    let mut load = prod.pgbench_load(30);
    std::thread::sleep(Duration::from_millis(500));
    let mut branches = Vec::new();
    for i in 0..2 {
        let name = format!("load{i}");
        home.create_branch(&name, "prod", &["--fresh", "--unmasked"]);
        branches.push(name);
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = load.kill();
    let _ = load.wait();
    for name in &branches {
        let port = port_of(&home.branch(name));
        run_tool(
            Command::new(pg_tool("pg_amcheck"))
                .arg("-h")
                .arg(home.branch_socket(name))
                .args([
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                    "--install-missing",
                    "--heapallindexed",
                    "-d",
                    "shop",
                ]),
        );
        let log =
            fs::read_to_string(home.root.join("logs").join(format!("branch-{name}.log"))).unwrap();
        assert!(
            !log.contains("redo starts"),
            "branch {name} replayed WAL at start:\n{log}"
        );
    }
}

#[test]
fn physical_snapshots_under_load_pass_amcheck_on_reflink() {
    physical_snapshots_under_load_pass_amcheck(Pool::Xfs);
}

#[test]
fn physical_snapshots_under_load_pass_amcheck_on_btrfs() {
    physical_snapshots_under_load_pass_amcheck(Pool::Btrfs);
}

#[test]
fn logical_refresh_swaps_in_new_data_and_old_branches_keep_working() {
    let prod = Production::start("logical");
    let home = TestHome::new(Pool::Xfs, "logical");
    let info = home.json(&[
        "source",
        "add",
        "crm",
        "--from",
        &prod.url("app", "app-secret-pw"),
        "--mode",
        "logical",
        "--refresh-every",
        "6h",
    ]);
    assert_eq!(info["mode"], "logical", "{info:#}");
    assert_eq!(info["remote"]["refresh_every"], 6 * 3600);
    assert_eq!(
        info["remote"]["password_saved"], false,
        "the password is stored only when asked"
    );
    home.ok(&[
        "source",
        "mask",
        "crm",
        "--rules",
        write_rules(&home).to_str().unwrap(),
    ]);
    let before = home.create_branch("before", "crm", &[]);
    // A diff reads the base (a view of the imported copy, whose role the
    // import made NOLOGIN) and the branch as the application role.
    exec(
        &mut connect(&dsn_of(&before)),
        "UPDATE orders SET amount = -1 WHERE id = (SELECT min(id) FROM orders)",
    );
    let diff = home.json(&["diff", "before"]);
    let orders = &diff["data"]["tables"][0];
    assert_eq!(
        (orders["table"].as_str(), orders["updated"].as_u64()),
        (Some("public.orders"), Some(1)),
        "{diff:#}"
    );

    exec(
        &mut prod.app(),
        "INSERT INTO orders (email, amount) VALUES ('new@corp-example.com', 888001)",
    );
    // No password saved: refreshing needs it from the environment.
    let mut cmd = home.command(&["--json", "source", "refresh", "crm"]);
    cmd.env("PGPASSWORD", "app-secret-pw");
    let out = home.output(&mut cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The refresh took a snapshot of the new import, and `--from SOURCE`
    // takes the newest: no --fresh needed.
    let plain = home.create_branch("after-plain", "crm", &[]);
    assert_eq!(
        scalar(
            &mut connect(&dsn_of(&plain)),
            "SELECT count(*) FROM orders WHERE amount = 888001"
        ),
        1,
        "a branch made after a refresh holds the data from before it"
    );
    let after = home.create_branch("after", "crm", &["--fresh"]);
    assert_eq!(
        scalar(
            &mut connect(&dsn_of(&after)),
            "SELECT count(*) FROM orders WHERE amount = 888001"
        ),
        1
    );
    let mut old = connect(&dsn_of(&before));
    assert_eq!(
        scalar(
            &mut old,
            "SELECT count(*) FROM orders WHERE amount = 888001"
        ),
        0
    );
    assert_eq!(scalar(&mut old, "SELECT count(*) FROM people"), PEOPLE);

    // A refresh whose dump fails leaves the previous import in use.
    exec(&mut prod.superuser("shop"), "CREATE TABLE hidden (x int)");
    let mut cmd = home.command(&["--json", "source", "refresh", "crm"]);
    cmd.env("PGPASSWORD", "app-secret-pw");
    let out = home.output(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("permission denied"),
        "{error:#}"
    );
    let info = home.json(&["source", "info", "crm"]);
    assert_eq!(info["status"], "running", "{info:#}");
    assert!(
        info["remote"]["refresh_error"]
            .as_str()
            .unwrap()
            .contains("permission denied"),
        "{info:#}"
    );
    assert!(
        entries(&home.pool_dir().join("staging")).is_empty(),
        "the failed import is removed"
    );
    let again = home.create_branch("again", "crm", &["--fresh"]);
    assert_eq!(
        scalar(
            &mut connect(&dsn_of(&again)),
            "SELECT count(*) FROM orders WHERE amount = 888001"
        ),
        1
    );

    // Passwords were never stored or printed.
    let meta = fs::read(home.root.join("meta.db")).unwrap();
    assert!(
        !meta.windows(13).any(|w| w == b"app-secret-pw"),
        "meta.db holds the source password"
    );
    assert!(!home.stderr_seen().contains("app-secret-pw"));
    assert!(files_containing(&home.root.join("logs"), b"app-secret-pw").is_empty());
    home.assert_settled();
}

#[test]
fn masking_leaves_no_original_value_in_results_or_files() {
    let prod = Production::start("mask");
    let home = TestHome::new(Pool::Btrfs, "mask");
    home.json(&[
        "source",
        "add",
        "crm",
        "--from",
        &prod.url("app", "app-secret-pw"),
        "--mode",
        "logical",
    ]);
    let report = home.json(&[
        "source",
        "mask",
        "crm",
        "--rules",
        write_rules(&home).to_str().unwrap(),
    ]);
    assert_eq!(report["masked_columns"], 4, "{report:#}");
    let b = home.create_branch("masked", "crm", &[]);
    let mut branch = connect(&dsn_of(&b));

    let originals: Vec<(String, String, String)> = prod
        .app()
        .query("SELECT email, name, phone FROM people", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let masked: Vec<(String, String, String)> = branch
        .query("SELECT email, name, phone FROM people", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(masked.len() as i64, PEOPLE);
    for (email, name, phone) in &originals {
        assert!(
            !masked
                .iter()
                .any(|m| &m.0 == email || &m.1 == name || &m.2 == phone),
            "{email} leaked"
        );
    }
    assert!(
        masked.iter().all(|m| m.0.ends_with("@example.invalid")),
        "{:?}",
        &masked[..3]
    );
    // Deterministic: the masked key still joins.
    assert_eq!(
        scalar(
            &mut branch,
            "SELECT count(*) FROM orders o JOIN people p USING (email)"
        ),
        2000
    );
    // No original value anywhere in the branch's files (heap, indexes,
    // statistics, WAL).
    let dir = PathBuf::from(home.branch("masked")["data_dir"].as_str().unwrap());
    for needle in ["@corp-example.com", "Realname Surname", "+44 20 7946"] {
        let hits = files_containing(&dir, needle.as_bytes());
        assert!(hits.is_empty(), "{needle} is still in {hits:?}");
    }
    // The source itself keeps the real data (it mirrors production).
    assert!(
        !files_containing(&home.pool_dir().join("sources/crm"), b"@corp-example.com").is_empty()
    );
}

/// Masking updates the source's copy as superuser; code of a role that is
/// not a superuser that those updates would run (here an expression index
/// calling the application role's function, which could be an agent's,
/// promoted earlier) makes the snapshot refuse, naming it.
#[test]
fn masking_refuses_to_run_a_non_superusers_code() {
    let prod = Production::start("maskhaz");
    let home = TestHome::new(Pool::Xfs, "maskhaz");
    exec(
        &mut prod.app(),
        "CREATE FUNCTION public.shout(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT upper($1)';
         CREATE INDEX people_shout ON people (public.shout(email));",
    );
    home.json(&[
        "source",
        "add",
        "crm",
        "--from",
        &prod.url("app", "app-secret-pw"),
        "--mode",
        "logical",
    ]);
    home.json(&[
        "source",
        "mask",
        "crm",
        "--rules",
        write_rules(&home).to_str().unwrap(),
    ]);
    let before = home.json(&["snapshot", "list"]).as_array().unwrap().len();
    let err = home.fails(&["snapshot", "create", "crm"]);
    assert_eq!(err.code, "unsafe_content", "{err:?}");
    assert!(
        err.message.contains("public.shout(text)")
            && err.message.contains("owned by app")
            && err.message.contains("people_shout"),
        "{err:?}"
    );
    assert_eq!(
        home.json(&["snapshot", "list"]).as_array().unwrap().len(),
        before,
        "a refused snapshot leaves nothing"
    );
    home.assert_settled();
}

#[test]
fn remote_source_bad_input_is_refused_clearly_and_leaves_nothing() {
    let prod = Production::start("bad");
    let home = TestHome::new(Pool::Xfs, "badremote");
    let dead = free_port();
    let err = home.fails(&[
        "source",
        "add",
        "x",
        "--from",
        &format!("postgres://app@127.0.0.1:{dead}/shop"),
        "--mode",
        "logical",
    ]);
    assert!(err.message.contains("cannot reach"), "{err:?}");
    let err = home.fails(&[
        "source",
        "add",
        "x",
        "--from",
        &prod.url("app", "wrong-password"),
        "--mode",
        "logical",
    ]);
    assert!(
        err.message.contains("refused the login") && !err.message.contains("wrong-password"),
        "{err:?}"
    );
    let err = home.fails(&[
        "source",
        "add",
        "x",
        "--from",
        &prod.url("app", "app-secret-pw"),
        "--mode",
        "physical",
    ]);
    assert!(
        err.message.contains("REPLICATION") && err.message.contains("--mode logical"),
        "{err:?}"
    );
    let err = home.fails(&[
        "source",
        "add",
        "x",
        "--from",
        &prod.url("replicator", "rep-secret-pw"),
        "--mode",
        "physical",
        "--role",
        "postgres",
    ]);
    assert!(err.message.contains("superuser"), "{err:?}");
    let err = home.fails(&[
        "source",
        "add",
        "x",
        "--from",
        "mysql://nope",
        "--mode",
        "logical",
    ]);
    assert!(err.message.contains("postgres://"), "{err:?}");
    assert!(
        !home.stderr_seen().contains("rep-secret-pw")
            && !home.stderr_seen().contains("app-secret-pw")
    );

    home.json(&[
        "source",
        "add",
        "crm",
        "--from",
        &prod.url("app", "app-secret-pw"),
        "--mode",
        "logical",
    ]);
    let rules = home.root.join("bad.toml");
    fs::write(&rules, "[public.people]\nemail = email\n").unwrap();
    let err = home.fails(&["source", "mask", "crm", "--rules", rules.to_str().unwrap()]);
    assert!(err.message.contains("line 2, column 9"), "{err:?}");
    fs::write(&rules, "[public.people]\nmail = \"hash\"\n").unwrap();
    let err = home.fails(&["source", "mask", "crm", "--rules", rules.to_str().unwrap()]);
    assert!(
        err.message.contains("has no column mail") && err.message.contains("line 2"),
        "{err:?}"
    );
    // Without rules and without --unmasked, nothing unmasked is snapshotted.
    let err = home.fails(&["branch", "create", "b", "--from", "crm"]);
    assert!(err.message.contains("--unmasked"), "{err:?}");
    assert!(
        home.json(&["snapshot", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    home.create_branch("b", "crm", &["--unmasked"]);
    home.assert_settled();
}

#[test]
fn schema_only_branches_have_no_rows_and_dumps_restore() {
    let prod = Production::start("schema");
    let home = TestHome::new(Pool::Xfs, "schema");
    home.json(&[
        "source",
        "add",
        "crm",
        "--from",
        &prod.url("app", "app-secret-pw"),
        "--mode",
        "logical",
    ]);
    home.ok(&["source", "mask", "crm", "--clear", "--allow-unmasked"]);
    let b = home.create_branch("q1", "crm", &["--schema-only"]);
    let mut q = connect(&dsn_of(&b));
    assert_eq!(scalar(&mut q, "SELECT count(*) FROM people"), 0);
    assert_eq!(scalar(&mut q, "SELECT count(*) FROM pgbench_accounts"), 0);
    assert_eq!(
        scalar(
            &mut q,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ),
        6
    );
    // The query an agent would validate still plans and runs.
    exec(
        &mut q,
        "SELECT p.name, sum(o.amount) FROM people p JOIN orders o USING (email) GROUP BY 1",
    );

    let full = home.create_branch("t1", "crm", &[]);
    exec(
        &mut connect(&dsn_of(&full)),
        "INSERT INTO orders (email, amount) VALUES ('dump', 999001)",
    );
    let dump = home.root.join("t1.dump");
    home.ok(&["branch", "dump", "t1", "--file", dump.to_str().unwrap()]);
    let list = run_tool(Command::new(pg_tool("pg_restore")).arg("--list").arg(&dump));
    assert!(list.contains("TABLE DATA public orders"), "{list}");
    let plain = home.ok(&["branch", "dump", "t1", "--format", "plain"]);
    assert!(
        plain.contains("999001"),
        "the dump holds the branch's own write"
    );
}

#[test]
fn scheduled_snapshots_keep_the_newest() {
    let home = TestHome::new(Pool::Btrfs, "sched");
    home.create_source("shop");
    home.ok(&[
        "snapshot", "schedule", "shop", "--every", "1s", "--keep", "2",
    ]);
    for _ in 0..3 {
        home.json(&["tick"]);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let report = home.json(&["tick"]);
    assert_eq!(
        report["snapshots"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    assert!(
        !report["pruned"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    let snapshots = home.json(&["snapshot", "list"]);
    assert_eq!(snapshots.as_array().unwrap().len(), 2, "{snapshots:#}");
    home.ok(&["snapshot", "schedule", "shop", "--off"]);
    let report = home.json(&["tick"]);
    assert!(
        report["snapshots"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
}
