//! A fingerprint of everything on a source that a read-only or dry-run
//! agent must not change: rows, schema, functions, privileges, roles,
//! settings, and sequences (whose values a dry run may only advance, by
//! `nextval`, which no rollback undoes).

#![allow(dead_code)]

use std::collections::BTreeMap;

use crate::common::{self, TestHome};

/// What is compared; sequences apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Named parts (rows of a table, the schema, roles...), each a digest
    /// or a short text.
    pub parts: BTreeMap<String, String>,
    /// Each sequence's last value (NULL before its first nextval: 0).
    pub sequences: BTreeMap<String, i64>,
}

/// Catalog reads, each one part of the fingerprint; names outside the
/// system schemas only where the catalog holds both.
const CATALOG: &[(&str, &str)] = &[
    (
        "relations",
        "SELECT format('%s.%s:%s:%s:%s:%s', c.relnamespace::regnamespace, c.relname, c.relkind, c.relowner::regrole, c.relacl,
           (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''), ',' ORDER BY a.attnum)
              FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))
           FROM pg_class c WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace)
             AND c.relpersistence <> 't'",
    ),
    (
        "constraints and indexes",
        "SELECT format('%s:%s:%s', conrelid::regclass, conname, pg_get_constraintdef(oid)) FROM pg_constraint WHERE connamespace <> 'pg_catalog'::regnamespace
         UNION ALL SELECT format('%s:%s', indexrelid::regclass, pg_get_indexdef(indexrelid)) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
          WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'pg_toast'::regnamespace)",
    ),
    (
        "functions",
        "SELECT format('%s.%s(%s):%s:%s:%s:%s:%s', pronamespace::regnamespace, proname, pg_get_function_identity_arguments(oid), proowner::regrole, prosecdef, proacl, proconfig, md5(prosrc))
           FROM pg_proc WHERE pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)",
    ),
    (
        "triggers, rules, policies",
        "SELECT format('trigger %s:%s:%s', tgrelid::regclass, tgname, tgenabled) FROM pg_trigger WHERE NOT tgisinternal
         UNION ALL SELECT format('rule %s:%s:%s', ev_class::regclass, rulename, ev_enabled) FROM pg_rewrite WHERE ev_class >= 16384
         UNION ALL SELECT format('policy %s:%s', polrelid::regclass, polname) FROM pg_policy
         UNION ALL SELECT format('event trigger %s:%s', evtname, evtenabled) FROM pg_event_trigger",
    ),
    (
        "types, operators, casts",
        "SELECT format('type %s.%s %s', typnamespace::regnamespace, typname, typowner::regrole) FROM pg_type WHERE oid >= 16384 AND typnamespace <> 'pg_toast'::regnamespace
         UNION ALL SELECT format('operator %s.%s %s', oprnamespace::regnamespace, oprname, oprcode) FROM pg_operator WHERE oid >= 16384
         UNION ALL SELECT format('cast %s', oid) FROM pg_cast WHERE oid >= 16384",
    ),
    (
        "schemas, extensions, large objects, comments",
        "SELECT format('schema %s %s %s', nspname, nspowner::regrole, nspacl) FROM pg_namespace
         UNION ALL SELECT format('extension %s %s', extname, extversion) FROM pg_extension
         UNION ALL SELECT format('large object %s', oid) FROM pg_largeobject_metadata
         UNION ALL SELECT format('comment %s %s', objoid, md5(description)) FROM pg_description WHERE objoid >= 16384
         UNION ALL SELECT format('default acl %s %s %s', defaclrole::regrole, defaclobjtype, defaclacl) FROM pg_default_acl
         UNION ALL SELECT format('publication %s', pubname) FROM pg_publication",
    ),
    (
        "roles",
        "SELECT format('%s:%s%s%s%s%s%s%s%s:%s:%s:%s', a.rolname, a.rolsuper, a.rolinherit, a.rolcreaterole, a.rolcreatedb, a.rolcanlogin,
                       a.rolreplication, a.rolbypassrls, a.rolconnlimit, a.rolvaliduntil, md5(coalesce(a.rolpassword, '')),
                       (SELECT string_agg(m.roleid::regrole::text, ',' ORDER BY 1) FROM pg_auth_members m WHERE m.member = a.oid))
           FROM pg_authid a",
    ),
    (
        "databases and settings",
        "SELECT format('database %s %s %s %s %s', datname, datdba::regrole, datallowconn, datconnlimit, datacl) FROM pg_database
         UNION ALL SELECT format('role setting %s %s %s', setdatabase, setrole, setconfig) FROM pg_db_role_setting
         UNION ALL SELECT format('file setting %s %s %s %s', sourcefile, name, setting, applied) FROM pg_file_settings
         UNION ALL SELECT format('prepared %s', gid) FROM pg_prepared_xacts
         UNION ALL SELECT format('slot %s', slot_name) FROM pg_replication_slots
         UNION ALL SELECT format('tablespace %s', spcname) FROM pg_tablespace",
    ),
];

/// Reads the fingerprint of database `db` of source `source`, as superuser.
pub fn fingerprint(home: &TestHome, source: &str, db: &str) -> Fingerprint {
    let mut su = home.source_superuser(source, db);
    let mut parts = BTreeMap::new();
    for (name, sql) in CATALOG {
        let rows = su
            .query(
                &format!(
                    "SELECT coalesce(string_agg(x, E'\\n' ORDER BY x), '') FROM ({sql}) AS t(x)"
                ),
                &[],
            )
            .unwrap_or_else(|e| panic!("fingerprint {name}: {e:?}"));
        parts.insert(name.to_string(), rows[0].get::<_, String>(0));
    }
    for (table, digest) in table_digests(&mut su) {
        parts.insert(format!("rows of {table}"), digest);
    }
    let sequences = su
        .query(
            "SELECT format('%I.%I', schemaname, sequencename), coalesce(last_value, 0) FROM pg_sequences",
            &[],
        )
        .expect("sequences")
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    Fingerprint { parts, sequences }
}

/// Each user table of the connected database with a digest of its rows,
/// in name order.
pub fn table_digests(su: &mut postgres::Client) -> Vec<(String, String)> {
    let tables: Vec<String> = su
        .query(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
              WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            &[],
        )
        .expect("list tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let digest = common::text(
                su,
                &format!(
                    "SELECT coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), 'empty') FROM {t} x"
                ),
            );
            (t, digest)
        })
        .collect()
}

impl Fingerprint {
    /// What differs from `before`, beyond sequences advanced by at most
    /// `nextval_gap` (empty: nothing).
    pub fn changes_since(&self, before: &Fingerprint, nextval_gap: i64) -> Vec<String> {
        let mut out = Vec::new();
        for (name, was) in &before.parts {
            match self.parts.get(name) {
                Some(now) if now == was => {}
                Some(now) => out.push(format!("{name}: was\n{was}\nnow\n{now}")),
                None => out.push(format!("{name}: gone")),
            }
        }
        for name in self.parts.keys() {
            if !before.parts.contains_key(name) {
                out.push(format!("{name}: new"));
            }
        }
        if self.sequences.keys().ne(before.sequences.keys()) {
            out.push(format!(
                "sequences: were {:?}, now {:?}",
                before.sequences, self.sequences
            ));
        }
        for (name, was) in &before.sequences {
            if let Some(now) = self.sequences.get(name)
                && !(*was <= *now && *now <= was + nextval_gap)
            {
                out.push(format!(
                    "sequence {name}: was {was}, now {now} (a gap of at most {nextval_gap} allowed)"
                ));
            }
        }
        out
    }
}
