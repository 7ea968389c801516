//! SQL on a branch for the MCP tools, always through the branch's own DSN:
//! the application role, never a superuser, never a source.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::{NoTls, SimpleQueryMessage};
use serde::Serialize;

/// Most rows a `run_sql` result may carry.
pub const MAX_ROWS_LIMIT: usize = 1000;
/// Rows returned when the caller does not say.
pub const DEFAULT_ROWS: usize = 100;
/// The longest time limit of `run_sql`, in seconds, and its default.
pub const MAX_TIMEOUT_SECS: u64 = 60;
/// How long a canceled query has to stop before its session is ended.
pub const GRACE: Duration = Duration::from_secs(2);

/// Why SQL on a branch failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The server refused or failed it.
    #[error(transparent)]
    Sql(#[from] postgres::Error),
    /// It ran past its time limit and was canceled from outside the session.
    #[error(
        "canceled after {0} s: the time limit of run_sql (timeout_seconds, at most 60); \
         add a LIMIT or WHERE, or split the work into smaller statements"
    )]
    Canceled(u64),
}

/// The result of `run_sql`.
#[derive(Debug, Serialize)]
pub struct SqlResult {
    /// Column names of the last statement that returned rows.
    pub columns: Vec<String>,
    /// Its rows, as text (`null` for SQL NULL), at most `max_rows`.
    pub rows: Vec<Vec<Option<String>>>,
    /// Whether rows were cut.
    pub truncated: bool,
    /// Rows affected or returned by each statement, in order.
    pub statements: Vec<u64>,
    /// Says what was cut and how to see the rest, when something was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A client for a branch's DSN. Its statement timeout (a little past
/// `limit`) is only a first line: the SQL it runs can change it, so
/// `run_sql` also cancels from outside (see [`Watchdog`]).
fn connect(dsn: &str, limit: Duration) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = dsn.parse()?;
    config
        .application_name("pgfork-mcp")
        .options(&format!(
            "-c statement_timeout={}",
            (limit + GRACE).as_millis()
        ))
        .connect_timeout(Duration::from_secs(10));
    config.connect(NoTls)
}

/// Enforces a time limit on a session from outside it: when the limit
/// passes, the running query is canceled (a cancel request on a separate
/// connection, which no setting of the session can refuse); if it has not
/// stopped [`GRACE`] later (SQL can catch a cancel), the session is ended
/// with `pg_terminate_backend`, which a role may do to its own sessions.
struct Watchdog {
    done: mpsc::Sender<()>,
    thread: JoinHandle<bool>,
}

impl Watchdog {
    /// Starts the clock for the SQL `client` is about to run.
    fn start(
        client: &mut postgres::Client,
        dsn: &str,
        limit: Duration,
    ) -> Result<Watchdog, postgres::Error> {
        let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[])?.get(0);
        let token = client.cancel_token();
        let dsn = dsn.to_string();
        let (done, finished) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if finished.recv_timeout(limit) != Err(RecvTimeoutError::Timeout) {
                return false;
            }
            if let Err(e) = token.cancel_query(NoTls) {
                tracing::warn!("run_sql: cancel after the time limit: {e}");
            }
            if finished.recv_timeout(GRACE) == Err(RecvTimeoutError::Timeout) {
                terminate(&dsn, pid);
            }
            true
        });
        Ok(Watchdog { done, thread })
    }

    /// Stops the clock; whether the limit had passed.
    fn finish(self) -> bool {
        drop(self.done);
        self.thread.join().unwrap_or(true)
    }
}

/// Ends session `pid` of the branch at `dsn`, as the same role.
fn terminate(dsn: &str, pid: i32) {
    let ended = connect(dsn, GRACE).and_then(|mut c| {
        let ended = c.query_one("SELECT pg_terminate_backend($1)", &[&pid]);
        let _ = c.close();
        ended
    });
    match ended {
        Ok(_) => tracing::info!("run_sql: ended session {pid}, which ignored its cancel"),
        Err(e) => tracing::warn!("run_sql: could not end session {pid} past its time limit: {e}"),
    }
}

/// Whether `sql` is one statement that a cursor can run: a query that
/// returns rows, fetched only as far as needed.
fn cursor_friendly(sql: &str) -> bool {
    let body = sql.trim().trim_end_matches(';').trim_end();
    let first = body
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(first.as_str(), "select" | "with" | "values" | "table") && !body.contains(';')
}

