//! SQL expressions over content that no cast, operator or function of the
//! content's authors can take over (rule 4 of [`super`]).
//!
//! A value of a built-in type (after looking through domains and arrays)
//! is safe to cast and to hand to `to_jsonb`: only the owner of a type may
//! create a cast from or to it, and nobody but the bootstrap superuser owns
//! the built-in ones. Any other value is *opaque*: enums, composites,
//! ranges and types of extensions. Opaque values are turned into text by
//! their type's output function (`format('%s', v)` calls it directly) and
//! back by its input function (a typed literal), never by `::` applied to
//! a value.

use std::collections::HashMap;

use crate::sql::{quote_ident, quote_literal};

/// Objects with OIDs below this were made by `initdb` (FirstNormalObjectId).
pub const FIRST_NORMAL_OID: u32 = 16384;

/// `OPERATOR(pg_catalog.op)`: the built-in operator whatever the search path.
pub fn op(op: &str) -> String {
    format!("OPERATOR(pg_catalog.{op})")
}

/// `value` as text, NULL for NULL: a cast for built-in types, the type's
/// output function otherwise. `num_nulls` rather than `IS NULL`, which is
/// also true of a composite whose fields are all NULL.
pub fn text_of(value: &str, opaque: bool) -> String {
    if opaque {
        format!(
            "CASE WHEN pg_catalog.num_nulls({value}) {eq} 0 THEN pg_catalog.format('%s', {value}) END",
            eq = op("=")
        )
    } else {
        format!("({value})::pg_catalog.text")
    }
}

/// A column as the expressions here need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name (unquoted).
    pub name: String,
    /// Whether its type is opaque (see the module documentation).
    pub opaque: bool,
}

/// jsonb_build_object takes at most 100 arguments: 50 pairs.
const PAIRS_PER_CALL: usize = 50;

/// The row `alias` as a jsonb object over `columns` except `skip`: opaque
/// values become strings (their output text), as `to_jsonb` makes of an
/// enum or a range anyway. `to_jsonb` of the whole row only when no column
/// is opaque: it would look up a user cast to json for an opaque one.
pub fn row_json(alias: &str, columns: &[Column], skip: &[String]) -> String {
    if columns.iter().all(|c| !c.opaque) {
        let whole = format!("pg_catalog.to_jsonb({alias})");
        return if skip.is_empty() {
            whole
        } else {
            format!("({whole} {} {})", op("-"), text_array(skip))
        };
    }
    let pairs: Vec<(String, String)> = columns
        .iter()
        .filter(|c| !skip.contains(&c.name))
        .map(|c| {
            let value = format!("{alias}.{}", quote_ident(&c.name));
            (c.name.clone(), json_value(&value, c.opaque))
        })
        .collect();
    json_object(&pairs)
}

/// A jsonb object of `(key, SQL expression)` pairs; the expressions must
/// be of built-in types (see [`text_of`] for the others).
pub fn json_object(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return "'{}'::pg_catalog.jsonb".into();
    }
    let calls: Vec<String> = pairs
        .chunks(PAIRS_PER_CALL)
        .map(|chunk| {
            let args: Vec<String> = chunk
                .iter()
                .map(|(k, v)| format!("{}, {v}", quote_literal(k)))
                .collect();
            format!("pg_catalog.jsonb_build_object({})", args.join(", "))
        })
        .collect();
    format!("({})", calls.join(&format!(" {} ", op("||"))))
}

/// `value` as it goes into a JSON object: itself for a built-in type, its
/// output text for an opaque one.
pub fn json_value(value: &str, opaque: bool) -> String {
    if opaque {
        text_of(value, true)
    } else {
        value.to_string()
    }
}

/// `ARRAY['a', 'b']::text[]`.
pub fn text_array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote_literal(s)).collect();
    format!("ARRAY[{}]::pg_catalog.text[]", quoted.join(", "))
}

/// An array of type `ty[]` holding `values` (text, NULL for None), written
/// as a typed literal: the array's and its elements' input functions read
/// it, as for any literal, where `$1::text[]::ty[]` would look for a cast
/// from text, which the type's owner may have made.
pub fn array_literal(values: &[Option<String>], ty: &str) -> String {
    let elements: Vec<String> = values
        .iter()
        .map(|v| match v {
            None => "NULL".to_string(),
            Some(v) => format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")),
        })
        .collect();
    format!(
        "{}::{ty}[]",
        quote_literal(&format!("{{{}}}", elements.join(",")))
    )
}

