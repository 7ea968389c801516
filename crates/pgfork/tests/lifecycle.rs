//! The life of sources, snapshots and branches as a user lives it, on the
//! pool of every clone driver.

mod common;

use common::*;
use serde_json::json;

on_every_pool!(source_role_owns_its_database, branch_lifecycle);

/// `source dsn` logs in as the application role: not a superuser, owner of
/// its database, able to create the trusted extensions applications use.
fn source_role_owns_its_database(pool: Pool) {
    let h = TestHome::new(pool, "owner");
    let info = h.create_source("shop");
    assert_eq!(info["mode"], "local");
    assert_eq!(info["user"], "shop");
    assert_eq!(info["database"], "shop");
    let port = port_of(&info);
    assert!((h.ports.0..=h.ports.1).contains(&port), "port {port}");
    let dsn = h.source_dsn("shop");
    assert!(
        dsn.starts_with("postgres://shop:") && dsn.ends_with(&format!("@127.0.0.1:{port}/shop")),
        "{}",
        redact(&dsn)
    );
    assert!(info["dsn"].as_str().unwrap().contains("********"));
    assert!(!info["dsn"].as_str().unwrap().contains(&password_of(&dsn)));

    let mut db = connect(&dsn);
    assert_eq!(text(&mut db, "current_user"), "shop");
    assert_eq!(text(&mut db, "current_database()"), "shop");
    assert_eq!(
        text(
            &mut db,
            "SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user"
        ),
        "false"
    );
    assert_eq!(
        text(
            &mut db,
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ),
        "shop"
    );
    exec(
        &mut db,
        "CREATE EXTENSION citext;
         CREATE EXTENSION btree_gist;
         CREATE TABLE bookings (room int, guest citext,
                                EXCLUDE USING gist (room WITH =));
         INSERT INTO bookings VALUES (1, 'Ann');",
    );
    // The extensions work: citext compares case-insensitively, and the
    // gist exclusion constraint (btree_gist) refuses a second booking.
    assert_eq!(
        scalar(&mut db, "SELECT count(*) FROM bookings WHERE guest = 'ANN'"),
        1
    );
    let err = sqlstate(
        db.batch_execute("INSERT INTO bookings VALUES (1, 'Bob')"),
        "double booking",
    );
    assert_eq!(err, "23P01", "exclusion_violation");
    for ext in ["citext", "btree_gist"] {
        assert_eq!(
            text(
                &mut db,
                &format!(
                    "SELECT pg_get_userbyid(extowner) FROM pg_extension WHERE extname = '{ext}'"
                )
            ),
            "shop"
        );
    }
    h.assert_settled();
}