/// Runs `sql` on the branch at `dsn`, returning at most `max_rows` rows,
/// canceled from outside once it has run for `limit`. The session is
/// closed afterwards, whatever happened.
pub fn run_sql(
    dsn: &str,
    sql: &str,
    max_rows: usize,
    limit: Duration,
) -> Result<SqlResult, QueryError> {
    let mut client = connect(dsn, limit)?;
    let watchdog = Watchdog::start(&mut client, dsn, limit)?;
    let result = execute(&mut client, sql, max_rows);
    let fired = watchdog.finish();
    let _ = client.close();
    match result {
        Err(_) if fired => Err(QueryError::Canceled(limit.as_secs())),
        other => Ok(other?),
    }
}

/// Runs `sql` on an open session: a single query through a cursor (so
/// only the rows shown are read), anything else as it is.
fn execute(
    client: &mut postgres::Client,
    sql: &str,
    max_rows: usize,
) -> Result<SqlResult, postgres::Error> {
    if cursor_friendly(sql) {
        // A cursor reads only the rows shown (plus one, to know whether
        // there are more), however large the table.
        let body = sql.trim().trim_end_matches(';');
        let declared = client.batch_execute(&format!(
            "BEGIN; DECLARE pgfork_mcp NO SCROLL CURSOR FOR {body}"
        ));
        match declared {
            Ok(()) => {
                let messages = client
                    .simple_query(&format!("FETCH FORWARD {} FROM pgfork_mcp", max_rows + 1))?;
                client.batch_execute("COMMIT")?;
                let mut result = collect(messages, max_rows);
                result.statements = vec![result.rows.len() as u64];
                if result.truncated {
                    result.note = Some(format!(
                        "only the first {max_rows} rows are shown; add a LIMIT/WHERE or raise max_rows (at most {MAX_ROWS_LIMIT})"
                    ));
                }
                return Ok(result);
            }
            // Not a plain query after all (a data-modifying WITH, say):
            // run it as it is.
            Err(_) => client.batch_execute("ROLLBACK")?,
        }
    }
    let messages = client.simple_query(sql)?;
    let total = messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count();
    let mut result = collect(messages, max_rows);
    if result.truncated {
        result.note = Some(format!(
            "{total} rows came back, only the first {max_rows} of the last result are shown; \
             add a LIMIT/WHERE or raise max_rows (at most {MAX_ROWS_LIMIT})"
        ));
    }
    Ok(result)
}

/// Keeps the last result set (its columns and first `max_rows` rows) and
/// the count of every statement.
fn collect(messages: Vec<SimpleQueryMessage>, max_rows: usize) -> SqlResult {
    let mut result = SqlResult {
        columns: Vec::new(),
        rows: Vec::new(),
        truncated: false,
        statements: Vec::new(),
        note: None,
    };
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                result.columns = cols.iter().map(|c| c.name().to_string()).collect();
                result.rows.clear();
                result.truncated = false;
            }
            SimpleQueryMessage::Row(row) => {
                if result.rows.len() < max_rows {
                    result.rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    );
                } else {
                    result.truncated = true;
                }
            }
            SimpleQueryMessage::CommandComplete(n) => result.statements.push(n),
            _ => {}
        }
    }
    result
}

/// A column of a table.
#[derive(Debug, Serialize)]
pub struct Column {
    /// Name.
    pub name: String,
    /// SQL type, as `format_type` prints it.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Default expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// A constraint or index of a table.
#[derive(Debug, Serialize)]
pub struct Definition {
    /// Name.
    pub name: String,
    /// Its SQL definition.
    pub definition: String,
}

/// A table, view or materialized view.
#[derive(Debug, Serialize)]
pub struct Table {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// `table`, `partitioned table`, `view`, `materialized view`, `foreign table`.
    pub kind: &'static str,
    /// Planner's row estimate (-1: never analysed).
    pub estimated_rows: i64,
    /// Columns in order.
    pub columns: Vec<Column>,
    /// Primary key, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<Definition>,
    /// Foreign keys.
    pub foreign_keys: Vec<Definition>,
    /// Unique and check constraints.
    pub constraints: Vec<Definition>,
    /// Indexes.
    pub indexes: Vec<Definition>,
}

fn kind_name(relkind: i8) -> &'static str {
    match relkind as u8 {
        b'r' => "table",
        b'p' => "partitioned table",
        b'v' => "view",
        b'm' => "materialized view",
        b'f' => "foreign table",
        _ => "relation",
    }
}

