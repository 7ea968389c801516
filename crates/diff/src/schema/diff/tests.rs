//! The planner on hand-made readings: no server needed.

use std::collections::BTreeSet;

use super::*;
use crate::schema::model::{ColumnDef, CommentDef, ConstraintDef, SequenceDef, TableDef, ViewDef};
use crate::schema::three_way::{changed_ids, conflicts};

fn id(kind: ObjectKind, name: &str) -> ObjectId {
    ObjectId::new(kind, name)
}

fn table(name: &str) -> (ObjectId, Object) {
    (
        id(ObjectKind::Table, name),
        Object::new(
            Definition::Table(TableDef {
                name: name.into(),
                owner: "app".into(),
                unlogged: false,
                partition_key: None,
                partition_of: None,
                inherits: vec![],
                options: vec![],
                replica_identity: "DEFAULT".into(),
                replica_index: None,
                own_not_null: vec![],
                own_defaults: vec![],
                parent_defaults: Default::default(),
            }),
            None,
        ),
    )
}

fn column(table: &str, name: &str, data_type: &str, position: i32) -> (ObjectId, Object) {
    let mut obj = Object::new(
        Definition::Column(ColumnDef {
            table: table.into(),
            name: name.into(),
            data_type: data_type.into(),
            collation: None,
            not_null: false,
            default: None,
            generated: None,
            identity: None,
            statistics: None,
            storage: None,
            type_storage: "PLAIN".into(),
            compression: None,
            local: true,
        }),
        Some(id(ObjectKind::Table, table)),
    );
    obj.position = position;
    (id(ObjectKind::Column, &format!("{table}.{name}")), obj)
}

fn constraint(table: &str, name: &str, t: ConstraintType, def: &str) -> (ObjectId, Object) {
    (
        id(ObjectKind::Constraint, &format!("{table}.{name}")),
        Object::new(
            Definition::Constraint(ConstraintDef {
                table: table.into(),
                name: name.into(),
                constraint_type: t,
                definition: def.into(),
                clustered: false,
            }),
            Some(id(ObjectKind::Table, table)),
        ),
    )
}

fn view(name: &str, query: &str, columns: &[(&str, &str)]) -> (ObjectId, Object) {
    (
        id(ObjectKind::View, name),
        Object::new(
            Definition::View(ViewDef {
                name: name.into(),
                owner: "app".into(),
                definition: query.into(),
                columns: columns
                    .iter()
                    .map(|(n, t)| (n.to_string(), t.to_string()))
                    .collect(),
                options: vec![],
            }),
            None,
        ),
    )
}

fn comment(target: &ObjectId, on: &str, text: &str) -> (ObjectId, Object) {
    (
        ObjectId::comment(target),
        Object::new(
            Definition::Comment(CommentDef {
                on: on.into(),
                text: text.into(),
            }),
            Some(target.clone()),
        ),
    )
}

fn with_deps(mut o: (ObjectId, Object), deps: &[&ObjectId]) -> (ObjectId, Object) {
    o.1.deps = deps.iter().map(|d| (*d).clone()).collect();
    o
}

fn schema(objects: Vec<(ObjectId, Object)>) -> Schema {
    Schema {
        objects: objects.into_iter().collect(),
        unsupported: BTreeSet::new(),
        attached_indexes: Default::default(),
        inherited: Default::default(),
    }
}

/// Index of the first statement containing `needle`.
fn at(script: &[String], needle: &str) -> usize {
    script
        .iter()
        .position(|s| s.contains(needle))
        .unwrap_or_else(|| panic!("no statement contains {needle:?} in {script:#?}"))
}

fn orders() -> Vec<(ObjectId, Object)> {
    vec![
        table("public.orders"),
        column("public.orders", "id", "integer", 1),
        column("public.orders", "total", "numeric(10,2)", 2),
    ]
}

#[test]
fn column_order_is_not_identity() {
    // The same columns at other attnums (a column dropped and re-added
    // before them, say) are the same columns.
    let a = schema(orders());
    let mut moved = orders();
    moved[1].1.position = 5;
    moved[2].1.position = 9;
    let d = diff_schema(&a, &schema(moved));
    assert!(d.is_empty(), "{d}");
}

