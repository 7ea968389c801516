//! Comparing the rows of one table on two sides.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use pgfork_pg::untrusted::expr::{array_literal, json_object, json_value, op, row_json, text_of};

use super::catalog::{TableInfo, ident};
use super::pages::PageSet;
use super::{DataOptions, Key, Method, RowChange, Side, TableDiff};
use crate::DiffError;

/// Where a tuple version is and which transaction made it.
const FINGERPRINT: &str = "(t.ctid::pg_catalog.text OPERATOR(pg_catalog.||) '/' \
     OPERATOR(pg_catalog.||) t.xmin::pg_catalog.text)";

/// Page runs per statement when reading changed pages.
const RUNS_PER_QUERY: usize = 200;
/// Keys per statement when looking rows up.
const KEYS_PER_QUERY: usize = 5000;

/// How a table's rows are read on both sides. Columns only the old side
/// has are left out; a column only the new side has is compared too, its
/// old-side value being what old rows read for it there (the constant
/// default it was added with, or NULL).
struct Shape {
    table: String,
    key: Option<Vec<(String, String)>>,
    /// The old side's row as jsonb, over the compared columns.
    old_row: String,
    /// The new side's row as jsonb, over the compared columns.
    new_row: String,
    /// The key as a text array (see [`key_expr`]), or NULL without a key.
    key_expr: String,
    /// Columns not compared: the old side's only, and generated ones.
    uncompared: Vec<String>,
    /// Values old rows take for the new side's added columns.
    added: serde_json::Map<String, Value>,
}

