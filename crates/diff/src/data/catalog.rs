//! The tables and sequences of one side, from its catalog.

use std::collections::{BTreeMap, BTreeSet};

use pgfork_pg::untrusted::expr::{Column, TypeCatalog};

use crate::DiffError;

/// A user table as the diff needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// Main fork path relative to the data directory (`base/DB/NODE`).
    pub file: String,
    /// Columns in order.
    pub columns: Vec<String>,
    /// The columns that identify a row, with their types: the primary key,
    /// else the first unique index over NOT NULL columns, if there is one.
    pub key: Option<Vec<(String, String)>>,
    /// Generated columns (computed; never written).
    pub generated: Vec<String>,
    /// Each column's type, as `format_type` writes it (qualified unless in
    /// `pg_catalog`).
    pub types: BTreeMap<String, String>,
    /// Columns whose type is opaque: read through the type's output
    /// function, never cast (see [`pgfork_pg::untrusted::expr`]).
    pub opaque: BTreeSet<String>,
    /// For columns added with a constant default after rows existed: the
    /// value those rows read (`attmissingval`), as text.
    pub missing: BTreeMap<String, String>,
    /// Each column's number (`attnum`), parallel to `columns`.
    pub attnums: Vec<i32>,
    /// Its enabled user triggers (quoted), each with how it fires: `O`
    /// (origin and local), `A` (always), `R` (replica).
    pub triggers: Vec<(String, char)>,
}

impl TableInfo {
    /// `"schema"."table"`, quoted for SQL.
    pub fn sql_name(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }
    /// `schema.table`, for people.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    /// Every column, with whether it is opaque.
    pub fn typed_columns(&self) -> Vec<Column> {
        self.columns
            .iter()
            .map(|c| Column {
                name: c.clone(),
                opaque: self.opaque.contains(c),
            })
            .collect()
    }
    /// Whether a column of `self` goes by another name in `other`, the same
    /// table on the other side of a branch (a branch keeps its tables'
    /// column numbers): renaming changes no block, yet every row reads
    /// differently.
    pub fn renamed_columns(&self, other: &TableInfo) -> bool {
        self.columns.iter().zip(&self.attnums).any(|(c, n)| {
            other
                .attnums
                .iter()
                .position(|m| m == n)
                .is_some_and(|i| other.columns[i] != *c)
        })
    }
    /// Whether column `c` is opaque.
    pub fn is_opaque(&self, c: &str) -> bool {
        self.opaque.contains(c)
    }
}

/// Quotes an identifier.
pub(crate) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Runs in a session with the pinned `search_path` (pg_catalog only), so
/// `format_type` qualifies every type outside it and no operator here can
/// be anyone's but pg_catalog's.
const TABLES: &str = "
SELECT n.nspname::text, c.relname::text, pg_relation_filepath(c.oid),
       (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT array_agg(a.attname::text ORDER BY k.ord)
          FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indexrelid = key.oid AND k.ord <= i.indnkeyatts),
       (SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.ord)
          FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indexrelid = key.oid AND k.ord <= i.indnkeyatts),
       (SELECT array_agg(a.attname::text) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''),
       (SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT array_agg(CASE WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END ORDER BY a.attnum)
          FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT array_agg(a.atttypid ORDER BY a.attnum) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT array_agg(a.attnum::int4 ORDER BY a.attnum) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT array_agg(tg.tgenabled::text OPERATOR(pg_catalog.||) quote_ident(tg.tgname::text) ORDER BY tg.tgname)
          FROM pg_trigger tg WHERE tg.tgrelid = c.oid AND NOT tg.tgisinternal AND tg.tgenabled <> 'D')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN LATERAL (
       -- The row's identity: the primary key, else a unique index over
       -- NOT NULL columns only (no expression, no predicate, not deferred),
       -- which identifies a row just as well.
       SELECT i.indexrelid AS oid FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indimmediate
          AND i.indpred IS NULL AND i.indexprs IS NULL
          AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey) AS k(attnum)
                            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                           WHERE NOT a.attnotnull)
        ORDER BY i.indisprimary DESC, i.indnatts, ic.relname
        LIMIT 1) key ON true
 WHERE c.relkind = 'r' AND c.relpersistence = 'p'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')";