#[test]
fn a_view_over_a_retyped_column_is_dropped_first_and_made_again_after() {
    let total = id(ObjectKind::Column, "public.orders.total");
    let v = with_deps(
        view(
            "public.totals",
            " SELECT orders.total FROM public.orders",
            &[("total", "numeric")],
        ),
        &[&total],
    );
    let v_comment = comment(&v.0, "VIEW public.totals", "sums");
    let mut from = orders();
    from.push(v.clone());
    from.push(v_comment.clone());
    let mut to = from.clone();
    to[2] = column("public.orders", "total", "numeric(12,2)", 2);
    let d = diff_schema(&schema(from), &schema(to));
    let sql = d.sql();
    let drop_view = at(&sql, "DROP VIEW public.totals");
    let retype = at(&sql, "TYPE numeric(12,2)");
    let create_view = at(&sql, "CREATE VIEW public.totals");
    let comment_again = at(&sql, "COMMENT ON VIEW public.totals");
    assert!(drop_view < retype && retype < create_view && create_view < comment_again);
    // The view did not change: it is rebuilt, not a change of its own.
    let kinds: Vec<(String, ChangeKind)> = d
        .changes
        .iter()
        .map(|c| (c.id.to_string(), c.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("column public.orders.total".into(), ChangeKind::Modified),
            ("view public.totals".into(), ChangeKind::Rebuilt),
            ("comment view public.totals".into(), ChangeKind::Rebuilt),
        ]
    );
    assert_eq!(
        changed_ids(&d),
        BTreeSet::from([id(ObjectKind::Column, "public.orders.total")])
    );
}

#[test]
fn dropping_a_table_drops_nothing_else_by_hand() {
    let mut from = orders();
    from.push(constraint(
        "public.orders",
        "orders_pkey",
        ConstraintType::PrimaryKey,
        "PRIMARY KEY (id)",
    ));
    let t = id(ObjectKind::Table, "public.orders");
    from.push(comment(&t, "TABLE public.orders", "all of them"));
    let d = diff_schema(&schema(from), &schema(vec![]));
    assert_eq!(d.sql(), vec!["DROP TABLE public.orders"]);
    // Its parts are listed as removed with it, so that a three-way check
    // sees the columns go.
    let implied: Vec<String> = d
        .changes
        .iter()
        .filter(|c| c.implied_by.as_ref() == Some(&t))
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(
        implied,
        vec![
            "column public.orders.id",
            "column public.orders.total",
            "constraint public.orders.orders_pkey",
            "comment table public.orders",
        ]
    );
    assert!(
        d.to_string()
            .contains("- table public.orders (4 more dropped with it)")
    );
}

#[test]
fn a_new_table_has_its_columns_in_position_order_and_keys_before_foreign_keys() {
    let customers = table("public.customers");
    let cid = column("public.customers", "id", "bigint", 1);
    let pkey = constraint(
        "public.customers",
        "customers_pkey",
        ConstraintType::PrimaryKey,
        "PRIMARY KEY (id)",
    );
    let from = schema(orders());
    let mut to = orders();
    to.push(column("public.orders", "customer_id", "bigint", 7));
    to.push(column("public.orders", "note", "text", 4));
    to.push(customers);
    to.push(column("public.customers", "name", "text", 3));
    to.push(cid);
    to.push(pkey.clone());
    to.push(with_deps(
        constraint(
            "public.orders",
            "orders_customer_fkey",
            ConstraintType::ForeignKey,
            "FOREIGN KEY (customer_id) REFERENCES public.customers(id)",
        ),
        &[&pkey.0],
    ));
    let d = diff_schema(&from, &schema(to));
    let sql = d.sql();
    assert!(
        sql[at(&sql, "CREATE TABLE public.customers")]
            .contains("CREATE TABLE public.customers (\n    id bigint,\n    name text\n)")
    );
    assert!(at(&sql, "ADD COLUMN note") < at(&sql, "ADD COLUMN customer_id"));
    assert!(at(&sql, "customers_pkey") < at(&sql, "orders_customer_fkey"));
    assert!(at(&sql, "ADD COLUMN customer_id") < at(&sql, "orders_customer_fkey"));
}

#[test]
fn a_sequence_is_made_before_the_default_that_calls_it_and_owned_after() {
    let seq = id(ObjectKind::Sequence, "public.orders_id_seq");
    let owner = id(ObjectKind::Column, "public.orders.id");
    let sequence = (
        seq.clone(),
        Object::new(
            Definition::Sequence(SequenceDef {
                name: "public.orders_id_seq".into(),
                owner: "app".into(),
                data_type: "integer".into(),
                start: 1,
                increment: 1,
                min: 1,
                max: 2147483647,
                cache: 1,
                cycle: false,
                unlogged: false,
                owned_by: Some(owner.clone()),
            }),
            None,
        ),
    );
    let mut to = vec![table("public.orders"), sequence];
    let mut idcol = column("public.orders", "id", "integer", 1);
    if let Definition::Column(c) = &mut idcol.1.def {
        c.default = Some("nextval('public.orders_id_seq'::regclass)".into());
    }
    to.push(with_deps(idcol, &[&seq]));
    let to = schema(to);
    let d = diff_schema(&schema(vec![]), &to);
    let sql = d.sql();
    assert!(at(&sql, "CREATE SEQUENCE") < at(&sql, "CREATE TABLE"));
    assert_eq!(
        sql.last().unwrap(),
        "ALTER SEQUENCE public.orders_id_seq OWNED BY public.orders.id"
    );
    // Dropping the table takes the owned sequence with it.
    let back = diff_schema(&to, &schema(vec![]));
    assert_eq!(back.sql(), vec!["DROP TABLE public.orders"]);
}

