//! The schema diff checked against an independent tool: migra (PyPI
//! `migra`, a schema diff for PostgreSQL built on `schemainspect`).
//!
//! migra installs and runs against PostgreSQL 15 here (`pip install migra
//! psycopg2-binary`; with SQLAlchemy 2 it needs the `postgresql+psycopg2`
//! URL scheme). Both tools diff the same pair of databases; each change is
//! reduced to the top-level object it affects (a column, constraint,
//! index, trigger, policy or grant to its table, a function to its name),
//! and the sets must agree:
//!
//! - everything migra finds changed, the schema diff finds changed;
//! - what only the schema diff finds is exactly the list of things migra
//!   does not look at, each with the reason below.
//!
//! The SQL itself is compared by pg_dump in `schema_roundtrip.rs`.
//!
//! migra missing is a failure with install instructions, never a skip.
//! `PGFORK_TEST_MIGRA` may name the executable (default: `migra` on PATH).

mod schema_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use pgfork_diff::schema::{Definition, ObjectId, ObjectKind, Schema, diff_schema, read_schema};
use schema_support::{BASE, CHANGES, Cluster, ROLES};

/// What only the schema diff reports, because migra does not compare it.
const MIGRA_DOES_NOT_SEE: &[(&str, &str)] = &[
    ("app.positive", "domains: migra does not diff domains"),
    ("app.short_text", "domains: migra does not diff domains"),
    (
        "app.invoice_no",
        "sequence options (INCREMENT, MAXVALUE): migra ignores them",
    ),
    (
        "app.order_count",
        "function privileges: migra --with-privileges only compares table privileges",
    ),
];

#[test]
fn migra_agrees_on_what_changed() {
    let migra = std::env::var("PGFORK_TEST_MIGRA").unwrap_or_else(|_| "migra".to_string());
    let cluster = Cluster::start();
    cluster.exec("postgres", ROLES);
    cluster.exec("postgres", "CREATE DATABASE a");
    cluster.exec("a", BASE);
    cluster.exec("postgres", "CREATE DATABASE b TEMPLATE a");
    cluster.exec("b", CHANGES);

    let from = read_schema(&mut cluster.connect("a")).expect("read a");
    let to = read_schema(&mut cluster.connect("b")).expect("read b");
    let diff = diff_schema(&from, &to);

    let out = Command::new(&migra)
        .args(["--unsafe", "--with-privileges"])
        .arg(cluster.url("postgresql+psycopg2", "a"))
        .arg(cluster.url("postgresql+psycopg2", "b"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "\n\ncannot run {migra}: {e}.\nThis test compares the schema diff with migra: \
                 `pip install migra psycopg2-binary` (or set PGFORK_TEST_MIGRA to its path).\n\
                 It is never skipped.\n\n"
            )
        });
    // migra exits 2 when the databases differ, 0 when they do not.
    assert_eq!(
        out.status.code(),
        Some(2),
        "migra failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8(out.stdout).expect("migra output is UTF-8");

    let names = Names::new(&from, &to);
    let theirs: BTreeSet<String> = statements(&script)
        .filter_map(|s| names.migra_statement(s))
        .collect();
    // Rebuilt objects count: migra drops and creates dependents too.
    let ours: BTreeSet<String> = diff
        .changes
        .iter()
        .map(|c| unquote(&names.top_level(&c.id)))
        .collect();

    let missed: Vec<&String> = theirs.difference(&ours).collect();
    assert!(
        missed.is_empty(),
        "migra finds changes in {missed:?} that the schema diff does not report\n\
         --- migra ---\n{script}\n--- schema diff ---\n{diff}"
    );
    let only_ours: BTreeSet<&str> = ours.difference(&theirs).map(String::as_str).collect();
    let expected: BTreeSet<&str> = MIGRA_DOES_NOT_SEE.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        only_ours, expected,
        "objects only the schema diff reports, other than those migra is known not to \
         compare\n--- migra ---\n{script}\n--- schema diff ---\n{diff}"
    );
}

/// migra's statements: split at a `;` ending a line outside dollar
/// quotes (function bodies hold semicolons of their own).
fn statements(script: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quote: Option<String> = None;
    let mut offset = 0;
    for line in script.split_inclusive('\n') {
        for tag in dollar_tags(line) {
            match &quote {
                Some(open) if *open == tag => quote = None,
                None => quote = Some(tag),
                _ => {}
            }
        }
        offset += line.len();
        if quote.is_none() && line.trim_end().ends_with(';') {
            out.push(script[start..offset].trim());
            start = offset;
        }
    }
    out.push(script[start..].trim());
    out.into_iter()
        .map(|s| s.trim_end_matches(';').trim())
        .filter(|s| !s.is_empty() && !s.starts_with("--"))
}

/// The `$tag$` markers on a line, in order.
fn dollar_tags(line: &str) -> Vec<String> {
    let mut tags = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        match after.find('$') {
            Some(j) if after[..j].chars().all(|c| c.is_alphanumeric() || c == '_') => {
                tags.push(after[..j].to_string());
                rest = &after[j + 1..];
            }
            _ => rest = after,
        }
    }
    tags
}