/// What makes a type opaque: the user types of one database, with what
/// they are built on.
#[derive(Debug, Clone, Default)]
pub struct TypeCatalog {
    /// For each user type: a domain's base type, an array's element type,
    /// or none (the type stands for itself).
    built_on: HashMap<u32, Option<u32>>,
}

/// Every type not made by initdb, and what domains and arrays are built on.
const USER_TYPES: &str = "SELECT t.oid, CASE WHEN t.typtype = 'd' THEN t.typbasetype \
     WHEN t.typcategory = 'A' AND t.typelem <> 0 THEN t.typelem END \
     FROM pg_catalog.pg_type t WHERE t.oid >= 16384";

impl TypeCatalog {
    /// Reads the user types of the connected database.
    pub fn load(client: &mut postgres::Client) -> Result<TypeCatalog, postgres::Error> {
        let built_on = client
            .query(USER_TYPES, &[])?
            .iter()
            .map(|r| (r.get::<_, u32>(0), r.get::<_, Option<u32>>(1)))
            .collect();
        Ok(TypeCatalog { built_on })
    }

    /// Whether values of `oid` must be read as opaque: anything but a
    /// built-in type, seen through domains and arrays.
    pub fn is_opaque(&self, oid: u32) -> bool {
        let mut oid = oid;
        // Domains over domains over arrays: a short chain; the bound only
        // guards against a catalog that loops.
        for _ in 0..64 {
            if oid < FIRST_NORMAL_OID {
                return false;
            }
            match self.built_on.get(&oid) {
                Some(Some(next)) => oid = *next,
                _ => return true,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, opaque: bool) -> Column {
        Column {
            name: name.into(),
            opaque,
        }
    }

    #[test]
    fn plain_rows_use_to_jsonb_and_opaque_ones_never_do() {
        assert_eq!(
            row_json("t", &[col("a", false)], &[]),
            "pg_catalog.to_jsonb(t)"
        );
        let skipped = row_json("t", &[col("a", false), col("b", false)], &["b".into()]);
        assert!(
            skipped.contains("OPERATOR(pg_catalog.-) ARRAY['b']"),
            "{skipped}"
        );
        let mixed = row_json("t", &[col("id", false), col("m\"x", true)], &[]);
        assert!(!mixed.contains("to_jsonb"), "{mixed}");
        assert!(mixed.contains("'id', t.\"id\""), "{mixed}");
        assert!(
            mixed.contains("pg_catalog.format('%s', t.\"m\"\"x\")"),
            "{mixed}"
        );
        let wide: Vec<Column> = (0..120).map(|i| col(&format!("c{i}"), i == 0)).collect();
        let text = row_json("t", &wide, &[]);
        assert_eq!(text.matches("jsonb_build_object").count(), 3, "{text}");
    }

    #[test]
    fn casts_only_for_builtin_types() {
        assert_eq!(text_of("t.a", false), "(t.a)::pg_catalog.text");
        assert!(
            !text_of("t.a", true).contains("::"),
            "{}",
            text_of("t.a", true)
        );
        assert_eq!(
            array_literal(
                &[Some("a".into()), Some("it's \"q\" \\".into()), None],
                "public.mood"
            ),
            r#"'{"a","it''s \"q\" \\",NULL}'::public.mood[]"#
        );
    }

    #[test]
    fn opacity_looks_through_domains_and_arrays() {
        let mut types = TypeCatalog::default();
        types.built_on.insert(20000, None); // an enum
        types.built_on.insert(20001, Some(20000)); // its array
        types.built_on.insert(20002, Some(23)); // a domain over int4
        types.built_on.insert(20003, Some(20002)); // an array of that domain
        types.built_on.insert(20004, Some(20004)); // a loop
        assert!(!types.is_opaque(23));
        assert!(types.is_opaque(20000) && types.is_opaque(20001));
        assert!(!types.is_opaque(20002) && !types.is_opaque(20003));
        assert!(types.is_opaque(20004));
        assert!(types.is_opaque(30000), "unknown types are opaque");
    }
}
