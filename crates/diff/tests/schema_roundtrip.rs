//! The schema diff against real PostgreSQL 15: diff a base database and a
//! copy changed in every covered way, apply the SQL to the base in one
//! transaction, and compare `pg_dump --schema-only` of both, byte for byte.
//! pg_dump is the oracle: it is PostgreSQL's own account of a schema.

mod schema_support;

use pgfork_diff::schema::{ChangeKind, diff_schema, read_schema};
use schema_support::{BASE, CHANGES, Cluster, ROLES, apply, text_diff};

#[test]
fn applying_the_diff_makes_pg_dump_identical() {
    let cluster = Cluster::start();
    cluster.exec("postgres", ROLES);
    cluster.exec("postgres", "CREATE DATABASE a");
    cluster.exec("a", BASE);
    cluster.exec("postgres", "CREATE DATABASE b TEMPLATE a");
    cluster.exec("b", CHANGES);

    let mut a = cluster.connect("a");
    let mut b = cluster.connect("b");
    let before = read_schema(&mut a).expect("read a");
    let after = read_schema(&mut b).expect("read b");
    let diff = diff_schema(&before, &after);
    println!("{diff}");
    for s in diff.sql() {
        println!("{s};");
    }
    assert!(
        diff.warnings.is_empty(),
        "unexpected warnings: {:#?}",
        diff.warnings
    );

    apply(&mut a, &diff.sql());

    let dump_a = cluster.dump("a");
    let dump_b = cluster.dump("b");
    assert!(
        dump_a == dump_b,
        "pg_dump of a (after applying the diff) differs from b:\n{}",
        text_diff(&dump_a, &dump_b, &cluster.root)
    );

    // Read again, the two databases have nothing left to differ in.
    let again = read_schema(&mut a).expect("read a again");
    let rest = diff_schema(&again, &after);
    assert!(rest.is_empty(), "left over after applying:\n{rest}");

    // Unchanged objects rebuilt because of what they depend on are not
    // reported as changes.
    let rebuilt: Vec<String> = diff
        .changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Rebuilt)
        .map(|c| c.id.to_string())
        .collect();
    println!("rebuilt: {rebuilt:?}");
}

#[test]
fn a_database_diffed_with_itself_or_its_copy_is_empty() {
    let cluster = Cluster::start();
    cluster.exec("postgres", ROLES);
    cluster.exec("postgres", "CREATE DATABASE a");
    cluster.exec("a", BASE);
    cluster.exec("a", CHANGES);
    cluster.exec("postgres", "CREATE DATABASE b TEMPLATE a");
    let a = read_schema(&mut cluster.connect("a")).expect("read a");
    let again = read_schema(&mut cluster.connect("a")).expect("read a again");
    let b = read_schema(&mut cluster.connect("b")).expect("read b");
    assert!(
        a.objects.len() > 100,
        "read only {} objects",
        a.objects.len()
    );
    assert_eq!(a, again, "two readings of the same database differ");
    let d = diff_schema(&a, &a);
    assert!(d.is_empty(), "a vs a:\n{d}");
    let d = diff_schema(&a, &b);
    assert!(d.is_empty(), "a vs its copy b:\n{d}");
    assert!(d.sql().is_empty());
}

/// The other direction: from the changed database back to the base. This
/// drops what the changes added (an extension, a schema with its view, a
/// table owning a sequence), removes enum labels (the columns go through
/// text), and re-adds a dropped column.
#[test]
fn the_reverse_diff_undoes_the_changes() {
    let cluster = Cluster::start();
    cluster.exec("postgres", ROLES);
    cluster.exec("postgres", "CREATE DATABASE a");
    cluster.exec("a", BASE);
    cluster.exec(
        "a",
        "INSERT INTO app.customers (email, name, mood) VALUES ('x@y', 'x', 'happy')",
    );
    cluster.exec("postgres", "CREATE DATABASE b TEMPLATE a");
    cluster.exec("b", CHANGES);

    let mut a = cluster.connect("a");
    let mut b = cluster.connect("b");
    let base = read_schema(&mut a).expect("read a");
    let changed = read_schema(&mut b).expect("read b");
    let diff = diff_schema(&changed, &base);
    println!("{diff}");
    assert!(
        diff.warnings.is_empty(),
        "unexpected warnings: {:#?}",
        diff.warnings
    );
    apply(&mut b, &diff.sql());

    let dump_a = cluster.dump("a");
    let dump_b = cluster.dump("b");
    assert!(
        dump_a == dump_b,
        "pg_dump of b (after applying the reverse diff) differs from a:\n{}",
        text_diff(&dump_b, &dump_a, &cluster.root)
    );
    // The row's enum value survived the round trip through text.
    let mood: String = b
        .query_one("SELECT mood::text FROM app.customers WHERE name = 'x'", &[])
        .expect("read the row back")
        .get(0);
    assert_eq!(mood, "happy");
}