/// User tables by `schema.table` (tables of extensions excluded).
pub fn read_tables(
    client: &mut postgres::Client,
) -> Result<BTreeMap<String, TableInfo>, DiffError> {
    let types = TypeCatalog::load(client).map_err(DiffError::sql("read the types"))?;
    let mut out = BTreeMap::new();
    for r in client
        .query(TABLES, &[])
        .map_err(DiffError::sql("read the tables"))?
    {
        let list = |i: usize| r.get::<_, Option<Vec<String>>>(i).unwrap_or_default();
        let columns = list(3);
        let key_cols: Option<Vec<String>> = r.get(4);
        let key_types: Option<Vec<String>> = r.get(5);
        let type_names = list(7);
        let missing: Vec<Option<String>> = r
            .get::<_, Option<Vec<Option<String>>>>(8)
            .unwrap_or_default();
        let type_oids: Vec<u32> = r.get::<_, Option<Vec<u32>>>(9).unwrap_or_default();
        let mut t = TableInfo {
            schema: r.get(0),
            name: r.get(1),
            file: r.get(2),
            columns: columns.clone(),
            key: key_cols
                .zip(key_types)
                .map(|(c, t)| c.into_iter().zip(t).collect()),
            generated: list(6),
            types: BTreeMap::new(),
            opaque: BTreeSet::new(),
            missing: BTreeMap::new(),
            attnums: r.get::<_, Option<Vec<i32>>>(10).unwrap_or_default(),
            triggers: r
                .get::<_, Option<Vec<String>>>(11)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| {
                    let mode = t.chars().next()?;
                    Some((t[mode.len_utf8()..].to_string(), mode))
                })
                .collect(),
        };
        for (i, col) in columns.iter().enumerate() {
            if let Some(Some(m)) = missing.get(i) {
                t.missing.insert(col.clone(), m.clone());
            }
            if let Some(ty) = type_names.get(i) {
                t.types.insert(col.clone(), ty.clone());
            }
            if types.is_opaque(type_oids.get(i).copied().unwrap_or(0)) {
                t.opaque.insert(col.clone());
            }
        }
        out.insert(t.display(), t);
    }
    Ok(out)
}

/// User tables by `schema.table`, referenced tables before the tables
/// whose foreign keys point at them (the order inserts must follow).
pub fn fk_order(
    client: &mut postgres::Client,
    tables: &BTreeMap<String, TableInfo>,
) -> Result<Vec<String>, DiffError> {
    let edges: Vec<(String, String)> = client
        .query(
            "SELECT format('%s.%s', cn.nspname, c.relname), format('%s.%s', fn.nspname, f.relname)
               FROM pg_constraint k
               JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
               JOIN pg_class f ON f.oid = k.confrelid JOIN pg_namespace fn ON fn.oid = f.relnamespace
              WHERE k.contype = 'f' AND k.conrelid <> k.confrelid",
            &[],
        )
        .map_err(DiffError::sql("read foreign keys"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // Depth-first topological order; a cycle is broken where it is found
    // (its statements then rely on the constraints allowing the order).
    let mut order = Vec::new();
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        t: &'a str,
        edges: &'a [(String, String)],
        state: &mut BTreeMap<&'a str, u8>,
        order: &mut Vec<String>,
    ) {
        if state.get(t).copied().unwrap_or(0) != 0 {
            return;
        }
        state.insert(t, 1);
        for (child, parent) in edges {
            if child == t {
                visit(parent, edges, state, order);
            }
        }
        state.insert(t, 2);
        order.push(t.to_string());
    }
    for t in tables.keys() {
        visit(t, &edges, &mut state, &mut order);
    }
    order.retain(|t| tables.contains_key(t));
    Ok(order)
}

/// A sequence's value (`None` if never used).
pub type SequenceValue = Option<i64>;

/// Sequences by `schema.sequence` with their last values.
pub fn read_sequences(
    client: &mut postgres::Client,
) -> Result<BTreeMap<String, SequenceValue>, DiffError> {
    Ok(client
        .query(
            "SELECT schemaname::text, sequencename::text, last_value FROM pg_sequences",
            &[],
        )
        .map_err(DiffError::sql("read the sequences"))?
        .iter()
        .map(|r| {
            (
                format!("{}.{}", r.get::<_, String>(0), r.get::<_, String>(1)),
                r.get(2),
            )
        })
        .collect())
}
