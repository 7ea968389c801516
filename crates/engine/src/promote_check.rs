//! Promote checks its own result (issue 14), inside its transaction,
//! before it commits: the source's catalog must hold what a three-way
//! merge says it should, and each changed table the number of rows the
//! patch meant to leave. Otherwise the promote is rolled back and the
//! differences are reported, so that exit 0 means the source has the
//! branch's changes.
//!
//! The catalog is compared as a fingerprint read independently of the diff
//! engine that wrote the patch: every user object, keyed by kind and name,
//! with its definition as PostgreSQL itself prints it (`pg_get_*def`). A
//! gap in the diff engine (an object kind it does not compare) therefore
//! shows as a difference here instead of passing unseen. Column order is
//! left out: PostgreSQL cannot change it.

use std::collections::{BTreeMap, BTreeSet};

use pgfork_pg::sql::quote_ident;

use crate::Strategy;

/// Every user object of a database: `kind schema.name[.part]` to its
/// definition.
pub(crate) type Fingerprint = BTreeMap<String, String>;

const FINGERPRINT: &str = r#"
WITH ns AS (
    SELECT oid, nspname FROM pg_namespace
     WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_%'
), rel AS (
    SELECT c.oid, c.relkind, c.relpersistence, c.reloptions, c.relpartbound, c.relrowsecurity,
           quote_ident(ns.nspname) || '.' || quote_ident(c.relname) AS name
      FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
), parents AS (
    SELECT i.inhrelid, string_agg(quote_ident(pn.nspname) || '.' || quote_ident(p.relname), ',' ORDER BY 1) AS of
      FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
     GROUP BY i.inhrelid
)
SELECT 'schema ' || quote_ident(nspname), '' FROM ns
UNION ALL
SELECT 'relation ' || r.name,
       r.relkind::text || ' ' || r.relpersistence::text
       || CASE WHEN r.relrowsecurity THEN ' rls' ELSE '' END
       || coalesce(' with ' || array_to_string(r.reloptions, ','), '')
       || coalesce(' partition by ' || pg_get_partkeydef(r.oid), '')
       || coalesce(' ' || pg_get_expr(r.relpartbound, r.oid), '')
       || coalesce(' of ' || p.of, '')
  FROM rel r LEFT JOIN parents p ON p.inhrelid = r.oid
 WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'i', 'I')
UNION ALL
SELECT 'column ' || r.name || '.' || quote_ident(a.attname),
       format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' collate ' || quote_ident(co.collname), '')
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
       || CASE WHEN a.attidentity::text <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
       || CASE WHEN a.attgenerated::text <> '' THEN ' generated' ELSE '' END
  FROM rel r
  JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  LEFT JOIN pg_type ty ON ty.oid = a.atttypid
  LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> ty.typcollation
 WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT 'constraint ' || r.name || '.' || quote_ident(con.conname), pg_get_constraintdef(con.oid)
  FROM pg_constraint con JOIN rel r ON r.oid = con.conrelid
UNION ALL
SELECT 'index ' || r.name, pg_get_indexdef(r.oid) FROM rel r WHERE r.relkind IN ('i', 'I')
UNION ALL
SELECT 'view ' || r.name, pg_get_viewdef(r.oid) FROM rel r WHERE r.relkind IN ('v', 'm')
UNION ALL
SELECT 'trigger ' || r.name || '.' || quote_ident(t.tgname), pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN rel r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
UNION ALL
SELECT 'function ' || quote_ident(ns.nspname) || '.' || quote_ident(p.proname)
       || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       pg_get_functiondef(p.oid)
  FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace WHERE p.prokind IN ('f', 'p')
UNION ALL
SELECT 'type ' || quote_ident(ns.nspname) || '.' || quote_ident(t.typname),
       t.typtype::text
       || coalesce(' ' || (SELECT string_agg(quote_literal(e.enumlabel), ',' ORDER BY e.enumsortorder)
                             FROM pg_enum e WHERE e.enumtypid = t.oid), '')
       || CASE WHEN t.typtype = 'd' THEN ' ' || format_type(t.typbasetype, t.typtypmod)
               || CASE WHEN t.typnotnull THEN ' not null' ELSE '' END
               || coalesce(' default ' || t.typdefault, '') ELSE '' END
  FROM pg_type t JOIN ns ON ns.oid = t.typnamespace WHERE t.typtype IN ('e', 'd', 'r')
UNION ALL
SELECT 'constraint ' || quote_ident(ns.nspname) || '.' || quote_ident(t.typname) || '.' || quote_ident(con.conname),
       pg_get_constraintdef(con.oid)
  FROM pg_constraint con JOIN pg_type t ON t.oid = con.contypid JOIN ns ON ns.oid = t.typnamespace
UNION ALL
SELECT 'sequence ' || r.name,
       format_type(s.seqtypid, NULL) || ' ' || s.seqstart || ' ' || s.seqincrement || ' '
       || s.seqmin || ' ' || s.seqmax || ' ' || s.seqcache || CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END
  FROM pg_sequence s JOIN rel r ON r.oid = s.seqrelid
