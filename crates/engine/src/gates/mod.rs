//! Promotion gates (issue 15): what a promote must pass before its patch
//! is committed.
//!
//! - **Bounds on the patch's scope**: `max_rows` (rows inserted, updated
//!   and deleted, and the rows of tables the branch drops) and `max_tables`
//!   (tables whose rows change, dropped ones included). An agent that
//!   touched 10,000 rows when 100 were expected warrants a look.
//! - **Assertions**: files of SQL queries, each of which must return no
//!   rows, or a single row of a single boolean column that is true. They
//!   run on the branch before anything is applied (and with `--dry-run`),
//!   then again on the source inside the promote's transaction once the
//!   patch is applied; a failure there rolls the whole promote back. Each
//!   may run for 30 s at most (`statement_timeout`): on the source the
//!   promote's locks are held meanwhile.
//!
//! Gates come from the request (`promote --assert FILE`) and from the
//! source (`pgfork source gates`, stored in meta.db), so that every
//! promote, from any interface, obeys the source's.
//!
//! **Who runs them, and read-only-ness.** Assertions are written by the
//! admin, not the agent, yet they read content the agent wrote, so they
//! run as the source's application role with the engine's pinned session
//! settings (`search_path = pg_catalog, pg_temp`: tables are written with
//! their schema), never as superuser: on the branch in the read-only
//! session diff uses, inside a `REPEATABLE READ READ ONLY` transaction; on
//! the source in the promote's own transaction. Each runs in a savepoint
//! made read-only with `SET LOCAL transaction_read_only = on`, which
//! PostgreSQL accepts in a transaction that has already written (only the
//! way back to read-write is refused), and which the rollback to the
//! savepoint undoes; a function that tries to write, a `FOR UPDATE`, or an
//! attempt to set the transaction read-write again is then refused by the
//! server. The query is run as `DECLARE ... CURSOR FOR` it, which the
//! server accepts for a single SELECT or VALUES without data-modifying
//! WITH only. The parse check here (PostgreSQL's own parser, libpg_query)
//! refuses anything else when a file is given, naming its line, so that a
//! mistake is caught when the gate is set rather than at a promote.

use std::path::Path;

use pgfork_diff::data::DataDiff;
use pgfork_pool::meta::StoredGates;
use postgres::SimpleQueryMessage;
use postgres::types::Type;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Engine, EngineError, Result};

mod parse;
mod run;

pub use parse::parse_file;
use parse::parse_files;
pub(crate) use run::{GateCheck, check_bounds, run_assertions, run_on_branch, scope};

/// Most assertion files a source stores, or a request carries.
pub const MAX_FILES: usize = 32;
/// Largest assertion file, in bytes.
pub const MAX_FILE_BYTES: usize = 64 * 1024;
/// Most characters of an assertion file's name.
pub const MAX_NAME_CHARS: usize = 128;
/// Most queries in one file.
pub const MAX_QUERIES: usize = 100;
/// Rows of a failing assertion shown.
pub const SHOWN_ROWS: usize = 5;
/// Characters of a value shown in a failing assertion's rows.
const SHOWN_VALUE_CHARS: usize = 200;
/// The cursor each assertion runs through.
const CURSOR: &str = "pgfork_gate";

/// An assertion file as given: its name (the file's name, without its
/// directory) and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionFile {
    /// The file's name, such as `stock.sql`.
    pub name: String,
    /// Its SQL: one or more queries, separated by semicolons.
    pub sql: String,
}

impl AssertionFile {
    /// Reads an assertion file (the CLI's `--assert FILE`): a regular
    /// file of UTF-8 text, at most [`MAX_FILE_BYTES`]. Its queries are
    /// checked by [`parse_file`].
    pub fn read(path: &Path) -> Result<AssertionFile> {
        use std::io::Read;
        let bad = |why: String| {
            EngineError::InvalidArgument(format!(
                "cannot use assertion file {}: {why}",
                path.display()
            ))
        };
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(e.to_string()))?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(bad(format!(
                "larger than {} KiB, the most an assertion file may hold",
                MAX_FILE_BYTES / 1024
            )));
        }
        let sql = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| bad("no file name".into()))?;
        Ok(AssertionFile { name, sql })
    }
}

/// One query of an assertion file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assertion {
    /// The file's name and the query's number in it: `stock.sql#2`.
    pub name: String,
    /// The line of the file where the query starts (from 1).
    pub line: u32,
    /// The query, from its first token.
    pub sql: String,
    /// Stored for the source (`pgfork source gates`), rather than given
    /// with this promote.
    pub stored: bool,
}