impl Shape {
    /// `md5` of a row's jsonb text: compared instead of rows, so that
    /// unchanged rows never travel or get parsed.
    fn old_hash(&self) -> String {
        format!("pg_catalog.md5(({})::pg_catalog.text)", self.old_row)
    }
    fn new_hash(&self) -> String {
        format!("pg_catalog.md5(({})::pg_catalog.text)", self.new_row)
    }
    /// An old-side row as fetched whole, over the compared columns.
    fn old_value(&self, row: Value) -> Value {
        let mut row = project(row, &self.uncompared);
        if let Value::Object(map) = &mut row {
            for (k, v) in &self.added {
                map.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        row
    }
}

fn json_literal(v: &Value) -> String {
    format!("'{}'::pg_catalog.jsonb", v.to_string().replace('\'', "''"))
}

/// `ARRAY[k1 as text, ...]`: a row's key as text, for both sides alike.
fn key_expr(t: &TableInfo, cols: &[(String, String)]) -> String {
    let parts: Vec<String> = cols
        .iter()
        .map(|(c, _)| text_of(&format!("t.{}", ident(c)), t.is_opaque(c)))
        .collect();
    format!("ARRAY[{}]", parts.join(", "))
}

/// The values old rows read for columns only `b` has, computed on the new
/// side (whose types they are).
pub fn added_values(
    client: &mut postgres::Client,
    a: &TableInfo,
    b: &TableInfo,
) -> Result<serde_json::Map<String, Value>, DiffError> {
    let added: Vec<&String> = b
        .columns
        .iter()
        .filter(|c| !a.columns.contains(c) && !b.generated.contains(c))
        .collect();
    if added.is_empty() {
        return Ok(serde_json::Map::new());
    }
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let pairs: Vec<(String, String)> = added
        .iter()
        .map(|c| {
            let ty = b.types.get(*c).map(String::as_str).unwrap_or("text");
            // A literal is read by the type's input function, never a cast.
            let value = match b.missing.get(*c) {
                Some(m) => format!("{}::{ty}", literal(m)),
                None => format!("NULL::{ty}"),
            };
            (c.to_string(), json_value(&value, b.is_opaque(c)))
        })
        .collect();
    let row = client
        .query_one(&format!("SELECT {}", json_object(&pairs)), &[])
        .map_err(DiffError::sql(format!(
            "read the defaults of columns added to {}",
            b.display()
        )))?;
    match row.get::<_, Value>(0) {
        Value::Object(map) => Ok(map),
        _ => Ok(serde_json::Map::new()),
    }
}

fn shape(a: &TableInfo, b: &TableInfo, added: serde_json::Map<String, Value>) -> Shape {
    let uncompared: Vec<String> = a
        .columns
        .iter()
        .filter(|c| !b.columns.contains(c))
        .chain(
            b.columns
                .iter()
                .filter(|c| !a.columns.contains(c) && b.generated.contains(c)),
        )
        .cloned()
        .collect();
    // Compare by key only if both sides agree on it.
    let key = if a.key == b.key { b.key.clone() } else { None };
    let key_expr = match &key {
        Some(cols) => key_expr(b, cols),
        None => "NULL::pg_catalog.text[]".into(),
    };
    let new_row = row_json("t", &b.typed_columns(), &uncompared);
    let old_base = row_json("t", &a.typed_columns(), &uncompared);
    let old_row = if added.is_empty() {
        old_base
    } else {
        format!(
            "({old_base} {} {})",
            op("||"),
            json_literal(&Value::Object(added.clone()))
        )
    };
    Shape {
        table: b.sql_name(),
        key,
        old_row,
        new_row,
        key_expr,
        uncompared,
        added,
    }
}

/// Keys and row hashes of the tuples in the pages of `runs`.
fn hashes_in_pages(
    client: &mut postgres::Client,
    s: &Shape,
    expr: &str,
    runs: &[(u64, u64)],
) -> Result<HashMap<Key, String>, DiffError> {
    let mut out = HashMap::new();
    for batch in runs.chunks(RUNS_PER_QUERY) {
        let parts: Vec<String> = batch
            .iter()
            .map(|(first, last)| {
                format!(
                    "SELECT {}, {} FROM ONLY {} t WHERE t.ctid {ge} '({first},0)'::pg_catalog.tid \
                     AND t.ctid {lt} '({},0)'::pg_catalog.tid",
                    s.key_expr,
                    expr,
                    s.table,
                    last + 1,
                    ge = op(">="),
                    lt = op("<"),
                )
            })
            .collect();
        let sql = parts.join(" UNION ALL ");
        for r in client
            .query(&sql, &[])
            .map_err(DiffError::sql(format!("read changed pages of {}", s.table)))?
        {
            out.insert(r.get::<_, Key>(0), r.get(1));
        }
    }
    Ok(out)
}

/// Row hashes of `t` for the given keys.
fn hashes_of_keys(
    client: &mut postgres::Client,
    t: &TableInfo,
    expr: &str,
    keys: &[Key],
) -> Result<HashMap<Key, String>, DiffError> {
    Ok(
        by_keys(client, t, keys, &format!("pg_catalog.to_jsonb({expr})"))?
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect(),
    )
}

/// Rows of the pages in `runs`, keyed (or all under one empty key list).
fn rows_in_pages(
    client: &mut postgres::Client,
    s: &Shape,
    row: &str,
    runs: &[(u64, u64)],
) -> Result<Vec<(Key, Value)>, DiffError> {
    let mut out = Vec::new();
    for batch in runs.chunks(RUNS_PER_QUERY) {
        let parts: Vec<String> = batch
            .iter()
            .map(|(first, last)| {
                format!(
                    "SELECT {}, {} FROM ONLY {} t WHERE t.ctid {ge} '({first},0)'::pg_catalog.tid \
                     AND t.ctid {lt} '({},0)'::pg_catalog.tid",
                    s.key_expr,
                    row,
                    s.table,
                    last + 1,
                    ge = op(">="),
                    lt = op("<"),
                )
            })
            .collect();
        let sql = parts.join(" UNION ALL ");
        for r in client
            .query(&sql, &[])
            .map_err(DiffError::sql(format!("read changed pages of {}", s.table)))?
        {
            let key: Option<Key> = r.get(0);
            out.push((key.unwrap_or_default(), r.get(1)));
        }
    }
    Ok(out)
}

/// Rows of `t` with the given keys, looked up through the key's index.
pub fn fetch_rows(
    client: &mut postgres::Client,
    t: &TableInfo,
    keys: &[Key],
) -> Result<HashMap<Key, Value>, DiffError> {
    by_keys(client, t, keys, &row_json("t", &t.typed_columns(), &[]))
}

/// `value` (a jsonb expression over row `t`) of the rows of `t` with the
/// given keys. Keys travel as typed array literals, which the key types'
/// input functions read (never a cast the branch could have made), and
/// are compared with pg_catalog's `=`, so the key's index serves the
/// lookup.
fn by_keys(
    client: &mut postgres::Client,
    t: &TableInfo,
    keys: &[Key],
    value: &str,
) -> Result<HashMap<Key, Value>, DiffError> {
    let cols = t.key.as_ref().ok_or_else(|| {
        DiffError::Refused(format!(
            "{} has no key (primary key, or unique index over NOT NULL columns)",
            t.display()
        ))
    })?;
    let mut out = HashMap::new();
    let key_expr = key_expr(t, cols);
    let eq = op("=");
    for batch in keys.chunks(KEYS_PER_QUERY) {
        let arrays: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| {
                let values: Vec<Option<String>> =
                    batch.iter().map(|k| k.get(i).cloned().flatten()).collect();
                array_literal(&values, ty)
            })
            .collect();
        let sql = if cols.len() == 1 {
            format!(
                "SELECT {key_expr}, {value} FROM ONLY {} t WHERE t.{} {eq} ANY ({})",
                t.sql_name(),
                ident(&cols[0].0),
                arrays[0]
            )
        } else {
            // unnest(a, b) is special syntax for ROWS FROM, which names no
            // function and so cannot be qualified: write it out.
            let rows_from = arrays
                .iter()
                .map(|a| format!("pg_catalog.unnest({a})"))
                .collect::<Vec<_>>()
                .join(", ");
            let names = (0..cols.len())
                .map(|i| format!("c{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let on = cols
                .iter()
                .enumerate()
                .map(|(i, (c, _))| format!("t.{} {eq} k.c{i}", ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!(
                "SELECT {key_expr}, {value} FROM ONLY {} t \
                 JOIN ROWS FROM ({rows_from}) AS k({names}) ON {on}",
                t.sql_name()
            )
        };
        for r in client
            .query(&sql, &[])
            .map_err(DiffError::sql(format!("look up rows of {}", t.display())))?
        {
            out.insert(r.get::<_, Key>(0), r.get(1));
        }
    }
    Ok(out)
}

/// Drops the columns the other side lacks from a fetched row.
fn project(mut row: Value, uncompared: &[String]) -> Value {
    if let Value::Object(map) = &mut row {
        for c in uncompared {
            map.remove(c);
        }
    }
    row
}

/// Accumulates changes: all counted, the first `limit` kept.
struct Collector {
    diff: TableDiff,
    limit: usize,
}

impl Collector {
    fn push(&mut self, change: RowChange) {
        match &change {
            RowChange::Insert { .. } | RowChange::Added { .. } => self.diff.inserted += 1,
            RowChange::Update { .. } => self.diff.updated += 1,
            RowChange::Delete { .. } | RowChange::Removed { .. } => self.diff.deleted += 1,
        }
        if self.diff.rows.len() < self.limit {
            self.diff.rows.push(change);
        }
    }

    fn pair(&mut self, key: Key, old: Option<Value>, new: Option<Value>) {
        match (old, new) {
            (None, Some(row)) => self.push(RowChange::Insert { key, row }),
            (Some(row), None) => self.push(RowChange::Delete { key, row }),
            (Some(old), Some(new)) if old != new => {
                let mut changes = BTreeMap::new();
                if let (Value::Object(o), Value::Object(n)) = (&old, &new) {
                    for (col, nv) in n {
                        let ov = o.get(col).cloned().unwrap_or(Value::Null);
                        if &ov != nv {
                            changes.insert(col.clone(), [ov, nv.clone()]);
                        }
                    }
                }
                self.push(RowChange::Update { key, changes });
            }
            _ => {}
        }
    }
}

/// Compares table `a` (old side) with `b` (new side) over `pages`.
pub fn compare_table(
    from: &mut Side,
    to: &mut Side,
    a: &TableInfo,
    b: &TableInfo,
    pages: &PageSet,
    opts: &DataOptions,
) -> Result<TableDiff, DiffError> {
    let s = shape(a, b, added_values(to.client, a, b)?);
    let method = if *pages == PageSet::All {
        Method::Full
    } else {
        Method::Pages
    };
    let mut c = Collector {
        diff: TableDiff {
            table: b.display(),
            key: s
                .key
                .as_ref()
                .map(|k| k.iter().map(|(c, _)| c.clone()).collect()),
            inserted: 0,
            updated: 0,
            deleted: 0,
            method,
            pages: if method == Method::Pages {
                pages.len()
            } else {
                0
            },
            rows: Vec::new(),
            uncompared_columns: s.uncompared.clone(),
        },
        limit: opts.limit,
    };
    match (&s.key, pages) {
        (Some(_), PageSet::All) => ordered_merge(from, to, a, b, &s, &mut c)?,
        (Some(_), _) => {
            let runs = pages.runs();
            // The same tuple version has the same place and inserting
            // transaction on both sides (a clone copies tuples, it does not
            // rewrite them): comparing those finds every candidate without
            // reading a single column. Candidates are then compared whole.
            let old_client = &mut *from.client;
            let new_client = &mut *to.client;
            let (old, new) = std::thread::scope(|scope| {
                let old = scope.spawn(|| hashes_in_pages(old_client, &s, FINGERPRINT, &runs));
                let new = hashes_in_pages(new_client, &s, FINGERPRINT, &runs);
                (old.join().expect("reader thread"), new)
            });
            let (old, new) = (old?, new?);
            tracing::debug!(old = old.len(), new = new.len(), "fingerprints read");
            // A key seen on one side only may sit in an unchanged page of
            // the other: look it up there.
            let need_old: Vec<Key> = new
                .keys()
                .filter(|k| !old.contains_key(*k))
                .cloned()
                .collect();
            let need_new: Vec<Key> = old
                .keys()
                .filter(|k| !new.contains_key(*k))
                .cloned()
                .collect();
            let more_old = hashes_of_keys(from.client, a, FINGERPRINT, &need_old)?;
            let more_new = hashes_of_keys(to.client, b, FINGERPRINT, &need_new)?;
            let mut differing: Vec<Key> = old
                .keys()
                .chain(new.keys())
                .filter(|k| {
                    old.get(*k).or_else(|| more_old.get(*k))
                        != new.get(*k).or_else(|| more_new.get(*k))
                })
                .cloned()
                .collect();
            differing.sort();
            differing.dedup();
            tracing::debug!(
                candidates = differing.len(),
                looked_up = need_old.len() + need_new.len(),
                "candidates found"
            );
            pair_rows(from, to, a, b, &s, &differing, &mut c)?;
        }
        (None, _) => {
            let rows =
                |client: &mut postgres::Client, row: &str| -> Result<Vec<Value>, DiffError> {
                    Ok(match pages {
                        PageSet::All => client
                            .query(&format!("SELECT {row} FROM ONLY {} t", s.table), &[])
                            .map_err(DiffError::sql(format!("read {}", s.table)))?
                            .iter()
                            .map(|r| r.get(0))
                            .collect(),
                        _ => rows_in_pages(client, &s, row, &pages.runs())?
                            .into_iter()
                            .map(|(_, v)| v)
                            .collect(),
                    })
                };
            let mut counts: BTreeMap<String, (i64, Value)> = BTreeMap::new();
            for row in rows(from.client, &s.old_row)? {
                counts.entry(row.to_string()).or_insert((0, row)).0 -= 1;
            }
            for row in rows(to.client, &s.new_row)? {
                counts.entry(row.to_string()).or_insert((0, row)).0 += 1;
            }
            for (_, (n, row)) in counts {
                for _ in 0..n.unsigned_abs() {
                    c.push(if n > 0 {
                        RowChange::Added { row: row.clone() }
                    } else {
                        RowChange::Removed { row: row.clone() }
                    });
                }
            }
        }
    }
    Ok(c.diff)
}

/// One part of a sort key, compared the way the server ordered it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SortPart {
    Null,
    Int(i128),
    Text(Vec<u8>),
}

fn is_integer(ty: &str) -> bool {
    matches!(ty, "smallint" | "integer" | "bigint")
}

/// Fetches the rows of `keys` on both sides and records their changes.
fn pair_rows(
    from: &mut Side,
    to: &mut Side,
    a: &TableInfo,
    b: &TableInfo,
    s: &Shape,
    keys: &[Key],
    c: &mut Collector,
) -> Result<(), DiffError> {
    let old = fetch_rows(from.client, a, keys)?;
    let new = fetch_rows(to.client, b, keys)?;
    for key in keys {
        let o = old.get(key).cloned().map(|r| s.old_value(r));
        let n = new.get(key).cloned().map(|r| project(r, &s.uncompared));
        c.pair(key.clone(), o, n);
    }
    Ok(())
}

/// Reads both sides whole, in key order, comparing row hashes; then
/// fetches the rows whose hashes differ. Memory follows the change.
fn ordered_merge(
    from: &mut Side,
    to: &mut Side,
    a: &TableInfo,
    b: &TableInfo,
    s: &Shape,
    c: &mut Collector,
) -> Result<(), DiffError> {
    let cols = s.key.as_ref().expect("keyed");
    // Integers sort numerically (through the key's index); anything else
    // as text in byte order, which both sides and Rust agree on.
    let order: Vec<String> = cols
        .iter()
        .map(|(col, ty)| {
            if is_integer(ty) {
                format!("t.{}", ident(col))
            } else {
                let value = text_of(&format!("t.{}", ident(col)), b.is_opaque(col));
                format!("{value} COLLATE \"C\"")
            }
        })
        .collect();
    let scan = |hash: String| {
        format!(
            "SELECT {}, {hash} FROM ONLY {} t ORDER BY {}",
            s.key_expr,
            s.table,
            order.join(", ")
        )
    };
    let (old_sql, new_sql) = (scan(s.old_hash()), scan(s.new_hash()));
    let sort_key = |key: &Key| -> Vec<SortPart> {
        key.iter()
            .zip(cols)
            .map(|(v, (_, ty))| match v {
                None => SortPart::Null,
                Some(v) if is_integer(ty) => SortPart::Int(v.parse().unwrap_or(0)),
                Some(v) => SortPart::Text(v.clone().into_bytes()),
            })
            .collect()
    };
    let mut differing = Vec::new();
    {
        let empty: [&(dyn postgres::types::ToSql + Sync); 0] = [];
        let mut old = from
            .client
            .query_raw(&old_sql, empty)
            .map_err(DiffError::sql(format!("scan {}", s.table)))?;
        let mut new = to
            .client
            .query_raw(&new_sql, empty)
            .map_err(DiffError::sql(format!("scan {}", s.table)))?;
        use postgres::fallible_iterator::FallibleIterator;
        let next = |it: &mut postgres::RowIter<'_>| -> Result<Option<(Key, String)>, DiffError> {
            Ok(it
                .next()
                .map_err(DiffError::sql(format!("scan {}", s.table)))?
                .map(|r| (r.get::<_, Key>(0), r.get(1))))
        };
        let (mut o, mut n) = (next(&mut old)?, next(&mut new)?);
        loop {
            match (o.take(), n.take()) {
                (None, None) => break,
                (Some((k, _)), None) => {
                    differing.push(k);
                    o = next(&mut old)?;
                }
                (None, Some((k, _))) => {
                    differing.push(k);
                    n = next(&mut new)?;
                }
                (Some((ko, ho)), Some((kn, hn))) => match sort_key(&ko).cmp(&sort_key(&kn)) {
                    Ordering::Equal => {
                        if ho != hn {
                            differing.push(ko);
                        }
                        o = next(&mut old)?;
                        n = next(&mut new)?;
                    }
                    Ordering::Less => {
                        differing.push(ko);
                        o = next(&mut old)?;
                        n = Some((kn, hn));
                    }
                    Ordering::Greater => {
                        differing.push(kn);
                        n = next(&mut new)?;
                        o = Some((ko, ho));
                    }
                },
            }
        }
    }
    pair_rows(from, to, a, b, s, &differing, c)
}

/// A table that exists on one side only: all its rows are inserted (new
/// side) or deleted (old side).
pub(super) fn one_side(
    side: &mut Side,
    t: &TableInfo,
    inserted: bool,
    opts: &DataOptions,
) -> Result<TableDiff, DiffError> {
    let count: i64 = side
        .client
        .query_one(
            &format!("SELECT pg_catalog.count(*) FROM ONLY {}", t.sql_name()),
            &[],
        )
        .map_err(DiffError::sql(format!("count {}", t.display())))?
        .get(0);
    let key_expr = match &t.key {
        Some(cols) => key_expr(t, cols),
        None => "NULL::pg_catalog.text[]".into(),
    };
    let sample = side
        .client
        .query(
            &format!(
                "SELECT {key_expr}, {} FROM ONLY {} t LIMIT {}",
                row_json("t", &t.typed_columns(), &[]),
                t.sql_name(),
                opts.limit.min(i64::MAX as usize)
            ),
            &[],
        )
        .map_err(DiffError::sql(format!("read {}", t.display())))?;
    let rows = sample
        .iter()
        .map(|r| {
            let key: Option<Key> = r.get(0);
            let row: Value = r.get(1);
            match (key, inserted) {
                (Some(key), true) => RowChange::Insert { key, row },
                (Some(key), false) => RowChange::Delete { key, row },
                (None, true) => RowChange::Added { row },
                (None, false) => RowChange::Removed { row },
            }
        })
        .collect();
    let n = count as u64;
    Ok(TableDiff {
        table: t.display(),
        key: t
            .key
            .as_ref()
            .map(|k| k.iter().map(|(c, _)| c.clone()).collect()),
        inserted: if inserted { n } else { 0 },
        updated: 0,
        deleted: if inserted { 0 } else { n },
        method: Method::Full,
        pages: 0,
        rows,
        uncompared_columns: Vec::new(),
    })
}
