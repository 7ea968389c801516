//! Turning rules into SQL for one database, after checking them against
//! its catalog.

use std::collections::BTreeMap;

use crate::{MaskError, MaskRules, Transform, looks_personal};

/// Columns of user tables, as [`ColumnInfo`] wants them, in this order.
pub const CATALOG_QUERY: &str = "\
SELECT n.nspname::text, c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
       a.attnotnull, t.typcategory::text, t.typname::text,
       CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4 THEN a.atttypmod - 4 END,
       a.attgenerated::text, a.attidentity::text, c.relkind::text
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_type t ON t.oid = a.atttypid
 WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
 ORDER BY 1, 2, a.attnum";

/// A column as the database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// `format_type` of its type, e.g. `character varying(40)`.
    pub data_type: String,
    /// NOT NULL.
    pub not_null: bool,
    /// `pg_type.typcategory`: S string, N numeric, U user-defined...
    pub category: String,
    /// `pg_type.typname`: int4, uuid, citext...
    pub type_name: String,
    /// Declared length of varchar/char columns.
    pub max_len: Option<i32>,
    /// `attgenerated`: `s` for stored generated columns.
    pub generated: String,
    /// `attidentity`: `a` always, `d` by default.
    pub identity: String,
    /// `relkind`: `r` table, `p` partitioned table.
    pub relkind: String,
}

