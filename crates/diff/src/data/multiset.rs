//! Rows of a table without a key, as a multiset.
//!
//! Such a row has no identity but its values, and a table may hold several
//! copies of it. A removal takes away one copy: the patch deletes as many
//! copies as the branch removed, matched on every column, and a source that
//! no longer holds that many is a conflict. Rows match by their jsonb image
//! over the compared columns, computed by the server the same way the diff
//! computed it ([`pgfork_pg::untrusted::expr::row_json`]), so every type
//! compares, including those without an `=` operator, and no operator of
//! the content's authors is called.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use pgfork_pg::untrusted::expr::{op, row_json};

use super::catalog::TableInfo;
use crate::DiffError;

/// Distinct rows with how many copies of each, in first-seen order.
pub fn copies<'a>(rows: impl IntoIterator<Item = &'a Value>) -> Vec<(Value, u64)> {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<(Value, u64)> = Vec::new();
    for row in rows {
        let text = row.to_string();
        match index.get(&text) {
            Some(&i) => out[i].1 += 1,
            None => {
                index.insert(text, out.len());
                out.push((row.clone(), 1));
            }
        }
    }
    out
}

/// The jsonb image of a row of `info` (alias `t`) over the columns `row`
/// names, as the diff made it.
fn image(info: &TableInfo, row: &Value) -> String {
    let named: Vec<String> = match row {
        Value::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let skip: Vec<String> = info
        .columns
        .iter()
        .filter(|c| !named.contains(c))
        .cloned()
        .collect();
    row_json("t", &info.typed_columns(), &skip)
}

/// Whether every column `row` names is a column of `info`.
pub fn fits(info: &TableInfo, row: &Value) -> bool {
    match row {
        Value::Object(m) => m.keys().all(|k| info.columns.contains(k)),
        _ => false,
    }
}

fn jsonb(v: &Value) -> String {
    format!("'{}'::pg_catalog.jsonb", v.to_string().replace('\'', "''"))
}

/// `DELETE` of `n` copies of each row of `rows` (all of one shape, which
/// [`fits`] `info`): a run of copies of the same row is taken in `ctid`
/// order, so the statement is deterministic. A source with fewer copies
/// loses fewer, which the promote's row count check catches.
pub fn delete_copies(info: &TableInfo, rows: &[(Value, u64)]) -> String {
    let name = info.sql_name();
    let image = image(info, &rows[0].0);
    let wanted = Value::Array(
        rows.iter()
            .map(|(row, n)| json!({"row": row, "n": n}))
            .collect(),
    );
    format!(
        "DELETE FROM ONLY {name} WHERE ctid {eq} ANY (ARRAY(\
           SELECT c.ctid FROM (\
             SELECT s.ctid, w.n, pg_catalog.row_number() OVER (PARTITION BY s.img ORDER BY s.ctid) AS k \
               FROM (SELECT t.ctid, {image} AS img FROM ONLY {name} t) s \
               JOIN (SELECT r.value {get} 'row' AS img, (r.value {get_text} 'n')::pg_catalog.int8 AS n \
                       FROM pg_catalog.jsonb_array_elements({}) r) w \
                 ON s.img {eq} w.img) c \
           WHERE c.k {le} c.n))",
        jsonb(&wanted),
        eq = op("="),
        le = op("<="),
        get = op("->"),
        get_text = op("->>"),
    )
}

/// How many copies of each of `rows` (all of one shape, which [`fits`]
/// `info`) the table holds now.
pub fn count_copies(
    client: &mut impl postgres::GenericClient,
    info: &TableInfo,
    rows: &[Value],
) -> Result<Vec<u64>, DiffError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let image = image(info, &rows[0]);
    let sql = format!(
        "SELECT w.i, pg_catalog.count(s.img) \
           FROM pg_catalog.jsonb_array_elements({}) WITH ORDINALITY AS w(img, i) \
           LEFT JOIN (SELECT {image} AS img FROM ONLY {} t) s ON s.img {eq} w.img \
          GROUP BY w.i ORDER BY w.i",
        jsonb(&Value::Array(rows.to_vec())),
        info.sql_name(),
        eq = op("="),
    );
    let found = client
        .query(&sql, &[])
        .map_err(DiffError::sql(format!("count rows of {}", info.display())))?;
    Ok(found.iter().map(|r| r.get::<_, i64>(1) as u64).collect())
}

#[cfg(test)]
mod tests {
    use super::copies;
    use serde_json::json;

    #[test]
    fn copies_count_equal_rows_once_each() {
        let a = json!({"at": 1, "what": "x"});
        let b = json!({"at": 2, "what": null});
        let rows = [a.clone(), b.clone(), a.clone(), a.clone()];
        assert_eq!(copies(&rows), vec![(a, 3), (b, 1)]);
    }
}
