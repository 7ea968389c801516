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
//!   patch is applied; a failure there rolls the whole promote back.
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

/// A stored or requested file name: printable, without a directory.
fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "an assertion file's name must have 1 to {MAX_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(|c| c.is_control() || c == '/') || name == "." || name == ".." {
        return Err(format!(
            "assertion file name {name:?} must be a file name: no '/' or control characters"
        ));
    }
    Ok(())
}

/// Where the first token at or after `from` starts: whitespace and
/// comments (`--` to the end of the line, `/* */`, nested as PostgreSQL
/// nests them) skipped.
fn first_token(text: &str, mut from: usize) -> usize {
    let bytes = text.as_bytes();
    loop {
        while from < bytes.len() && bytes[from].is_ascii_whitespace() {
            from += 1;
        }
        if bytes[from..].starts_with(b"--") {
            from = text[from..]
                .find('\n')
                .map_or(bytes.len(), |n| from + n + 1);
        } else if bytes[from..].starts_with(b"/*") {
            let mut depth = 0usize;
            while from < bytes.len() {
                if bytes[from..].starts_with(b"/*") {
                    depth += 1;
                    from += 2;
                } else if bytes[from..].starts_with(b"*/") {
                    depth -= 1;
                    from += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    from += 1;
                }
            }
        } else {
            return from;
        }
    }
}

/// The line (from 1) of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> u32 {
    1 + text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count() as u32
}

/// Byte offset of `part`, a slice of `whole`, in it.
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// The first word of a statement, uppercase (`UPDATE`), to name it.
fn command_word(sql: &str) -> String {
    sql.split(|c: char| !c.is_ascii_alphabetic())
        .find(|w| !w.is_empty())
        .unwrap_or("?")
        .to_ascii_uppercase()
}

/// Why a statement cannot be a gate, or `None` when it is a single query
/// that does not write (read with PostgreSQL's parser).
fn refusal_of(sql: &str) -> Option<String> {
    use pg_query::{NodeEnum, NodeRef};
    let parsed = match pg_query::parse(sql) {
        Ok(p) => p,
        Err(e) => return Some(e.to_string()),
    };
    let stmts = &parsed.protobuf.stmts;
    let top = stmts
        .first()
        .and_then(|s| s.stmt.as_ref())
        .and_then(|n| n.node.as_ref());
    if stmts.len() != 1 || !matches!(top, Some(NodeEnum::SelectStmt(_))) {
        return Some(format!(
            "{} is not a query: a gate is a single SELECT, VALUES or WITH ... SELECT, and must not write",
            command_word(sql)
        ));
    }
    for (node, _, _) in parsed.protobuf.nodes() {
        match node {
            NodeRef::InsertStmt(_)
            | NodeRef::UpdateStmt(_)
            | NodeRef::DeleteStmt(_)
            | NodeRef::MergeStmt(_) => {
                return Some(
                    "the query holds a data-modifying statement (INSERT, UPDATE, DELETE or MERGE in WITH): \
                     a gate must not write"
                        .into(),
                );
            }
            NodeRef::SelectStmt(s) if s.into_clause.is_some() => {
                return Some("SELECT ... INTO creates a table: a gate must not write".into());
            }
            NodeRef::SelectStmt(s) if !s.locking_clause.is_empty() => {
                return Some(
                    "FOR UPDATE / FOR SHARE locks rows: a gate only reads, drop the locking clause"
                        .into(),
                );
            }
            _ => {}
        }
    }
    None
}

/// Where the first statement of `text` that does not parse starts: the
/// text is cut at the semicolons PostgreSQL's scanner sees (not those in
/// literals, quoted names or comments), and each piece parsed alone.
fn failing_piece(text: &str) -> Option<usize> {
    let tokens = pg_query::scan(text).ok()?.tokens;
    let mut start = 0usize;
    let cuts = tokens
        .iter()
        .filter(|t| t.token == pg_query::protobuf::Token::Ascii59 as i32)
        .map(|t| t.start.max(0) as usize)
        .chain(std::iter::once(text.len()));
    for cut in cuts {
        let piece = text.get(start..cut)?;
        if pg_query::parse(piece).is_err() {
            return Some(first_token(text, start));
        }
        start = cut + 1;
    }
    None
}