const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
                            AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// A read-only client for a branch's DSN whose settings the branch cannot
/// change (see `pgfork_pg::untrusted`): the catalog queries below then
/// see only pg_catalog's functions and operators. Its statements stop at
/// `limit` (the later `-c` wins over the pinned one).
fn connect_pinned(dsn: &str, limit: Duration) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = dsn.parse()?;
    let pinned = pgfork_pg::untrusted::session::pinned_options(
        pgfork_pg::untrusted::session::Access::ReadOnly,
    );
    config
        .application_name("pgfork-mcp")
        .options(&format!(
            "{pinned} -c statement_timeout={}",
            limit.as_millis()
        ))
        .connect_timeout(Duration::from_secs(10));
    config.connect(NoTls)
}

/// Tables, columns, types, keys and indexes of the branch at `dsn`.
pub fn describe_schema(dsn: &str) -> Result<Vec<Table>, postgres::Error> {
    let mut client = connect_pinned(dsn, Duration::from_secs(MAX_TIMEOUT_SECS))?;
    let mut tables: BTreeMap<(String, String), Table> = BTreeMap::new();
    for row in client.query(
        &format!(
            "SELECT n.nspname, c.relname, c.relkind, c.reltuples::bigint, a.attname,
                    format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
                    pg_get_expr(d.adbin, d.adrelid)
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
              WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_SCHEMAS}
              ORDER BY 1, 2, a.attnum"
        ),
        &[],
    )? {
        let key: (String, String) = (row.get(0), row.get(1));
        let table = tables.entry(key.clone()).or_insert_with(|| Table {
            schema: key.0.clone(),
            name: key.1.clone(),
            kind: kind_name(row.get(2)),
            estimated_rows: row.get(3),
            columns: Vec::new(),
            primary_key: None,
            foreign_keys: Vec::new(),
            constraints: Vec::new(),
            indexes: Vec::new(),
        });
        table.columns.push(Column {
            name: row.get(4),
            data_type: row.get(5),
            nullable: row.get(6),
            default: row.get(7),
        });
    }
    for row in client.query(
        &format!(
            "SELECT n.nspname, c.relname, con.conname, con.contype, pg_get_constraintdef(con.oid)
               FROM pg_constraint con
               JOIN pg_class c ON c.oid = con.conrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE con.contype IN ('p', 'f', 'u', 'c') AND {USER_SCHEMAS}
              ORDER BY 1, 2, 3"
        ),
        &[],
    )? {
        let key: (String, String) = (row.get(0), row.get(1));
        let Some(table) = tables.get_mut(&key) else {
            continue;
        };
        let def = Definition {
            name: row.get(2),
            definition: row.get(4),
        };
        match row.get::<_, i8>(3) as u8 {
            b'p' => table.primary_key = Some(def),
            b'f' => table.foreign_keys.push(def),
            _ => table.constraints.push(def),
        }
    }
    for row in client.query(
        "SELECT schemaname::text, tablename::text, indexname::text, indexdef
           FROM pg_indexes
          WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
          ORDER BY 1, 2, 3",
        &[],
    )? {
        let key: (String, String) = (row.get(0), row.get(1));
        if let Some(table) = tables.get_mut(&key) {
            table.indexes.push(Definition {
                name: row.get(2),
                definition: row.get(3),
            });
        }
    }
    Ok(tables.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_queries_use_a_cursor() {
        assert!(cursor_friendly("SELECT * FROM t"));
        assert!(cursor_friendly("  with x as (select 1) select * from x;"));
        assert!(cursor_friendly("VALUES (1)"));
        assert!(!cursor_friendly("SELECT 1; SELECT 2"));
        assert!(!cursor_friendly("INSERT INTO t VALUES (1)"));
        assert!(!cursor_friendly("UPDATE t SET a = 1 RETURNING *"));
    }
}
