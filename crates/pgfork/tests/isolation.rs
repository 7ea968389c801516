//! Isolation: a branch never shares a writable block with its source or
//! its siblings, on the pool of every clone driver.

mod common;

use common::*;

on_every_pool!(writes_never_cross_between_source_and_branches);

/// Inserts, updates, DDL and file rewrites (VACUUM FULL) in one place are
/// invisible everywhere else; a snapshot is a fixed point in time.
fn writes_never_cross_between_source_and_branches(pool: Pool) {
    let h = TestHome::new(pool, "iso");
    h.create_source("app");
    let mut src = connect(&h.source_dsn("app"));
    load_items(&mut src, "base", 500);
    h.snapshot("app");
    let mut a = connect(&dsn_of(&h.create_branch("left", "app@1", &[])));
    let mut b = connect(&dsn_of(&h.create_branch("right", "app@1", &[])));

    // Writes in one branch: new rows, changed rows, a new table.
    load_items(&mut a, "left", 5);
    exec(
        &mut a,
        "UPDATE items SET payload = 'left' WHERE tag = 'base';
         CREATE TABLE only_left (x int);",
    );
    assert_eq!(
        scalar(&mut a, "SELECT count(*) FROM items WHERE payload = 'left'"),
        500
    );
    for (who, db) in [("source", &mut src), ("sibling", &mut b)] {
        assert_eq!(tagged(db, "left"), 0, "{who} sees the branch's rows");
        assert_eq!(
            scalar(db, "SELECT count(*) FROM items WHERE payload = 'left'"),
            0,
            "{who} sees the branch's updates"
        );
        assert_eq!(
            scalar(db, "(to_regclass('only_left') IS NULL)::int"),
            1,
            "{who} sees the branch's table"
        );
    }

    // The sibling's own writes stay its own.
    load_items(&mut b, "right", 3);
    exec(&mut b, "DELETE FROM items WHERE tag = 'base' AND id <= 100");
    assert_eq!(tagged(&mut a, "right"), 0);
    assert_eq!(tagged(&mut a, "base"), 500);
    assert_eq!(tagged(&mut src, "base"), 500);
    assert_eq!(tagged(&mut b, "base"), 400);

    // The source changes after the snapshot, down to rewriting every
    // file of the table: branches of that snapshot see none of it.
    load_items(&mut src, "late", 7);
    exec(
        &mut src,
        "DELETE FROM items WHERE tag = 'base' AND id > 250",
    );
    exec(&mut src, "VACUUM FULL items");
    for (who, db) in [("left", &mut a), ("right", &mut b)] {
        assert_eq!(tagged(db, "late"), 0, "{who} sees later source rows");
    }
    assert_eq!(tagged(&mut a, "base"), 500);
    assert_eq!(tagged(&mut b, "base"), 400);
    // A new branch of the old snapshot still gets the old data ...
    let mut old = connect(&dsn_of(&h.create_branch("old", "app@1", &[])));
    assert_eq!(tagged(&mut old, "late"), 0);
    assert_eq!(tagged(&mut old, "base"), 500);
    // ... while a new snapshot has the new.
    h.snapshot("app");
    let mut new = connect(&dsn_of(&h.create_branch("new", "app", &[])));
    assert_eq!(h.branch("new")["snapshot"], "app@2");
    assert_eq!(tagged(&mut new, "late"), 7);
    assert_eq!(tagged(&mut new, "base"), 250);

    // Each branch checks clean after all this: no torn or shared pages.
    for db in [&mut a, &mut b, &mut old, &mut new] {
        assert_eq!(
            scalar(db, "SELECT count(*) FROM (SELECT DISTINCT id FROM items) s"),
            scalar(db, "SELECT count(*) FROM items"),
            "duplicate ids"
        );
    }
    // Each branch has its own credentials: one branch's password does not
    // open another.
    let left_dsn = h.branch_dsn("left");
    let right_dsn = h.branch_dsn("right");
    let crossed = left_dsn.replace(
        &format!(":{}/", port_of(&h.branch("left"))),
        &format!(":{}/", port_of(&h.branch("right"))),
    );
    assert_ne!(crossed, right_dsn);
    assert_eq!(
        sqlstate(try_connect(&crossed), "login with a sibling's password"),
        "28P01"
    );
    h.assert_settled();
}