/// The SQL that masks one database, in order.
#[derive(Debug, Clone, Default)]
pub struct MaskPlan {
    /// Session setup: temporary functions. Run first, in one session.
    pub setup: Vec<String>,
    /// One statement list per table; run all in one transaction.
    pub updates: Vec<String>,
    /// Run after commit, each outside a transaction: rewrite the masked
    /// tables and the statistics catalogs so no old value stays in any file.
    pub rewrite: Vec<String>,
    /// Personal-looking columns without a rule.
    pub warnings: Vec<String>,
    /// Number of masked columns.
    pub masked_columns: usize,
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const FIRST_NAMES: &[&str] = &[
    "Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger",
    "Radia", "Donald", "Hedy", "John", "Karen", "Niklaus", "Sophie", "Tim", "Annie", "Bjarne",
    "Joan", "Guido", "Lynn", "Robin",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Liskov",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Knuth",
    "Lamarr",
    "Backus",
    "Jones",
    "Wirth",
    "Wilson",
    "Lee",
    "Easley",
    "Stroustrup",
    "Clarke",
    "Rossum",
    "Conway",
    "Milner",
];

/// The HMAC-SHA256 of the value as text, keyed by the source's secret,
/// computed by the server with built-in `sha256` (no extension needed), in
/// temporary functions that vanish with the session.
///
/// They are declared STABLE, not IMMUTABLE, because `convert_to` is
/// stable: the planner inlines a SQL function only if its body is no more
/// volatile than it, and inlined the hashing runs about twice as fast.
fn setup_sql(secret: &[u8]) -> Vec<String> {
    let mut key = [0u8; 64];
    if secret.len() > 64 {
        unreachable!("secrets are 32 bytes");
    }
    key[..secret.len()].copy_from_slice(secret);
    let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    vec![
        format!(
            "CREATE FUNCTION pg_temp.pgfork_mac(v text) RETURNS bytea LANGUAGE sql STABLE STRICT AS \
             $$ SELECT sha256('\\x{}'::bytea || sha256('\\x{}'::bytea || convert_to(v, 'UTF8'))) $$",
            hex(&opad),
            hex(&ipad)
        ),
        "CREATE FUNCTION pg_temp.pgfork_hash(v text) RETURNS text LANGUAGE sql STABLE STRICT AS \
         $$ SELECT encode(pg_temp.pgfork_mac(v), 'hex') $$"
            .to_string(),
    ]
}

/// The expression that replaces column `c`, or why the transform cannot apply.
fn expression(t: &Transform, c: &ColumnInfo) -> Result<Option<String>, String> {
    let col = ident(&c.column);
    let text = format!("{col}::text");
    let is_text = c.category == "S";
    let cut = |e: String| match c.max_len {
        Some(n) => format!("left({e}, {n})"),
        None => e,
    };
    let need_text = |what: &str| {
        format!(
            "{what} needs a text column, but this one is {}; use hash or sql:EXPRESSION",
            c.data_type
        )
    };
    Ok(Some(match t {
        Transform::Keep => return Ok(None),
        Transform::Null if c.not_null => {
            return Err(
                "null cannot apply: the column is NOT NULL; use hash or const:VALUE".into(),
            );
        }
        Transform::Null => "NULL".to_string(),
        Transform::Const(v) => format!("{}::{}", literal(v), c.data_type),
        Transform::Sql(e) => format!("({e})::{}", c.data_type),
        Transform::Hash if is_text => cut(format!("left(pg_temp.pgfork_hash({text}), 32)")),
        Transform::Hash if c.type_name == "uuid" => {
            format!("left(pg_temp.pgfork_hash({text}), 32)::uuid")
        }
        Transform::Hash if matches!(c.type_name.as_str(), "int2" | "int4" | "int8") => {
            let max = match c.type_name.as_str() {
                "int2" => "32767",
                "int4" => "2147483647",
                _ => "9223372036854775807",
            };
            format!(
                "((('x' || left(pg_temp.pgfork_hash({text}), 15))::bit(60)::bigint % {max}) + 1)::{}",
                c.data_type
            )
        }
        Transform::Hash => {
            return Err(format!(
                "hash supports text, integer and uuid columns, not {}; use sql:EXPRESSION",
                c.data_type
            ));
        }
        Transform::Email if is_text => cut(format!(
            "'user_' || left(pg_temp.pgfork_hash({text}), 16) || '@example.invalid'"
        )),
        Transform::Email => return Err(need_text("email")),
        Transform::Name if is_text => {
            let firsts = FIRST_NAMES
                .iter()
                .map(|n| literal(n))
                .collect::<Vec<_>>()
                .join(",");
            let lasts = LAST_NAMES
                .iter()
                .map(|n| literal(n))
                .collect::<Vec<_>>()
                .join(",");
            cut(format!(
                "CASE WHEN {col} IS NULL THEN NULL ELSE \
                 (ARRAY[{firsts}])[1 + get_byte(pg_temp.pgfork_mac({text}), 0) % {}] || ' ' || \
                 (ARRAY[{lasts}])[1 + get_byte(pg_temp.pgfork_mac({text}), 1) % {}] END",
                FIRST_NAMES.len(),
                LAST_NAMES.len()
            ))
        }
        Transform::Name => return Err(need_text("name")),
        Transform::Phone if is_text => cut(format!(
            "'+1-555-' || lpad(((('x' || left(pg_temp.pgfork_hash({text}), 8))::bit(32)::bigint) % 10000000)::text, 7, '0')"
        )),
        Transform::Phone => return Err(need_text("phone")),
    }))
}

/// What one table's UPDATE needs.
#[derive(Default)]
struct TableMask {
    sets: Vec<String>,
    always_identity: Vec<String>,
    relkind: String,
}

/// Checks `rules` against `catalog` and writes the SQL that applies them.
/// A rule naming a missing column, or a transform that cannot apply to its
/// column, is an error; a personal-looking column without a rule is a warning.
pub fn plan(
    rules: &MaskRules,
    catalog: &[ColumnInfo],
    secret: &[u8],
) -> Result<MaskPlan, MaskError> {
    let find = |s: &str, t: &str, c: &str| {
        catalog
            .iter()
            .find(|i| i.schema == s && i.table == t && i.column == c)
    };
    let mut per_table: BTreeMap<(String, String), TableMask> = BTreeMap::new();
    let mut masked_columns = 0;
    for rule in &rules.columns {
        let invalid = |reason: String| MaskError::Invalid {
            column: rule.qualified(),
            line: rule.line,
            reason,
        };
        let info = find(&rule.schema, &rule.table, &rule.column).ok_or_else(|| {
            let table_exists = catalog
                .iter()
                .any(|i| i.schema == rule.schema && i.table == rule.table);
            invalid(if table_exists {
                format!(
                    "table {}.{} has no column {}",
                    rule.schema, rule.table, rule.column
                )
            } else {
                format!("there is no table {}.{}", rule.schema, rule.table)
            })
        })?;
        if info.generated == "s" && rule.transform != Transform::Keep {
            return Err(invalid(
                "it is a generated column; mask the columns it is computed from".into(),
            ));
        }
        let Some(expr) = expression(&rule.transform, info).map_err(invalid)? else {
            continue;
        };
        masked_columns += 1;
        let entry = per_table
            .entry((rule.schema.clone(), rule.table.clone()))
            .or_insert_with(|| TableMask {
                relkind: info.relkind.clone(),
                ..TableMask::default()
            });
        entry.sets.push(format!("{} = {expr}", ident(&rule.column)));
        if info.identity == "a" {
            entry.always_identity.push(rule.column.clone());
        }
    }

    let mut plan = MaskPlan {
        setup: setup_sql(secret),
        masked_columns,
        ..MaskPlan::default()
    };
    for (
        (schema, table),
        TableMask {
            sets,
            always_identity,
            relkind,
        },
    ) in &per_table
    {
        let qualified = format!("{}.{}", ident(schema), ident(table));
        // GENERATED ALWAYS identity columns refuse UPDATE until relaxed.
        for col in always_identity {
            plan.updates.push(format!(
                "ALTER TABLE {qualified} ALTER COLUMN {} SET GENERATED BY DEFAULT",
                ident(col)
            ));
        }
        let only = if relkind == "r" { "ONLY " } else { "" };
        plan.updates
            .push(format!("UPDATE {only}{qualified} SET {}", sets.join(", ")));
        for col in always_identity {
            plan.updates.push(format!(
                "ALTER TABLE {qualified} ALTER COLUMN {} SET GENERATED ALWAYS",
                ident(col)
            ));
        }
        plan.rewrite.push(format!("VACUUM (FULL) {qualified}"));
        plan.rewrite.push(format!("ANALYZE {qualified}"));
    }
    if !per_table.is_empty() {
        // Statistics hold sample values (most common values, histograms).
        plan.rewrite
            .push("VACUUM (FULL) pg_catalog.pg_statistic".into());
        plan.rewrite
            .push("VACUUM (FULL) pg_catalog.pg_statistic_ext_data".into());
    }

    for info in catalog {
        let ruled = rules
            .columns
            .iter()
            .any(|r| r.schema == info.schema && r.table == info.table && r.column == info.column);
        if !ruled && looks_personal(&info.column) {
            plan.warnings.push(format!(
                "{}.{}.{} looks personal and has no masking rule: add one (or \"keep\" to silence this)",
                info.schema, info.table, info.column
            ));
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(table: &str, column: &str, ty: &str, cat: &str, name: &str) -> ColumnInfo {
        ColumnInfo {
            schema: "public".into(),
            table: table.into(),
            column: column.into(),
            data_type: ty.into(),
            not_null: false,
            category: cat.into(),
            type_name: name.into(),
            max_len: None,
            generated: String::new(),
            identity: String::new(),
            relkind: "r".into(),
        }
    }

    fn catalog() -> Vec<ColumnInfo> {
        let mut id = col("customers", "id", "bigint", "N", "int8");
        id.identity = "a".into();
        let mut email = col(
            "customers",
            "email",
            "character varying(20)",
            "S",
            "varchar",
        );
        email.max_len = Some(20);
        let mut note = col("customers", "note", "text", "S", "text");
        note.not_null = true;
        vec![
            id,
            email,
            note,
            col("customers", "phone", "text", "S", "text"),
            col("customers", "meta", "jsonb", "U", "jsonb"),
        ]
    }

    fn rules(text: &str) -> MaskRules {
        MaskRules::parse("m.toml", text).unwrap()
    }

    #[test]
    fn plan_masks_and_warns() {
        let p = plan(
            &rules("[public.customers]\nemail = \"email\"\nid = \"hash\"\n"),
            &catalog(),
            &[7; 32],
        )
        .unwrap();
        assert_eq!(p.masked_columns, 2);
        assert!(p.setup[0].contains("sha256"));
        let all = p.updates.join(";\n");
        assert!(all.contains("SET GENERATED BY DEFAULT"), "{all}");
        assert!(
            all.contains("UPDATE ONLY \"public\".\"customers\" SET \"email\" = left("),
            "{all}"
        );
        assert!(
            all.contains(", 20)"),
            "email is cut to the column length: {all}"
        );
        assert!(
            p.rewrite
                .iter()
                .any(|s| s == "VACUUM (FULL) \"public\".\"customers\"")
        );
        assert!(p.rewrite.iter().any(|s| s.contains("pg_statistic")));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("public.customers.phone"));
    }

    #[test]
    fn impossible_rules_are_errors_with_lines() {
        let cat = catalog();
        let e = plan(
            &rules("[public.customers]\nmissing = \"hash\"\n"),
            &cat,
            &[0; 32],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("line 2") && e.to_string().contains("has no column missing"),
            "{e}"
        );
        let e = plan(&rules("[public.nope]\nx = \"hash\"\n"), &cat, &[0; 32]).unwrap_err();
        assert!(
            e.to_string().contains("there is no table public.nope"),
            "{e}"
        );
        let e = plan(
            &rules("[public.customers]\nnote = \"null\"\n"),
            &cat,
            &[0; 32],
        )
        .unwrap_err();
        assert!(e.to_string().contains("NOT NULL"), "{e}");
        let e = plan(
            &rules("[public.customers]\nmeta = \"hash\"\n"),
            &cat,
            &[0; 32],
        )
        .unwrap_err();
        assert!(e.to_string().contains("jsonb"), "{e}");
        let e = plan(
            &rules("[public.customers]\nid = \"email\"\n"),
            &cat,
            &[0; 32],
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs a text column"), "{e}");
    }

    #[test]
    fn keep_masks_nothing_and_silences_warnings() {
        let p = plan(
            &rules("[public.customers]\nphone = \"keep\"\n"),
            &catalog(),
            &[0; 32],
        )
        .unwrap();
        assert!(p.updates.is_empty() && p.rewrite.is_empty());
        assert!(
            !p.warnings.iter().any(|w| w.contains("phone")),
            "{:?}",
            p.warnings
        );
        assert!(
            p.warnings.iter().any(|w| w.contains("email")),
            "{:?}",
            p.warnings
        );
    }
}