/// The queries of an assertion file, each checked to be a single query
/// that does not write. A file that is empty, does not parse, or holds
/// anything else is refused, naming the file and the line.
pub fn parse_file(file: &AssertionFile, stored: bool) -> Result<Vec<Assertion>> {
    let bad = |why: String| EngineError::InvalidArgument(format!("{why}; nothing was changed"));
    check_name(&file.name).map_err(bad)?;
    let text = file.sql.as_str();
    if text.len() > MAX_FILE_BYTES {
        return Err(bad(format!(
            "assertion file {} is larger than {} KiB, the most an assertion file may hold",
            file.name,
            MAX_FILE_BYTES / 1024
        )));
    }
    if text.contains('\0') {
        return Err(bad(format!(
            "assertion file {} holds a NUL byte",
            file.name
        )));
    }
    let statements = pg_query::split_with_parser(text).map_err(|e| {
        // The parser's message has no place: find the statement that does
        // not parse among the pieces between the scanner's semicolons.
        let line = failing_piece(text).map(|start| line_of(text, start));
        let message = match e {
            pg_query::Error::Split(m) | pg_query::Error::Parse(m) | pg_query::Error::Scan(m) => m,
            other => other.to_string(),
        };
        bad(match line {
            Some(line) => format!(
                "assertion file {} does not parse at line {line}: {message}",
                file.name
            ),
            None => format!("assertion file {} does not parse: {message}", file.name),
        })
    })?;
    let mut out = Vec::new();
    for stmt in statements {
        let start = first_token(text, offset_in(text, stmt));
        let end = offset_in(text, stmt) + stmt.len();
        if start >= end {
            continue;
        }
        let sql = text[start..end].trim_end().to_string();
        let line = line_of(text, start);
        if let Some(why) = refusal_of(&sql) {
            return Err(bad(format!(
                "assertion file {}, line {line}: {why}",
                file.name
            )));
        }
        out.push(Assertion {
            name: format!("{}#{}", file.name, out.len() + 1),
            line,
            sql,
            stored,
        });
    }
    if out.is_empty() {
        return Err(bad(format!(
            "assertion file {} holds no query: write one or more SELECT queries that return no rows \
             when all is well",
            file.name
        )));
    }
    if out.len() > MAX_QUERIES {
        return Err(bad(format!(
            "assertion file {} holds {} queries, more than the {MAX_QUERIES} a file may hold",
            file.name,
            out.len()
        )));
    }
    Ok(out)
}

/// The queries of several files, refused if there are too many files or
/// two share a name.
fn parse_files(files: &[AssertionFile], stored: bool) -> Result<Vec<Assertion>> {
    if files.len() > MAX_FILES {
        return Err(EngineError::InvalidArgument(format!(
            "{} assertion files, more than the {MAX_FILES} allowed; nothing was changed",
            files.len()
        )));
    }
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if files[..i].iter().any(|g| g.name == f.name) {
            return Err(EngineError::InvalidArgument(format!(
                "two assertion files are named {}: give each its own name; nothing was changed",
                f.name
            )));
        }
        out.extend(parse_file(f, stored)?);
    }
    Ok(out)
}

/// What a promote's patch changes, for the scope bounds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    /// Rows inserted, updated and deleted, and those of dropped tables.
    pub rows: u64,
    /// Tables whose rows change (dropped ones included), sorted.
    pub tables: Vec<String>,
}

/// The scope of `plan` (the rows the patch writes) and of the tables the
/// branch dropped (`branch_diff`'s tables that `on_branch` does not know;
/// the schema patch's `DROP TABLE` takes their rows).
pub(crate) fn scope(
    plan: &DataDiff,
    branch_diff: &DataDiff,
    on_branch: impl Fn(&str) -> bool,
) -> Scope {
    let mut tables: Vec<String> = Vec::new();
    let mut rows = 0u64;
    for t in plan.tables.iter().filter(|t| !t.is_empty()) {
        rows = rows.saturating_add(t.inserted + t.updated + t.deleted);
        tables.push(t.table.clone());
    }
    for t in branch_diff.tables.iter().filter(|t| !on_branch(&t.table)) {
        rows = rows.saturating_add(t.deleted);
        tables.push(t.table.clone());
    }
    tables.sort();
    tables.dedup();
    Scope { rows, tables }
}

/// The scope bounds of `gates` against `scope` (one result per bound set).
pub(crate) fn check_bounds(gates: &Gates, scope: &Scope) -> Vec<GateResult> {
    let mut out = Vec::new();
    if let Some(limit) = gates.max_rows {
        out.push(GateResult::bound(
            "max_rows",
            scope.rows,
            limit,
            format!(
                "the patch changes {} row{} (inserted, updated, deleted, and those of dropped tables); \
                 at most {limit} may change",
                scope.rows,
                if scope.rows == 1 { "" } else { "s" }
            ),
        ));
    }
    if let Some(limit) = gates.max_tables {
        let n = scope.tables.len() as u64;
        let mut shown: Vec<&str> = scope.tables.iter().take(10).map(String::as_str).collect();
        if scope.tables.len() > 10 {
            shown.push("...");
        }
        out.push(GateResult::bound(
            "max_tables",
            n,
            limit,
            format!(
                "the patch changes rows of {n} table{}{}; at most {limit} may have rows changed",
                if n == 1 { "" } else { "s" },
                if shown.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", shown.join(", "))
                }
            ),
        ));
    }
    out
}