/// Every gate a promote must pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Gates {
    /// Assertions: the source's stored ones first, then the request's.
    pub assertions: Vec<Assertion>,
    /// Most rows the patch may change.
    pub max_rows: Option<u64>,
    /// Most tables whose rows the patch may change.
    pub max_tables: Option<u64>,
}

/// Where a gate was evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GateSide {
    /// The patch itself (the scope bounds), before anything is applied.
    Patch,
    /// The branch, before anything is applied.
    Branch,
    /// The source, inside the promote's transaction, after the patch.
    Source,
}

impl GateSide {
    fn phrase(self) -> &'static str {
        match self {
            GateSide::Patch => "on the patch",
            GateSide::Branch => "on the branch",
            GateSide::Source => "on the source after the patch",
        }
    }
}

/// The outcome of one gate.
#[derive(Debug, Clone, Serialize)]
pub struct GateResult {
    /// `max_rows`, `max_tables`, or the assertion's name (`stock.sql#2`).
    pub gate: String,
    /// Where it was evaluated.
    pub on: GateSide,
    /// Whether it passed.
    pub passed: bool,
    /// What was found, in words.
    pub detail: String,
    /// The assertion's line in its file.
    pub line: Option<u32>,
    /// The assertion's query.
    pub sql: Option<String>,
    /// Whether the assertion is stored for the source.
    pub stored: Option<bool>,
    /// Rows the assertion returned; rows or tables the patch changes.
    pub count: Option<u64>,
    /// The bound (`max_rows`, `max_tables`).
    pub limit: Option<u64>,
    /// The columns of a failing assertion's rows.
    pub columns: Vec<String>,
    /// The first rows a failing assertion returned (at most
    /// [`SHOWN_ROWS`]), each value as PostgreSQL prints it (long ones cut).
    pub rows: Vec<Vec<Option<String>>>,
    /// The error PostgreSQL raised running the assertion.
    pub error: Option<String>,
}

impl GateResult {
    fn bound(gate: &str, count: u64, limit: u64, detail: String) -> GateResult {
        GateResult {
            gate: gate.into(),
            on: GateSide::Patch,
            passed: count <= limit,
            detail,
            line: None,
            sql: None,
            stored: Some(true),
            count: Some(count),
            limit: Some(limit),
            columns: Vec::new(),
            rows: Vec::new(),
            error: None,
        }
    }
}

/// A source's stored gates, as `pgfork source gates` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct SourceGates {
    /// The source.
    pub source: String,
    /// Most rows one promote may change (`null`: no bound).
    pub max_rows: Option<u64>,
    /// Most tables whose rows one promote may change (`null`: no bound).
    pub max_tables: Option<u64>,
    /// The assertion files, as given.
    pub files: Vec<AssertionFile>,
    /// The queries they hold.
    pub assertions: Vec<Assertion>,
    /// Why a stored file no longer reads as assertions (changed by hand):
    /// every promote is refused until the gates are set again.
    pub error: Option<String>,
}

/// A change to a source's gates. Applied in order: `clear`, then the
/// rest.
#[derive(Debug, Clone, Default)]
pub struct GatesChange {
    /// Remove every gate first.
    pub clear: bool,
    /// Replace the assertion files with these.
    pub files: Option<Vec<AssertionFile>>,
    /// Set (`Some(Some(n))`) or remove (`Some(None)`) the row bound.
    pub max_rows: Option<Option<u64>>,
    /// Set or remove the table bound.
    pub max_tables: Option<Option<u64>>,
}

impl GatesChange {
    /// Whether it changes nothing (show the gates).
    pub fn is_empty(&self) -> bool {
        !self.clear && self.files.is_none() && self.max_rows.is_none() && self.max_tables.is_none()
    }
}

/// Parses a bound given as text: a number, or `none` (no bound).
pub fn parse_bound(flag: &str, text: &str) -> Result<Option<u64>> {
    if text == "none" {
        return Ok(None);
    }
    text.parse::<u64>()
        .ok()
        .filter(|n| *n <= i64::MAX as u64)
        .map(Some)
        .ok_or_else(|| {
            EngineError::InvalidArgument(format!(
                "{flag} takes a number of 0 or more, or none to remove the bound (got {text:?})"
            ))
        })
}

fn check_bound(field: &str, n: Option<u64>) -> Result<()> {
    if n.is_some_and(|n| n > i64::MAX as u64) {
        return Err(EngineError::InvalidArgument(format!(
            "{field} is at most {}",
            i64::MAX
        )));
    }
    Ok(())
}