#[test]
fn an_altered_object_stops_using_what_is_dropped_before_it_goes() {
    let f = id(ObjectKind::Function, "public.f()");
    let mut from = orders();
    if let Definition::Column(c) = &mut from[1].1.def {
        c.default = Some("public.f()".into());
    }
    from[1].1.deps.insert(f.clone());
    from.push((
        f.clone(),
        Object::new(
            Definition::Routine(crate::schema::model::RoutineDef {
                procedure: false,
                signature: "public.f()".into(),
                arguments: String::new(),
                result: Some("integer".into()),
                definition: "CREATE OR REPLACE FUNCTION public.f() ...".into(),
                owner: "app".into(),
            }),
            None,
        ),
    ));
    let to = orders();
    let d = diff_schema(&schema(from), &schema(to));
    let sql = d.sql();
    assert!(at(&sql, "ALTER COLUMN id DROP DEFAULT") < at(&sql, "DROP FUNCTION public.f()"));
}

fn change(id: ObjectId, after: Option<&str>) -> ObjectChange {
    ObjectChange {
        id,
        kind: if after.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Removed
        },
        detail: String::new(),
        sql: vec![],
        parent: None,
        implied_by: None,
        before: None,
        after: after.map(|text| {
            Definition::Comment(CommentDef {
                on: "TABLE public.t".into(),
                text: text.into(),
            })
        }),
    }
}

#[test]
fn conflicts_are_objects_changed_on_both_sides_to_different_results() {
    let same = id(ObjectKind::Comment, "table public.same");
    let differ = id(ObjectKind::Comment, "table public.differ");
    let dropped = id(ObjectKind::Comment, "table public.dropped");
    let only_branch = id(ObjectKind::Comment, "table public.branch");
    let rebuilt = id(ObjectKind::View, "public.v");
    let rebuilt_here = id(ObjectKind::View, "public.w");
    let rebuilt_change = |id: &ObjectId, def: &str| ObjectChange {
        kind: ChangeKind::Rebuilt,
        ..change(id.clone(), Some(def))
    };
    let branch = SchemaDiff {
        changes: vec![
            change(same.clone(), Some("x")),
            change(differ.clone(), Some("x")),
            change(dropped.clone(), None),
            change(only_branch, Some("x")),
            rebuilt_change(&rebuilt, "base"),
            rebuilt_change(&rebuilt_here, "base"),
        ],
        ..SchemaDiff::default()
    };
    let source = SchemaDiff {
        changes: vec![
            change(same, Some("x")),
            change(differ.clone(), Some("y")),
            change(dropped.clone(), Some("kept and changed")),
            rebuilt_change(&rebuilt, "base"),
            change(rebuilt_here.clone(), Some("changed by the source")),
        ],
        ..SchemaDiff::default()
    };
    // Rebuilt on both sides from the same definition: no conflict. Rebuilt
    // by the branch from the base definition while the source changed it:
    // applying the branch would undo the source's change.
    assert_eq!(
        conflicts(&branch, &source),
        BTreeSet::from([differ, dropped, rebuilt_here])
    );
}

#[test]
fn a_table_dropped_on_one_side_conflicts_with_its_column_changed_on_the_other() {
    let base = schema(orders());
    let dropped = schema(vec![]);
    let mut retyped = orders();
    retyped[2] = column("public.orders", "total", "numeric(12,2)", 2);
    let x = diff_schema(&base, &dropped);
    let s = diff_schema(&base, &schema(retyped));
    assert_eq!(
        conflicts(&x, &s),
        BTreeSet::from([
            id(ObjectKind::Table, "public.orders"),
            id(ObjectKind::Column, "public.orders.total"),
        ])
    );
    // The same drop on both sides is no conflict.
    assert!(conflicts(&x, &x).is_empty());
}