/// What running one assertion returned.
struct Outcome {
    /// Its columns' names.
    columns: Vec<String>,
    /// The first rows (one more than shown, before truncation).
    rows: Vec<Vec<Option<String>>>,
    /// Every row it returned.
    count: u64,
    /// Its single column is a boolean.
    single_bool: bool,
    /// The value of its first row's first column, as printed.
    first: Option<Option<String>>,
}

/// A row of the simple query protocol: each value as PostgreSQL prints
/// it (or `None` for NULL), long values cut.
fn row_text(row: &postgres::SimpleQueryRow) -> Vec<Option<String>> {
    (0..row.columns().len())
        .map(|i| {
            row.get(i).map(|v| {
                if v.chars().count() > SHOWN_VALUE_CHARS {
                    format!(
                        "{}...",
                        v.chars().take(SHOWN_VALUE_CHARS).collect::<String>()
                    )
                } else {
                    v.to_string()
                }
            })
        })
        .collect()
}

/// A row as a JSON object in the query's column order, for messages.
fn row_display(columns: &[String], row: &[Option<String>]) -> String {
    let pairs: Vec<String> = columns
        .iter()
        .zip(row)
        .map(|(c, v)| {
            let v = v.as_ref().map_or(Value::Null, |v| Value::String(v.clone()));
            format!("{}:{v}", Value::String(c.clone()))
        })
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// Runs one assertion in `sp`, a savepoint already made read-only.
fn evaluate(
    sp: &mut postgres::Transaction<'_>,
    sql: &str,
) -> std::result::Result<Outcome, postgres::Error> {
    // Parse and describe only: its columns' types, and the server's own
    // refusal of a string with more than one statement.
    let single_bool = {
        let stmt = sp.prepare(sql)?;
        stmt.columns().len() == 1 && *stmt.columns()[0].type_() == Type::BOOL
    };
    // The newline ends a `--` comment at the end of the query.
    sp.execute(
        &format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR {sql}\n"),
        &[],
    )?;
    let mut rows = Vec::new();
    let mut columns = Vec::new();
    for m in sp.simple_query(&format!("FETCH {} FROM {CURSOR}", SHOWN_ROWS + 1))? {
        if let SimpleQueryMessage::Row(r) = m {
            if columns.is_empty() {
                columns = r.columns().iter().map(|c| c.name().to_string()).collect();
            }
            rows.push(row_text(&r));
        }
    }
    let first = rows.first().map(|r| r.first().cloned().flatten());
    let mut count = rows.len() as u64;
    if rows.len() > SHOWN_ROWS {
        for m in sp.simple_query(&format!("MOVE FORWARD ALL IN {CURSOR}"))? {
            if let SimpleQueryMessage::CommandComplete(n) = m {
                count += n;
            }
        }
    }
    Ok(Outcome {
        columns,
        rows,
        count,
        single_bool,
        first,
    })
}

/// Advice for an error an assertion raised.
fn advice(e: &postgres::error::DbError) -> &'static str {
    use postgres::error::SqlState;
    let code = e.code();
    if code == &SqlState::UNDEFINED_TABLE
        || code == &SqlState::UNDEFINED_FUNCTION
        || code == &SqlState::UNDEFINED_OBJECT
    {
        " (gates run with search_path = pg_catalog, pg_temp: write tables and functions with their \
         schema, as public.orders)"
    } else if code == &SqlState::READ_ONLY_SQL_TRANSACTION {
        " (a gate runs read-only and must not write, lock rows or call functions that do)"
    } else {
        ""
    }
}

