//! Three-way use on real databases: a base, a branch and a source that
//! both moved on. Conflicts are exactly the objects both changed to
//! different results; without conflicts, the branch's diff applies to the
//! source and the result is what making both sets of changes by hand gives
//! (pg_dump --schema-only compared byte for byte).

mod schema_support;

use std::collections::BTreeSet;

use pgfork_diff::schema::{ObjectId, changed_ids, conflicts, diff_schema, read_schema};
use schema_support::{BASE, Cluster, ROLES, apply, text_diff};

/// The branch's changes that nobody else touches.
const BRANCH_CLEAN: &str = "
ALTER TABLE app.orders ADD COLUMN branch_only integer;
CREATE INDEX orders_note_idx ON app.orders (note);
ALTER TABLE app.customers ALTER COLUMN name SET DEFAULT 'same';
";

/// The branch's changes that collide with the source's.
const BRANCH_CLASHING: &str = "
COMMENT ON TABLE app.orders IS 'from the branch';
DROP VIEW app.to_drop_view;
DROP TABLE app.to_drop;
";

/// The source's own changes since the snapshot.
const SOURCE: &str = "
COMMENT ON TABLE app.orders IS 'from the source';
ALTER TABLE app.customers ALTER COLUMN name SET DEFAULT 'same';
ALTER TABLE app.to_drop ADD COLUMN w integer;
ALTER TABLE app.orders ADD COLUMN source_only integer;
CREATE TABLE app.source_table (id integer PRIMARY KEY);
";

fn ids(names: &[&str]) -> BTreeSet<ObjectId> {
    names.iter().map(|n| n.parse().expect("identity")).collect()
}

#[test]
fn conflicts_are_what_both_sides_changed_differently() {
    let cluster = Cluster::start();
    cluster.exec("postgres", ROLES);
    cluster.exec("postgres", "CREATE DATABASE base");
    cluster.exec("base", BASE);
    for db in ["branch", "source"] {
        cluster.exec("postgres", &format!("CREATE DATABASE {db} TEMPLATE base"));
    }
    cluster.exec("branch", BRANCH_CLEAN);
    cluster.exec("branch", BRANCH_CLASHING);
    cluster.exec("source", SOURCE);

    let base = read_schema(&mut cluster.connect("base")).expect("read base");
    let branch = read_schema(&mut cluster.connect("branch")).expect("read branch");
    let source = read_schema(&mut cluster.connect("source")).expect("read source");
    let x = diff_schema(&base, &branch);
    let s = diff_schema(&base, &source);

    // The same default set on both sides is changed on both, no conflict.
    let name = ids(&["column app.customers.name"]);
    assert!(changed_ids(&x).is_superset(&name) && changed_ids(&s).is_superset(&name));
    assert_eq!(
        conflicts(&x, &s),
        ids(&[
            "comment table app.orders",
            "table app.to_drop",
            "column app.to_drop.w",
        ]),
        "branch:\n{x}\nsource:\n{s}"
    );
    assert_eq!(conflicts(&s, &x), conflicts(&x, &s));
}

#[test]
fn a_branch_without_conflicts_applies_to_a_source_that_moved_on() {
    let cluster = Cluster::start();
    cluster.exec("postgres", ROLES);
    cluster.exec("postgres", "CREATE DATABASE base");
    cluster.exec("base", BASE);
    for db in ["branch", "source", "expected"] {
        cluster.exec("postgres", &format!("CREATE DATABASE {db} TEMPLATE base"));
    }
    cluster.exec("branch", BRANCH_CLEAN);
    cluster.exec("source", SOURCE);
    cluster.exec("expected", SOURCE);
    cluster.exec("expected", BRANCH_CLEAN);

    let base = read_schema(&mut cluster.connect("base")).expect("read base");
    let branch = read_schema(&mut cluster.connect("branch")).expect("read branch");
    let mut source_client = cluster.connect("source");
    let source = read_schema(&mut source_client).expect("read source");
    let x = diff_schema(&base, &branch);
    let s = diff_schema(&base, &source);
    assert!(conflicts(&x, &s).is_empty(), "{:?}", conflicts(&x, &s));

    apply(&mut source_client, &x.sql());
    let got = cluster.dump("source");
    let want = cluster.dump("expected");
    assert!(
        got == want,
        "the branch's diff applied to the source differs from both changes made by hand:\n{}",
        text_diff(&got, &want, &cluster.root)
    );
}