/// Kinds the schema diff does not cover are not silently passed over: a
/// diff where only such objects differ is not empty, and says what.
#[test]
fn objects_the_diff_does_not_cover_are_reported() {
    let cluster = Cluster::start();
    cluster.exec("postgres", ROLES);
    cluster.exec("postgres", "CREATE DATABASE a");
    cluster.exec("a", BASE);
    cluster.exec("postgres", "CREATE DATABASE b TEMPLATE a");
    cluster.exec(
        "b",
        "CREATE AGGREGATE app.mysum(integer) (sfunc = int4pl, stype = integer);
         CREATE RULE settings_noop AS ON INSERT TO public.settings DO ALSO NOTHING;
         CREATE TYPE app.float_range AS RANGE (subtype = float8);
         CREATE STATISTICS app.orders_stats ON customer_id, status FROM app.orders;
         COMMENT ON COLUMN app.order_totals.total IS 'sum';",
    );
    let a = read_schema(&mut cluster.connect("a")).expect("read a");
    let b = read_schema(&mut cluster.connect("b")).expect("read b");
    let diff = diff_schema(&a, &b);
    assert!(diff.changes.is_empty(), "{diff}");
    assert!(!diff.is_empty());
    let all = diff.warnings.join("\n");
    for needle in [
        "function app.mysum(integer)",
        "rule settings_noop on table public.settings",
        "type app.float_range",
        "statistics object app.orders_stats",
        "comment on column 2 of view app.order_totals: sum",
    ] {
        assert!(all.contains(needle), "no warning about {needle}:\n{all}");
    }
    assert!(diff.to_string().contains("warning: "));
}

/// The second pair, both ways: identity, collation and compression
/// changes, NOT VALID constraints validated, replica identity, a table
/// made logged, inheritance, a sequence released before its column is
/// dropped, view options, an INSTEAD OF trigger, a materialized view
/// refreshed, restrictive policies, grant options, comments on every kind.
#[test]
fn the_second_pair_round_trips_both_ways() {
    use schema_support::{BASE2, CHANGES2};
    let cluster = Cluster::start();
    cluster.exec("postgres", ROLES);
    cluster.exec("postgres", "CREATE DATABASE a");
    cluster.exec("a", BASE2);
    cluster.exec("a", "INSERT INTO s2.refs VALUES (1, NULL, 'ok')");
    for db in ["b", "a2"] {
        cluster.exec("postgres", &format!("CREATE DATABASE {db} TEMPLATE a"));
    }
    cluster.exec("b", CHANGES2);
    cluster.exec("postgres", "CREATE DATABASE b2 TEMPLATE b");
    let a = read_schema(&mut cluster.connect("a")).expect("read a");
    let b = read_schema(&mut cluster.connect("b")).expect("read b");

    for (from, to, target, want) in [(&a, &b, "a2", "b"), (&b, &a, "b2", "a")] {
        let diff = diff_schema(from, to);
        println!("{target} -> {want}:\n{diff}");
        assert!(diff.warnings.is_empty(), "{:#?}", diff.warnings);
        apply(&mut cluster.connect(target), &diff.sql());
        let got = cluster.dump(target);
        let expected = cluster.dump(want);
        assert!(
            got == expected,
            "{target} after the diff differs from {want}:\n{}",
            text_diff(&got, &expected, &cluster.root)
        );
    }
}