/// Runs `assertions` in `tx`, each in a savepoint made read-only and
/// rolled back afterwards, so that `tx` is as it was. An assertion that
/// fails or raises an error is a failed gate; an error of the connection
/// itself is an error.
pub(crate) fn run_assertions(
    tx: &mut postgres::Transaction<'_>,
    assertions: &[Assertion],
    on: GateSide,
) -> Result<Vec<GateResult>> {
    let mut out = Vec::with_capacity(assertions.len());
    for a in assertions {
        let mut sp = tx
            .savepoint("pgfork_gate")
            .map_err(EngineError::sql("open a savepoint for a promotion gate"))?;
        sp.batch_execute("SET LOCAL transaction_read_only = on")
            .map_err(EngineError::sql(
                "make a promotion gate's savepoint read-only",
            ))?;
        let outcome = evaluate(&mut sp, &a.sql);
        sp.rollback()
            .map_err(EngineError::sql("roll back a promotion gate's savepoint"))?;
        let mut r = GateResult {
            gate: a.name.clone(),
            on,
            passed: false,
            detail: String::new(),
            line: Some(a.line),
            sql: Some(a.sql.clone()),
            stored: Some(a.stored),
            count: None,
            limit: None,
            columns: Vec::new(),
            rows: Vec::new(),
            error: None,
        };
        match outcome {
            Ok(o) => {
                let is_true = o.count == 1 && o.single_bool && o.first == Some(Some("t".into()));
                r.passed = o.count == 0 || is_true;
                r.count = Some(o.count);
                r.detail = match (o.count, r.passed) {
                    (0, _) => "returned no rows".into(),
                    (1, true) => "returned true".into(),
                    (1, false) if o.single_bool => format!(
                        "returned {}; it passes only when it returns no rows or a single true",
                        match &o.first {
                            Some(Some(v)) if v == "f" => "false",
                            _ => "NULL",
                        }
                    ),
                    (n, _) => format!(
                        "returned {n} row{}; it passes only when it returns no rows or a single true",
                        if n == 1 { "" } else { "s" }
                    ),
                };
                if !r.passed {
                    r.columns = o.columns;
                    r.rows = o.rows.into_iter().take(SHOWN_ROWS).collect();
                }
            }
            Err(e) => {
                let Some(db) = e.as_db_error() else {
                    return Err(EngineError::sql(&format!(
                        "run promotion gate {} {}",
                        a.name,
                        on.phrase()
                    ))(e));
                };
                let message = format!("{}{}", db.message(), advice(db));
                r.detail = format!("raised an error: {message}");
                r.error = Some(message);
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// Runs `assertions` on a branch, in one read-only REPEATABLE READ
/// transaction (one consistent view for all of them) of `client`, which
/// must be a session as the application role.
pub(crate) fn run_on_branch(
    client: &mut postgres::Client,
    assertions: &[Assertion],
) -> Result<Vec<GateResult>> {
    if assertions.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(EngineError::sql("begin the promotion gates on the branch"))?;
    let out = run_assertions(&mut tx, assertions, GateSide::Branch)?;
    tx.rollback()
        .map_err(EngineError::sql("end the promotion gates on the branch"))?;
    Ok(out)
}

/// What a refusal names: the promote, and whether the gates are the
/// source's.
pub(crate) struct GateCheck<'a> {
    /// The promote's gates.
    pub gates: &'a Gates,
    /// The branch promoted.
    pub branch: &'a str,
    /// Its source.
    pub source: &'a str,
}

impl GateCheck<'_> {
    /// The refusal of a promote whose gates in `results` failed, if any
    /// did: every failed gate, where, what it returned, and what to do.
    pub(crate) fn refusal(&self, results: &[GateResult]) -> Option<EngineError> {
        let failed: Vec<&GateResult> = results.iter().filter(|r| !r.passed).collect();
        if failed.is_empty() {
            return None;
        }
        let on_source = failed.iter().any(|r| r.on == GateSide::Source);
        let mut text = format!(
            "promote of branch '{}' refused by {} promotion gate{}, so nothing was applied{}:",
            self.branch,
            failed.len(),
            if failed.len() == 1 { "" } else { "s" },
            if on_source {
                " (the promote's transaction was rolled back)"
            } else {
                ""
            }
        );
        for r in &failed {
            match (&r.sql, r.line) {
                (Some(sql), Some(line)) => {
                    text.push_str(&format!(
                        "\n  assertion {} (line {line}{}) {}: {}\n    {}",
                        r.gate,
                        if r.stored == Some(true) {
                            format!(", stored for source {}", self.source)
                        } else {
                            String::new()
                        },
                        r.on.phrase(),
                        r.detail,
                        sql.replace('\n', "\n    ")
                    ));
                    if !r.rows.is_empty() {
                        text.push_str(&format!(
                            "\n    first rows{}:",
                            if r.count.unwrap_or(0) > r.rows.len() as u64 {
                                format!(" ({} of {})", r.rows.len(), r.count.unwrap_or(0))
                            } else {
                                String::new()
                            }
                        ));
                        for row in &r.rows {
                            text.push_str(&format!("\n      {}", row_display(&r.columns, row)));
                        }
                    }
                }
                _ => text.push_str(&format!(
                    "\n  {} of source {}: {}",
                    r.gate, self.source, r.detail
                )),
            }
        }
        let mut where_set = Vec::new();
        if failed.iter().any(|r| r.stored == Some(false)) {
            where_set.push("the file given with --assert".to_string());
        }
        if failed.iter().any(|r| r.stored == Some(true)) {
            where_set.push(format!(
                "`pgfork source gates {}` shows and sets the source's gates",
                self.source
            ));
        }
        text.push_str(&format!(
            "\nLook at what the branch changed (`pgfork diff {}`) and fix it on the branch; if the change is \
             meant, change the gate ({}).",
            self.branch,
            where_set.join("; ")
        ));
        Some(EngineError::GateFailed(text))
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