UNION ALL
SELECT 'policy ' || r.name || '.' || quote_ident(pol.polname),
       pol.polcmd::text || ' ' || pol.polpermissive::text || ' ' || coalesce(pg_get_expr(pol.polqual, pol.polrelid), '')
       || ' ' || coalesce(pg_get_expr(pol.polwithcheck, pol.polrelid), '')
  FROM pg_policy pol JOIN rel r ON r.oid = pol.polrelid
UNION ALL
SELECT 'collation ' || quote_ident(ns.nspname) || '.' || quote_ident(c.collname),
       c.collprovider::text || ' ' || coalesce(c.collcollate, '') || ' ' || coalesce(c.collctype, '')
  FROM pg_collation c JOIN ns ON ns.oid = c.collnamespace
UNION ALL
SELECT 'extension ' || quote_ident(extname), extversion FROM pg_extension
"#;

/// Reads the fingerprint of the database `client` is connected to (inside
/// a transaction, what it has done so far included).
pub(crate) fn fingerprint(
    client: &mut impl postgres::GenericClient,
) -> Result<Fingerprint, postgres::Error> {
    let mut out = Fingerprint::new();
    for row in client.query(FINGERPRINT, &[])? {
        let key: String = row.get(0);
        let def: Option<String> = row.get(1);
        out.insert(key, def.unwrap_or_default());
    }
    Ok(out)
}

/// Where the source's catalog after the patch differs from what it should
/// be: for each object, the branch's definition if the branch changed it,
/// else the source's own from before (with `theirs`, the source's where
/// both changed it). At most `limit` differences are listed.
pub(crate) fn catalog_differences(
    base: &Fingerprint,
    branch: &Fingerprint,
    before: &Fingerprint,
    after: &Fingerprint,
    strategy: Option<Strategy>,
    limit: usize,
) -> Vec<String> {
    let keys: BTreeSet<&String> = base
        .keys()
        .chain(branch.keys())
        .chain(before.keys())
        .chain(after.keys())
        .collect();
    let mut out = Vec::new();
    for key in keys {
        let (b, x, s) = (base.get(key), branch.get(key), before.get(key));
        let want = if b == x {
            s
        } else if s == b || strategy != Some(Strategy::Theirs) {
            x
        } else {
            s
        };
        let got = after.get(key);
        if want != got {
            let shown = |v: Option<&String>| match v {
                None => "absent".to_string(),
                Some(d) if d.is_empty() => "present".to_string(),
                Some(d) => {
                    let d: String = d.split_whitespace().collect::<Vec<_>>().join(" ");
                    let cut: String = d.chars().take(160).collect();
                    if cut.len() < d.len() {
                        format!("{cut} ...")
                    } else {
                        cut
                    }
                }
            };
            out.push(format!(
                "{key}: should be {}, is {}",
                shown(want),
                shown(got)
            ));
            if out.len() >= limit {
                break;
            }
        }
    }
    out
}

/// `SELECT count(*)` of table `schema.name`, or `None` if it does not exist.
pub(crate) fn count_rows(
    client: &mut impl postgres::GenericClient,
    schema: &str,
    name: &str,
) -> Result<Option<i64>, postgres::Error> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL",
            &[&schema, &name],
        )?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let sql = format!(
        "SELECT count(*) FROM {}.{}",
        quote_ident(schema),
        quote_ident(name)
    );
    Ok(Some(client.query_one(&sql, &[])?.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(pairs: &[(&str, &str)]) -> Fingerprint {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn three_way_expectations() {
        let base = fp(&[
            ("column t.a", "int"),
            ("column t.b", "text"),
            ("relation u", "r"),
        ]);
        // The branch changes a, adds c; the source added its own table v.
        let branch = fp(&[
            ("column t.a", "bigint"),
            ("column t.b", "text"),
            ("column t.c", "int"),
            ("relation u", "r"),
        ]);
        let before = fp(&[
            ("column t.a", "int"),
            ("column t.b", "text"),
            ("relation u", "r"),
            ("relation v", "r"),
        ]);
        let good = fp(&[
            ("column t.a", "bigint"),
            ("column t.b", "text"),
            ("column t.c", "int"),
            ("relation u", "r"),
            ("relation v", "r"),
        ]);
        assert!(catalog_differences(&base, &branch, &before, &good, None, 10).is_empty());
        // A patch that lost the new column and dropped the source's table.
        let bad = fp(&[
            ("column t.a", "bigint"),
            ("column t.b", "text"),
            ("relation u", "r"),
        ]);
        let found = catalog_differences(&base, &branch, &before, &bad, None, 10);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("column t.c: should be int, is absent"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("relation v: should be r, is absent"),
            "{found:?}"
        );
    }

    #[test]
    fn theirs_keeps_the_sources_side_of_a_conflict() {
        let base = fp(&[("column t.a", "int")]);
        let branch = fp(&[("column t.a", "bigint")]);
        let before = fp(&[("column t.a", "numeric")]);
        let after = fp(&[("column t.a", "numeric")]);
        assert!(
            catalog_differences(&base, &branch, &before, &after, Some(Strategy::Theirs), 10)
                .is_empty()
        );
        assert_eq!(
            catalog_differences(&base, &branch, &before, &after, Some(Strategy::Ours), 10).len(),
            1
        );
    }
}