#[test]
fn diffs_serialise_to_json_and_back() {
    let mut to = orders();
    to[2] = column("public.orders", "total", "numeric(12,2)", 2);
    let d = diff_schema(&schema(orders()), &schema(to));
    let json = serde_json::to_string(&d).unwrap();
    assert!(
        json.contains(r#""id":"column public.orders.total""#),
        "{json}"
    );
    assert!(json.contains(r#""kind":"modified""#), "{json}");
    let back: SchemaDiff = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d);
    let s = schema(orders());
    let back: Schema = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn routines_make_the_script_start_by_turning_body_checks_off() {
    let f = (
        id(ObjectKind::Function, "public.f()"),
        Object::new(
            Definition::Routine(crate::schema::model::RoutineDef {
                procedure: false,
                signature: "public.f()".into(),
                arguments: String::new(),
                result: Some("integer".into()),
                definition: "CREATE OR REPLACE FUNCTION public.f() RETURNS integer \
                             LANGUAGE sql AS $$ SELECT count(*) FROM public.v $$"
                    .into(),
                owner: "app".into(),
            }),
            None,
        ),
    );
    let d = diff_schema(&schema(vec![]), &schema(vec![f]));
    assert_eq!(d.sql()[0], "SET check_function_bodies = false");
    assert_eq!(d.sql().len(), 3);
}

#[test]
fn a_child_added_to_what_the_other_side_drops_conflicts() {
    let base = schema(orders());
    let mut with_note = orders();
    with_note.push(column("public.orders", "note", "text", 3));
    let t = id(ObjectKind::Table, "public.orders");
    with_note.push(comment(&t, "TABLE public.orders", "kept"));
    let x = diff_schema(&base, &schema(vec![]));
    let s = diff_schema(&base, &schema(with_note));
    let both = conflicts(&x, &s);
    assert_eq!(
        both,
        BTreeSet::from([
            t.clone(),
            id(ObjectKind::Column, "public.orders.note"),
            ObjectId::comment(&t),
        ])
    );
    assert_eq!(conflicts(&s, &x), both);
}

#[test]
fn an_enum_made_again_carries_its_columns_through_text() {
    use crate::schema::model::{EnumDef, RoutineDef};
    let e = id(ObjectKind::Enum, "public.mood");
    let f = id(ObjectKind::Function, "public.f()");
    let mood = |labels: &[&str]| {
        (
            e.clone(),
            Object::new(
                Definition::Enum(EnumDef {
                    name: "public.mood".into(),
                    owner: "app".into(),
                    labels: labels.iter().map(|l| l.to_string()).collect(),
                }),
                None,
            ),
        )
    };
    let func = |result: &str| {
        with_deps(
            (
                f.clone(),
                Object::new(
                    Definition::Routine(RoutineDef {
                        procedure: false,
                        signature: "public.f()".into(),
                        arguments: String::new(),
                        result: Some(result.into()),
                        definition: format!("CREATE OR REPLACE FUNCTION public.f() -> {result}"),
                        owner: "app".into(),
                    }),
                    None,
                ),
            ),
            &[&e],
        )
    };
    let mut col = column("public.orders", "mood", "public.mood", 3);
    if let Definition::Column(c) = &mut col.1.def {
        c.default = Some("public.f()".into());
    }
    let col = with_deps(col, &[&e, &f]);
    let mut from = orders();
    from.extend([mood(&["a", "b"]), func("public.mood"), col.clone()]);
    let mut to = orders();
    to.extend([mood(&["b", "a"]), func("SETOF public.mood"), col]);
    let d = diff_schema(&schema(from), &schema(to));
    let sql = d.sql();
    let detach = at(&sql, "ALTER COLUMN mood TYPE text USING mood::text");
    assert!(sql[detach - 1].ends_with("ALTER COLUMN mood DROP DEFAULT"));
    assert_eq!(sql.iter().filter(|s| s.contains("DROP DEFAULT")).count(), 1);
    assert!(detach < at(&sql, "DROP FUNCTION public.f()"));
    assert!(at(&sql, "DROP FUNCTION public.f()") < at(&sql, "DROP TYPE public.mood"));
    assert!(at(&sql, "DROP TYPE public.mood") < at(&sql, "CREATE TYPE public.mood"));
    let back = at(&sql, "TYPE public.mood USING mood::public.mood");
    assert!(at(&sql, "CREATE OR REPLACE FUNCTION public.f()") < at(&sql, "SET DEFAULT public.f()"));
    assert!(at(&sql, "CREATE TYPE public.mood") < back);
    let kinds: Vec<(String, ChangeKind)> = d
        .changes
        .iter()
        .map(|c| (c.id.to_string(), c.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("enum public.mood".into(), ChangeKind::Modified),
            ("column public.orders.mood".into(), ChangeKind::Rebuilt),
            ("function public.f()".into(), ChangeKind::Modified),
        ]
    );
}