impl Engine {
    /// The gates stored for `source`.
    pub fn source_gates(&self, source: &str) -> Result<SourceGates> {
        self.admin_only("see a source's promotion gates")?;
        self.source_row(source)?;
        let stored = StoredGates::get(self.meta.conn(), source)?;
        Ok(view(source, stored))
    }

    /// Changes the gates stored for `source` (see [`GatesChange`]); every
    /// file is checked first, and a refusal changes nothing.
    pub fn set_source_gates(&mut self, source: &str, change: &GatesChange) -> Result<SourceGates> {
        self.admin_only("change a source's promotion gates")?;
        self.source_row(source)?;
        let mut stored = if change.clear {
            StoredGates::default()
        } else {
            StoredGates::get(self.meta.conn(), source)?
        };
        if let Some(files) = &change.files {
            parse_files(files, true)?;
            stored.files = files
                .iter()
                .map(|f| (f.name.clone(), f.sql.clone()))
                .collect();
        }
        if let Some(n) = change.max_rows {
            check_bound("max_rows", n)?;
            stored.max_rows = n;
        }
        if let Some(n) = change.max_tables {
            check_bound("max_tables", n)?;
            stored.max_tables = n;
        }
        if !change.is_empty() {
            self.meta.write(|c| stored.set(c, source))?;
        }
        Ok(view(source, stored))
    }

    /// `promote --replace` swaps a source's whole data for a branch's, with
    /// no patch to bound and no transaction to run assertions in: refused
    /// while the source has gates, which every promote must pass.
    pub(crate) fn refuse_replace_with_gates(&self, source: &str, branch: &str) -> Result<()> {
        if StoredGates::get(self.meta.conn(), source)?.is_empty() {
            return Ok(());
        }
        Err(EngineError::WrongState(format!(
            "source '{source}' has promotion gates (`pgfork source gates {source}`), which every promote must pass, \
             and --replace swaps the source's whole data with no patch to bound or check in a transaction: \
             promote the branch's rows instead (pgfork promote {branch}), or remove the gates first \
             (pgfork source gates {source} --clear)"
        )))
    }

    /// The gates a promote to `source` obeys: the source's stored ones and
    /// those given with the request.
    pub(crate) fn promote_gates(&self, source: &str, request: &[AssertionFile]) -> Result<Gates> {
        let stored = StoredGates::get(self.meta.conn(), source)?;
        let files: Vec<AssertionFile> = stored
            .files
            .iter()
            .map(|(name, sql)| AssertionFile {
                name: name.clone(),
                sql: sql.clone(),
            })
            .collect();
        let mut assertions = parse_files(&files, true).map_err(|e| {
            EngineError::WrongState(format!(
                "the promotion gates stored for source '{source}' no longer read as assertions ({e}): \
                 set them again with `pgfork source gates {source} --assert FILE`, or remove them with --clear"
            ))
        })?;
        assertions.extend(parse_files(request, false)?);
        Ok(Gates {
            assertions,
            max_rows: stored.max_rows,
            max_tables: stored.max_tables,
        })
    }
}