/// Snapshot, branch (with TTL and labels), branch of a branch, list and
/// info, stop and start, reset, delete: each step checked from the outside.
fn branch_lifecycle(pool: Pool) {
    let h = TestHome::new(pool, "life");
    let source = h.create_source("shop");
    let mut src = connect(&h.source_dsn("shop"));
    load_items(&mut src, "base", 1000);

    // Snapshot of the running source.
    let snap = h.snapshot("shop");
    assert_eq!(snap["id"], "shop@1");
    assert_eq!(snap["source"], "shop");
    assert_eq!(snap["parent_branch"], json!(null));
    assert_eq!(snap["method"], pool.snapshot_method());
    assert!(snap["lsn"].is_string(), "{snap:#}");

    // A branch with a TTL and labels, from the source's latest snapshot.
    let b = h.create_branch(
        "feature",
        "shop",
        &["--ttl", "2h", "--label", "agent=a1", "--label", "team=db"],
    );
    assert_eq!(b["name"], "feature");
    assert_eq!(b["source"], "shop");
    assert_eq!(b["snapshot"], "shop@1");
    assert_eq!(b["parent_branch"], json!(null));
    assert_eq!(b["user"], "shop");
    assert_eq!(b["database"], "shop");
    assert_eq!(b["protected"], false);
    assert_eq!(b["labels"], json!({"agent": "a1", "team": "db"}));
    let port = port_of(&b);
    assert!((h.ports.0..=h.ports.1).contains(&port));
    assert_ne!(port, port_of(&source));
    assert!(b["pid"].as_i64().is_some_and(|p| p > 0));
    assert_eq!(
        b["data_dir"].as_str().unwrap(),
        h.pool_dir().join("branches/feature").to_str().unwrap()
    );
    let ttl = rfc3339_secs(b["expires_at"].as_str().unwrap())
        - rfc3339_secs(b["created_at"].as_str().unwrap());
    assert!((7199..=7201).contains(&ttl), "TTL of {ttl}s instead of 2h");
    for t in ["clone_ms", "start_ms", "total_ms"] {
        assert!(b["timings"][t].is_u64(), "timings.{t} in {b:#}");
    }
    // Copy-on-write drivers share every block of the untouched table with
    // the snapshot; the copy driver has copied them.
    let heap = text(&mut src, "pg_relation_filepath('items')");
    let (total, shared) = extents(&h.pool_dir().join("branches/feature").join(&heap));
    assert!(total > 0, "{heap} has no extents");
    if pool == Pool::Plain {
        assert_eq!(shared, 0, "the copy driver shares blocks");
    } else {
        assert_eq!(
            shared,
            total,
            "{} clone of {heap} does not share its blocks",
            pool.driver()
        );
    }
    let dsn = dsn_of(&b);
    let password = password_of(&dsn);
    assert!(password.len() >= 16, "weak password");
    assert_ne!(password, password_of(&h.source_dsn("shop")));

    // The branch holds the snapshot's data, and the role its extensions.
    let mut feature = connect(&dsn);
    assert_eq!(text(&mut feature, "current_user"), "shop");
    assert_eq!(tagged(&mut feature, "base"), 1000);
    // Branches are disposable: fsync off unless --durable.
    assert_eq!(text(&mut feature, "current_setting('fsync')"), "off");

    // info masks the password unless asked; dsn prints it.
    let info = h.branch("feature");
    assert_eq!(info["status"], "running");
    assert!(info["dsn"].as_str().unwrap().contains("********"));
    assert!(!info.to_string().contains(&password));
    // Creation timings are kept with the branch; info adds its storage.
    assert!(
        info["timings"]["total_ms"].as_u64().is_some_and(|t| t > 0),
        "creation timings are recorded: {info:#}"
    );
    assert!(info["unshared_bytes"].is_u64(), "{info:#}");
    let shown = h.json(&["branch", "info", "feature", "--show-password"]);
    assert_eq!(dsn_of(&shown), dsn);
    assert_eq!(h.branch_dsn("feature"), dsn);
    assert_eq!(h.ok(&["branch", "dsn", "feature"]).trim(), dsn);

    // A branch of the branch sees the branch's writes.
    load_items(&mut feature, "feature", 10);
    let child = h.create_branch("child", "feature", &[]);
    assert_eq!(child["parent_branch"], "feature");
    assert!(
        child["snapshot"].as_str().unwrap().starts_with("feature@"),
        "{child:#}"
    );
    assert_eq!(child["expires_at"], json!(null));
    let mut child_db = connect(&dsn_of(&child));
    assert_eq!(tagged(&mut child_db, "base"), 1000);
    assert_eq!(tagged(&mut child_db, "feature"), 10);

    // --durable keeps fsync on.
    let durable = h.create_branch("durable", "shop@1", &["--durable"]);
    assert_eq!(
        text(&mut connect(&dsn_of(&durable)), "current_setting('fsync')"),
        "on"
    );
    h.ok(&["branch", "delete", "durable"]);

    // Lists and filters.
    let all = h.json(&["branch", "list"]);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["child", "feature"]);
    let labelled = h.json(&["branch", "list", "--label", "agent=a1"]);
    assert_eq!(labelled.as_array().unwrap().len(), 1);
    assert_eq!(labelled[0]["name"], "feature");
    assert_eq!(
        h.json(&["branch", "list", "--label", "agent=a2"]),
        json!([])
    );
    let snaps = h.json(&["snapshot", "info", "shop@1"]);
    assert_eq!(snaps["branches"], json!(["feature"]));
    let source = h.json(&["source", "info", "shop"]);
    assert_eq!(
        source["snapshots"], 1,
        "snapshots of branches are not the source's"
    );
    assert_eq!(source["branches"], 2);

    // Stop and start keep the data, the port and the password.
    drop(feature);
    let stopped = h.json(&["branch", "stop", "feature"]);
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["pid"], json!(null));
    assert!(
        try_connect(&dsn).is_err(),
        "a stopped branch must refuse connections"
    );
    let started = h.json(&["branch", "start", "feature"]);
    assert_eq!(started["status"], "running");
    assert_eq!(port_of(&started), port);
    let mut feature = connect(&dsn);
    assert_eq!(tagged(&mut feature, "feature"), 10);

    // Reset returns to the base snapshot; the same DSN keeps working.
    exec(&mut feature, "CREATE TABLE scratch (x int)");
    drop(feature);
    let reset = h.json(&["branch", "reset", "feature"]);
    assert_eq!(reset["status"], "running");
    assert_eq!(reset["snapshot"], "shop@1");
    assert_eq!(h.branch_dsn("feature"), dsn);
    let mut feature = connect(&dsn);
    assert_eq!(tagged(&mut feature, "base"), 1000);
    assert_eq!(tagged(&mut feature, "feature"), 0);
    assert_eq!(
        scalar(&mut feature, "(to_regclass('scratch') IS NULL)::int"),
        1
    );
    // The child was cloned from a snapshot of the branch: the reset of
    // its parent does not touch it.
    assert_eq!(tagged(&mut child_db, "feature"), 10);
    h.assert_settled();

    // Delete: the server, its directory, socket, log and port go.
    drop(feature);
    drop(child_db);
    let deleted = h.json(&["branch", "delete", "child"]);
    assert!(
        deleted["deleted"]
            .as_array()
            .unwrap()
            .contains(&json!("branch child")),
        "{deleted:#}"
    );
    h.ok(&["branch", "delete", "feature"]);
    assert!(!h.pool_dir().join("branches/feature").exists());
    assert!(!h.branch_socket("feature").exists());
    assert!(!h.root.join("logs/branch-feature.log").exists());
    assert!(port_is_free(port));
    assert_eq!(h.json(&["branch", "list"]), json!([]));
    assert_eq!(
        h.fails(&["branch", "info", "feature"]).code,
        "unknown_branch"
    );
    // The source was never touched.
    assert_eq!(tagged(&mut src, "base"), 1000);
    assert_eq!(tagged(&mut src, "feature"), 0);

    // A stopped source is copied as it lies, with no online backup, and
    // keeps its data across stop and start.
    load_items(&mut src, "late", 5);
    drop(src);
    assert_eq!(h.json(&["source", "stop", "shop"])["status"], "stopped");
    let cold = h.snapshot("shop");
    assert_eq!(cold["method"], "stopped");
    let from_cold = h.create_branch("cold", cold["id"].as_str().unwrap(), &[]);
    assert_eq!(tagged(&mut connect(&dsn_of(&from_cold)), "late"), 5);
    assert_eq!(h.json(&["source", "start", "shop"])["status"], "running");
    assert_eq!(tagged(&mut connect(&h.source_dsn("shop")), "late"), 5);
    h.assert_settled();

    // doctor finds nothing wrong with all this (it fails the command if it
    // does), and reports the pool's driver.
    let doctor = h.json(&["doctor"]);
    let checks = doctor["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["status"] != "fail"), "{doctor:#}");
    assert!(
        checks
            .iter()
            .any(|c| c["detail"].as_str().unwrap().contains(pool.driver())),
        "{doctor:#}"
    );
}
