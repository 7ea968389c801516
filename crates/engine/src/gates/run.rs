//! Evaluating gates: the scope bounds on a promote's plan, and the
//! assertions on the branch and, inside the promote, on the source.

use super::*;

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
    } else if code == &SqlState::QUERY_CANCELED {
        " (a gate may run for 30 s at most: on the source it runs inside the promote's \
         transaction, holding its locks; make it cheaper, as with an index on what it reads)"
    } else {
        ""
    }
}

/// How long one assertion may run, on the branch or on the source (where
/// the promote's transaction holds its locks meanwhile).
pub(crate) const ASSERTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
        // Undone with the savepoint: the promote's own statements keep
        // their settings.
        sp.batch_execute(&format!(
            "SET LOCAL transaction_read_only = on; SET LOCAL statement_timeout = '{}s'",
            ASSERTION_TIMEOUT.as_secs()
        ))
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