fn view(source: &str, stored: StoredGates) -> SourceGates {
    let files: Vec<AssertionFile> = stored
        .files
        .into_iter()
        .map(|(name, sql)| AssertionFile { name, sql })
        .collect();
    let (assertions, error) = match parse_files(&files, true) {
        Ok(a) => (a, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    SourceGates {
        source: source.to_string(),
        max_rows: stored.max_rows,
        max_tables: stored.max_tables,
        files,
        assertions,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(sql: &str) -> AssertionFile {
        AssertionFile {
            name: "checks.sql".into(),
            sql: sql.into(),
        }
    }

    #[test]
    fn queries_are_split_named_and_placed() {
        let text = "-- stock never goes negative\nSELECT * FROM public.stock WHERE qty < 0;\n\n\
                    /* a /* nested */ comment */ SELECT count(*) = 0\n  FROM public.orders;\n\
                    WITH x AS (SELECT 1) SELECT * FROM x WHERE false;\nVALUES (true) -- last, no semicolon";
        let a = parse_file(&file(text), false).unwrap();
        assert_eq!(a.len(), 4, "{a:#?}");
        assert_eq!(a[0].name, "checks.sql#1");
        assert_eq!(a[0].line, 2);
        assert_eq!(a[0].sql, "SELECT * FROM public.stock WHERE qty < 0");
        assert_eq!(a[1].line, 4);
        assert_eq!(a[1].sql, "SELECT count(*) = 0\n  FROM public.orders");
        assert_eq!(a[2].line, 6);
        assert_eq!(a[3].name, "checks.sql#4");
        assert_eq!(a[3].line, 7);
        assert!(a[3].sql.starts_with("VALUES (true)"));
        // A semicolon in a literal or a comment does not split.
        let a = parse_file(&file("SELECT ';' -- ;\n WHERE false;"), false).unwrap();
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn writes_and_non_queries_are_refused_naming_the_line() {
        for (sql, line, words) in [
            (
                "SELECT 1;\n\nUPDATE public.t SET x = 1;",
                3,
                "UPDATE is not a query",
            ),
            (
                "SELECT 1;\nDELETE FROM public.t",
                2,
                "DELETE is not a query",
            ),
            (
                "\nWITH d AS (DELETE FROM public.t RETURNING *) SELECT * FROM d",
                2,
                "data-modifying",
            ),
            ("SELECT * INTO public.copy FROM public.t", 1, "INTO"),
            ("SELECT * FROM public.t FOR UPDATE", 1, "FOR UPDATE"),
            (
                "SELECT * FROM public.t WHERE id IN (SELECT id FROM public.u FOR SHARE)",
                1,
                "FOR UPDATE",
            ),
            ("SELECT 1;\nCREATE TABLE public.x (a int)", 2, "CREATE"),
            (
                "SELECT 1;\n  SET search_path = public",
                2,
                "SET is not a query",
            ),
            ("COPY public.t TO STDOUT", 1, "COPY"),
            ("SELECT 1;\nSELEC 2;", 2, "does not parse"),
        ] {
            let err = parse_file(&file(sql), false).unwrap_err().to_string();
            assert!(
                err.contains(&format!("line {line}")) && err.contains(words),
                "{sql}: {err}"
            );
            assert!(err.contains("checks.sql"), "{err}");
        }
    }

    #[test]
    fn empty_files_and_bad_names_are_refused() {
        for sql in ["", "  \n-- only a comment\n", ";;"] {
            let err = parse_file(&file(sql), false).unwrap_err().to_string();
            assert!(err.contains("holds no query"), "{sql:?}: {err}");
        }
        for name in ["", "a/b.sql", "bad\nname", ".."] {
            let f = AssertionFile {
                name: name.into(),
                sql: "SELECT 1 WHERE false".into(),
            };
            assert!(parse_file(&f, false).is_err(), "{name:?}");
        }
        let big = AssertionFile {
            name: "big.sql".into(),
            sql: format!("SELECT 1 WHERE false -- {}", "x".repeat(MAX_FILE_BYTES)),
        };
        assert!(parse_file(&big, false).is_err());
        let twice = vec![file("SELECT 1 WHERE false"), file("SELECT 2 WHERE false")];
        assert!(
            parse_files(&twice, true)
                .unwrap_err()
                .to_string()
                .contains("two assertion files")
        );
    }

    #[test]
    fn bounds_count_rows_and_tables() {
        use pgfork_diff::data::TableDiff;
        let t = |name: &str, i: u64, u: u64, d: u64| TableDiff {
            table: name.into(),
            key: None,
            inserted: i,
            updated: u,
            deleted: d,
            method: pgfork_diff::data::Method::Full,
            pages: 0,
            rows: Vec::new(),
            uncompared_columns: Vec::new(),
        };
        let plan = DataDiff {
            tables: vec![t("public.a", 3, 2, 1), t("public.b", 0, 0, 0)],
            ..DataDiff::default()
        };
        let branch = DataDiff {
            tables: vec![t("public.a", 3, 2, 1), t("public.gone", 0, 0, 40)],
            ..DataDiff::default()
        };
        let s = scope(&plan, &branch, |name| name != "public.gone");
        assert_eq!(s.rows, 46);
        assert_eq!(s.tables, vec!["public.a", "public.gone"]);
        let gates = Gates {
            max_rows: Some(46),
            max_tables: Some(1),
            ..Gates::default()
        };
        let r = check_bounds(&gates, &s);
        assert!(r[0].passed, "{r:#?}");
        assert!(!r[1].passed);
        assert!(r[1].detail.contains("public.gone"), "{}", r[1].detail);
        assert_eq!(parse_bound("--max-rows", "none").unwrap(), None);
        assert_eq!(parse_bound("--max-rows", "0").unwrap(), Some(0));
        assert!(parse_bound("--max-rows", "-1").is_err());
        assert!(parse_bound("--max-rows", "lots").is_err());
    }
}