/// Turns object names of either tool into `schema.name` of the top-level
/// object they belong to.
struct Names<'a> {
    from: &'a Schema,
    to: &'a Schema,
    /// `schema.index` (indexes and key constraints' indexes) -> table.
    index_tables: BTreeMap<String, String>,
}

impl<'a> Names<'a> {
    fn new(from: &'a Schema, to: &'a Schema) -> Names<'a> {
        let mut index_tables = BTreeMap::new();
        for s in [from, to] {
            for obj in s.objects.values() {
                match &obj.def {
                    Definition::Index(i) => {
                        index_tables.insert(i.name.clone(), i.table.clone());
                    }
                    Definition::Constraint(c) => {
                        let schema = c.table.split('.').next().unwrap_or_default();
                        index_tables.insert(format!("{schema}.{}", c.name), c.table.clone());
                    }
                    _ => {}
                }
            }
        }
        Names {
            from,
            to,
            index_tables,
        }
    }

    /// The top-level object a change of ours is about.
    fn top_level(&self, id: &ObjectId) -> String {
        let obj = self.to.get(id).or_else(|| self.from.get(id));
        match id.kind {
            ObjectKind::Function | ObjectKind::Procedure => {
                id.name.split('(').next().unwrap_or_default().to_string()
            }
            ObjectKind::RowSecurity => id.name.clone(),
            ObjectKind::Column
            | ObjectKind::Constraint
            | ObjectKind::Index
            | ObjectKind::Trigger
            | ObjectKind::Policy
            | ObjectKind::Grant
            | ObjectKind::Comment => {
                let parent = obj
                    .and_then(|o| o.parent.clone())
                    .unwrap_or_else(|| panic!("{id} has no parent"));
                self.top_level(&parent)
            }
            _ => id.name.clone(),
        }
    }

    /// The top-level object one of migra's statements is about (`None` for
    /// session settings). Panics on a statement it does not understand, so
    /// that nothing migra says is silently passed over.
    fn migra_statement(&self, statement: &str) -> Option<String> {
        let lower = statement.to_lowercase();
        let words: Vec<&str> = statement.split_whitespace().collect();
        let lwords: Vec<&str> = lower.split_whitespace().collect();
        let after = |key: &[&str]| -> Option<&str> {
            lwords
                .windows(key.len())
                .position(|w| w == key)
                .and_then(|i| words.get(i + key.len()).copied())
        };
        // Session settings, and `select 1; -- CREATE INDEX ...`: migra's
        // placeholder for an exclusion constraint's index, which the
        // constraint makes.
        if lower.starts_with("set ") || lower.starts_with("select 1") {
            return None;
        }
        let name = if lower.starts_with("create unique index") || lower.starts_with("create index")
        {
            after(&["on"]).map(|t| unquote(t.trim_start_matches("ONLY ")))
        } else if lower.starts_with("drop index") {
            let index = unquote(words.last().copied().unwrap_or_default());
            Some(
                self.index_tables
                    .get(&index)
                    .cloned()
                    .unwrap_or_else(|| panic!("migra drops unknown index {index}")),
            )
        } else if [
            "create trigger",
            "drop trigger",
            "create policy",
            "drop policy",
        ]
        .iter()
        .any(|p| lower.starts_with(p))
        {
            after(&["on"]).map(unquote)
        } else if lower.starts_with("grant ") || lower.starts_with("revoke ") {
            let on = lwords
                .iter()
                .position(|w| *w == "on")
                .unwrap_or_else(|| panic!("no ON in {statement}"));
            words.get(on + 2).map(|n| unquote(n))
        } else if lower.starts_with("create or replace function")
            || lower.starts_with("create or replace procedure")
        {
            words
                .get(4)
                .map(|n| unquote(n.split('(').next().unwrap_or_default()))
        } else if lower.starts_with("create or replace view") {
            words.get(4).map(|n| unquote(n))
        } else if lower.starts_with("create materialized view")
            || lower.starts_with("drop materialized view")
        {
            let rest = lower_after_kind(&lwords, &words, 3);
            rest.map(unquote)
        } else if lower.starts_with("create ")
            || lower.starts_with("drop ")
            || lower.starts_with("alter ")
        {
            lower_after_kind(&lwords, &words, 2).map(unquote)
        } else {
            panic!("a migra statement this test does not understand:\n{statement}")
        };
        let name = name.unwrap_or_else(|| panic!("no object name in migra's {statement}"));
        // A function's name may carry its argument list; migra renames an
        // enum it re-creates to this before dropping it.
        let name = name.split('(').next().unwrap_or_default();
        Some(
            name.trim_end_matches("__old_version_to_be_dropped")
                .to_string(),
        )
    }
}

/// The name after `create|drop|alter <kind words> [if [not] exists]`.
fn lower_after_kind<'w>(lwords: &[&str], words: &[&'w str], kind_words: usize) -> Option<&'w str> {
    let mut i = kind_words;
    if lwords.get(i) == Some(&"if") {
        i += if lwords.get(i + 1) == Some(&"not") {
            3
        } else {
            2
        };
    }
    words.get(i).copied()
}

/// `"app"."orders"` -> `app.orders`.
fn unquote(name: &str) -> String {
    name.replace('"', "")
}
