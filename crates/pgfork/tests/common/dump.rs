//! What a database holds, in a form two databases can be compared by.

use std::path::Path;
use std::process::Command;

use super::{pg_tool, run_tool};

/// `pg_dump --schema-only` of database `db` of the server at `socket` and
/// `port`, as superuser, without the lines that differ between runs.
pub fn schema_dump(socket: &Path, port: u16, db: &str) -> String {
    run_tool(
        Command::new(pg_tool("pg_dump"))
            .arg("-h")
            .arg(socket)
            .args([
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "--schema-only",
                "--no-comments",
                "-d",
                db,
            ]),
    )
    .lines()
    // A header comment, and the random \restrict key pg_dump 15.14+ fences
    // its output with.
    .filter(|l| {
        !l.starts_with("-- Dumped")
            && !l.starts_with("\\restrict")
            && !l.starts_with("\\unrestrict")
    })
    .collect::<Vec<_>>()
    .join("\n")
}

/// A digest of every table's rows, sorted: equal digests, equal data.
pub fn data_digest(client: &mut postgres::Client) -> Vec<(String, String)> {
    let tables: Vec<String> = client
        .query(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
              WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let digest: String = client
                .query_one(
                    &format!(
                        "SELECT coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '-') FROM ONLY {t} x"
                    ),
                    &[],
                )
                .unwrap()
                .get(0);
            (t, digest)
        })
        .collect()
}
