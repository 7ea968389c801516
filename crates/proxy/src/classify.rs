//! What a statement does, read with PostgreSQL's own parser of the server's
//! major version (see [`crate::parser`]): the grammar the server uses, so
//! that no quoting, comment or dollar-quote trick reads differently here
//! and there.
//!
//! The parse tree is walked generically (as libpg_query's JSON), so every
//! node anywhere in a statement is seen: a data-modifying CTE, a function
//! call in a subquery, a row lock in a nested SELECT.

use serde_json::Value;

use crate::parser::{self, ClientEncoding};

/// Transaction control statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tx {
    /// `BEGIN` / `START TRANSACTION`; `Some(true)` for `READ WRITE`, `Some(false)` for `READ ONLY`.
    Begin {
        /// The access mode asked for.
        read_write: Option<bool>,
    },
    /// `COMMIT` / `END`.
    Commit {
        /// `AND CHAIN`.
        chain: bool,
    },
    /// `ROLLBACK` / `ABORT`.
    Rollback {
        /// `AND CHAIN`.
        chain: bool,
    },
    /// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`.
    Savepoint,
    /// `PREPARE TRANSACTION`.
    Prepare,
    /// `COMMIT PREPARED` / `ROLLBACK PREPARED`.
    Prepared,
}

/// Transaction modes a `BEGIN` or `SET TRANSACTION` asks for; where a
/// mode is given twice, the last one counts, as in PostgreSQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxMode {
    /// `ISOLATION LEVEL`, one of PostgreSQL's four spellings.
    pub isolation: Option<&'static str>,
    /// `READ WRITE` (`Some(true)`) or `READ ONLY` (`Some(false)`).
    pub read_write: Option<bool>,
    /// `DEFERRABLE` / `NOT DEFERRABLE`.
    pub deferrable: Option<bool>,
}

/// One statement of a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The command, e.g. `INSERT`, `CREATE INDEX`.
    pub command: String,
    /// Byte offset in the query string.
    pub location: usize,
    /// Byte length (0: to the end of the string).
    pub len: usize,
    /// Reads only: a SELECT (or VALUES, TABLE, SHOW, EXPLAIN without
    /// ANALYZE of one) without data-modifying parts, INTO or row locks.
    pub read_only: bool,
    /// Transaction control, if it is that.
    pub tx: Option<Tx>,
    /// Variables it sets (`SET`, `SET LOCAL`, `SET TRANSACTION`,
    /// `SET SESSION CHARACTERISTICS`; `transaction_read_only` stands for
    /// the READ WRITE/READ ONLY mode), lowercase. `RESET` goes back to
    /// the session's start values and is not listed.
    pub sets: Vec<String>,
    /// Whether a transaction mode it sets is READ WRITE.
    pub sets_read_write: bool,
    /// Functions it calls, lowercase, without schema.
    pub functions: Vec<String>,
    /// First arguments of `set_config` calls (`None`: not a constant).
    pub set_config: Vec<Option<String>>,
    /// Their second arguments, the values (`None`: not a constant).
    pub set_config_value: Vec<Option<String>>,
    /// Locks rows (`FOR UPDATE`, `FOR SHARE`, ...).
    pub locks_rows: bool,
    /// Cannot run inside a transaction block (VACUUM, CREATE DATABASE,
    /// CREATE INDEX CONCURRENTLY, ...).
    pub no_transaction: bool,
    /// COPY: `Some(true)` for FROM STDIN, `Some(false)` for TO STDOUT.
    pub copy_from: Option<bool>,
    /// COPY to or from a server file or program.
    pub copy_server_side: bool,
    /// ALTER SYSTEM, LOAD, CHECKPOINT and other server-wide statements.
    pub server_wide: bool,
    /// `DO` or `CALL`: code whose effects the parser cannot see.
    pub opaque_code: bool,
    /// The modes of a `BEGIN`/`START TRANSACTION` or `SET TRANSACTION`.
    pub tx_mode: Option<TxMode>,
    /// `SET TRANSACTION ...` (modes of the current transaction).
    pub set_transaction: bool,
    /// The prepared statement a `PREPARE`, `EXECUTE` or `DEALLOCATE` names.
    pub prepared_name: Option<String>,
    /// The value `SET name = value` gives (lowercase; the first, for a list).
    pub set_value: Option<String>,
}

/// Parses a UTF-8 query string into its statements.
pub fn classify(sql: &str) -> Result<Vec<Statement>, String> {
    classify_bytes(sql.as_bytes(), ClientEncoding::Utf8)
}

/// Parses a query string, the client's bytes in `encoding`, into its
/// statements (locations are byte offsets in those bytes).
pub fn classify_bytes(sql: &[u8], encoding: ClientEncoding) -> Result<Vec<Statement>, String> {
    let parsed = parser::parse(sql, encoding)?;
    let mut out = Vec::with_capacity(parsed.len());
    for raw in parsed {
        let (variant, body) = match raw.node {
            Value::Object(m) if m.len() == 1 => m.into_iter().next().expect("one entry"),
            _ => return Err("statement without a node".into()),
        };
        let mut s = Statement {
            command: command_of(&variant, &body),
            location: raw.location,
            len: raw.len,
            read_only: false,
            tx: None,
            sets: Vec::new(),
            sets_read_write: false,
            functions: Vec::new(),
            set_config: Vec::new(),
            set_config_value: Vec::new(),
            locks_rows: false,
            no_transaction: false,
            copy_from: None,
            copy_server_side: false,
            server_wide: false,
            opaque_code: false,
            tx_mode: None,
            set_transaction: false,
            prepared_name: None,
            set_value: None,
        };
        let mut walk = Walk::default();
        walk.entry(&variant, &body);
        s.functions = walk.functions;
        s.set_config = walk.set_config;
        s.set_config_value = walk.set_config_value;
        s.locks_rows = walk.locks_rows;
        let modifies = walk.modifies || walk.into;
        describe(&mut s, &variant, &body, modifies);
        out.push(s);
    }
    Ok(out)
}

/// What a walk over a whole statement found.
#[derive(Default)]
struct Walk {
    modifies: bool,
    into: bool,
    locks_rows: bool,
    functions: Vec<String>,
    set_config: Vec<Option<String>>,
    set_config_value: Vec<Option<String>>,
}

impl Walk {
    fn visit(&mut self, v: &Value) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, child)| self.entry(k, child)),
            Value::Array(a) => a.iter().for_each(|c| self.visit(c)),
            _ => {}
        }
    }

    /// One key of an object and its value.
    fn entry(&mut self, k: &str, child: &Value) {
        match k {
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => self.modifies = true,
            "LockingClause" => self.locks_rows = true,
            "intoClause" if !child.is_null() => self.into = true,
            "lockingClause" if child.as_array().is_some_and(|a| !a.is_empty()) => {
                self.locks_rows = true
            }
            "FuncCall" => self.func_call(child),
            _ => {}
        }
        self.visit(child);
    }

    fn func_call(&mut self, call: &Value) {
        let name = call
            .get("funcname")
            .and_then(Value::as_array)
            .and_then(|parts| parts.last())
            .and_then(string_node)
            .map(|s| s.to_lowercase());
        let Some(name) = name else { return };
        if name == "set_config" {
            let arg = |i: usize| {
                call.get("args")
                    .and_then(Value::as_array)
                    .and_then(|a| a.get(i))
                    .and_then(const_string)
                    .map(|s| s.to_lowercase())
            };
            self.set_config.push(arg(0));
            self.set_config_value.push(arg(1));
        }
        self.functions.push(name);
    }
}

/// The text of a `String` node.
fn string_node(v: &Value) -> Option<&str> {
    v.get("String")?.get("sval")?.as_str()
}

/// The value of a string constant (`A_Const`), also through a cast.
fn const_string(v: &Value) -> Option<&str> {
    if let Some(c) = v.get("A_Const") {
        return c.get("sval")?.get("sval")?.as_str();
    }
    if let Some(cast) = v.get("TypeCast") {
        return const_string(cast.get("arg")?);
    }
    None
}

/// A string or integer constant as text (libpg_query leaves out zeros).
fn const_text(v: &Value) -> Option<String> {
    if let Some(s) = const_string(v) {
        return Some(s.to_string());
    }
    let c = v.get("A_Const")?;
    let i = c.get("ival")?;
    Some(
        i.get("ival")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .to_string(),
    )
}

/// A boolean field (libpg_query leaves out false ones).
fn bool_flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// An enum field, by its C name (`TRANS_STMT_BEGIN`).
fn enum_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// DefElems of a list with their names.
fn def_elems(list: Option<&Value>) -> Vec<(String, Value)> {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|n| n.get("DefElem"))
                .map(|d| {
                    (
                        d.get("defname")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        d.get("arg").cloned().unwrap_or(Value::Null),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an `A_Const` integer/boolean option is set (`transaction_read_only`).
/// libpg_query leaves out zero and false values.
fn option_on(arg: &Value) -> Option<bool> {
    let c = arg.get("A_Const")?;
    if let Some(i) = c.get("ival") {
        return Some(i.get("ival").and_then(Value::as_i64).unwrap_or(0) != 0);
    }
    if let Some(b) = c.get("boolval") {
        return Some(b.get("boolval").and_then(Value::as_bool).unwrap_or(false));
    }
    None
}

/// Reads transaction mode options (`READ WRITE`, `ISOLATION LEVEL`, ...).
/// PostgreSQL applies them in order, so the last of each kind counts.
fn tx_mode(options: Option<&Value>) -> TxMode {
    let mut mode = TxMode::default();
    for (name, arg) in def_elems(options) {
        match name.as_str() {
            "transaction_read_only" => mode.read_write = option_on(&arg).map(|ro| !ro),
            "transaction_deferrable" => mode.deferrable = option_on(&arg),
            "transaction_isolation" => {
                mode.isolation = const_string(&arg).and_then(|level| {
                    [
                        "serializable",
                        "repeatable read",
                        "read committed",
                        "read uncommitted",
                    ]
                    .into_iter()
                    .find(|known| known.eq_ignore_ascii_case(level))
                });
            }
            _ => {}
        }
    }
    mode
}

fn describe(s: &mut Statement, variant: &str, body: &Value, modifies: bool) {
    match variant {
        "SelectStmt" => s.read_only = !modifies && !s.locks_rows,
        "VariableShowStmt" => s.read_only = true,
        "ExplainStmt" => {
            let analyze = def_elems(body.get("options"))
                .iter()
                .any(|(name, arg)| name == "analyze" && option_on(arg) != Some(false));
            // EXPLAIN without ANALYZE plans and runs nothing.
            s.read_only = !analyze || (!modifies && !s.locks_rows);
        }
        "TransactionStmt" => {
            let chain = bool_flag(body, "chain");
            let mode = tx_mode(body.get("options"));
            s.tx = Some(match enum_field(body, "kind") {
                "TRANS_STMT_BEGIN" | "TRANS_STMT_START" => {
                    let read_write = mode.read_write;
                    s.tx_mode = Some(mode);
                    Tx::Begin { read_write }
                }
                "TRANS_STMT_COMMIT" => Tx::Commit { chain },
                "TRANS_STMT_ROLLBACK" => Tx::Rollback { chain },
                "TRANS_STMT_PREPARE" => Tx::Prepare,
                "TRANS_STMT_COMMIT_PREPARED" | "TRANS_STMT_ROLLBACK_PREPARED" => Tx::Prepared,
                _ => Tx::Savepoint,
            });
            if let Some(Tx::Begin {
                read_write: Some(true),
            }) = s.tx
            {
                s.sets_read_write = true;
            }
            s.no_transaction = matches!(s.tx, Some(Tx::Prepared));
        }
        "VariableSetStmt" => {
            let kind = enum_field(body, "kind");
            let name = body
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase();
            match kind {
                "VAR_SET_MULTI" => {
                    // SET TRANSACTION ... / SET SESSION CHARACTERISTICS AS TRANSACTION ...
                    let mode = tx_mode(body.get("args"));
                    let rw = mode.read_write;
                    if name == "transaction" {
                        s.set_transaction = true;
                        s.tx_mode = Some(mode);
                    }
                    if rw.is_some() {
                        s.sets.push("transaction_read_only".into());
                        s.sets_read_write = rw == Some(true);
                    }
                    s.sets.push(name);
                }
                "VAR_RESET" | "VAR_RESET_ALL" => {}
                _ => {
                    s.set_value = body
                        .get("args")
                        .and_then(Value::as_array)
                        .and_then(|a| a.first())
                        .and_then(const_text)
                        .map(|v| v.to_lowercase())
                        .or_else(|| (kind == "VAR_SET_DEFAULT").then(|| "default".into()));
                    s.sets.push(name)
                }
            }
        }
        "DeclareCursorStmt" => s.read_only = !modifies && !s.locks_rows,
        "FetchStmt" | "ClosePortalStmt" | "ListenStmt" | "UnlistenStmt" => s.read_only = true,
        // Read-only PREPARE and EXECUTE are judged by the statement prepared.
        "ExecuteStmt" | "DeallocateStmt" => {
            s.prepared_name = body.get("name").and_then(Value::as_str).map(str::to_string);
            s.read_only = variant == "DeallocateStmt";
        }
        "PrepareStmt" => {
            s.prepared_name = body.get("name").and_then(Value::as_str).map(str::to_string);
            s.read_only = !modifies
                && !s.locks_rows
                && body
                    .get("query")
                    .is_some_and(|q| q.get("SelectStmt").is_some())
        }
        "CopyStmt" => {
            let server_side = bool_flag(body, "is_program")
                || body
                    .get("filename")
                    .and_then(Value::as_str)
                    .is_some_and(|f| !f.is_empty());
            s.copy_server_side = server_side;
            let from = bool_flag(body, "is_from");
            s.copy_from = (!server_side).then_some(from);
            s.read_only = !from && !modifies && !server_side;
        }
        "VacuumStmt" => s.no_transaction = bool_flag(body, "is_vacuumcmd"),
        "IndexStmt" => s.no_transaction = bool_flag(body, "concurrent"),
        "DropStmt" => s.no_transaction = bool_flag(body, "concurrent"),
        "ReindexStmt" => {
            s.no_transaction = def_elems(body.get("params"))
                .iter()
                .any(|(n, _)| n == "concurrently")
                || matches!(
                    enum_field(body, "kind"),
                    "REINDEX_OBJECT_SYSTEM" | "REINDEX_OBJECT_DATABASE"
                );
        }
        "CreatedbStmt"
        | "DropdbStmt"
        | "CreateTableSpaceStmt"
        | "DropTableSpaceStmt"
        | "AlterSystemStmt"
        | "CreateSubscriptionStmt"
        | "DropSubscriptionStmt" => {
            s.no_transaction = true;
            s.server_wide = true;
        }
        "AlterDatabaseStmt" => {
            // ALTER DATABASE ... SET TABLESPACE moves files outside any transaction.
            s.no_transaction = def_elems(body.get("options"))
                .iter()
                .any(|(n, _)| n == "tablespace");
        }
        "ClusterStmt" => s.no_transaction = body.get("relation").is_none_or(Value::is_null),
        "DiscardStmt" => s.no_transaction = enum_field(body, "target") == "DISCARD_ALL",
        "LoadStmt" | "CheckPointStmt" | "AlterSubscriptionStmt" | "CreatePublicationStmt" => {
            s.server_wide = true
        }
        "DoStmt" | "CallStmt" => s.opaque_code = true,
        _ => {}
    }
}

/// A command name for the audit log and errors, e.g. `CREATE INDEX`.
fn command_of(variant: &str, body: &Value) -> String {
    let fixed = match variant {
        "SelectStmt" => "SELECT",
        "InsertStmt" => "INSERT",
        "UpdateStmt" => "UPDATE",
        "DeleteStmt" => "DELETE",
        "MergeStmt" => "MERGE",
        "CopyStmt" => "COPY",
        "VariableSetStmt" => {
            if matches!(enum_field(body, "kind"), "VAR_RESET" | "VAR_RESET_ALL") {
                "RESET"
            } else {
                "SET"
            }
        }
        "VariableShowStmt" => "SHOW",
        "TransactionStmt" => match enum_field(body, "kind") {
            "TRANS_STMT_BEGIN" => "BEGIN",
            "TRANS_STMT_START" => "START TRANSACTION",
            "TRANS_STMT_COMMIT" => "COMMIT",
            "TRANS_STMT_ROLLBACK" => "ROLLBACK",
            "TRANS_STMT_SAVEPOINT" => "SAVEPOINT",
            "TRANS_STMT_RELEASE" => "RELEASE",
            "TRANS_STMT_ROLLBACK_TO" => "ROLLBACK TO SAVEPOINT",
            "TRANS_STMT_PREPARE" => "PREPARE TRANSACTION",
            "TRANS_STMT_COMMIT_PREPARED" => "COMMIT PREPARED",
            _ => "ROLLBACK PREPARED",
        },
        "IndexStmt" => "CREATE INDEX",
        "CreateStmt" => "CREATE TABLE",
        "CreateTableAsStmt" => "CREATE TABLE AS",
        "DropStmt" => "DROP",
        "TruncateStmt" => "TRUNCATE",
        "VacuumStmt" => {
            if bool_flag(body, "is_vacuumcmd") {
                "VACUUM"
            } else {
                "ANALYZE"
            }
        }
        "CreatedbStmt" => "CREATE DATABASE",
        "DropdbStmt" => "DROP DATABASE",
        "AlterSystemStmt" => "ALTER SYSTEM",
        "DoStmt" => "DO",
        "CallStmt" => "CALL",
        "ExplainStmt" => "EXPLAIN",
        "PrepareStmt" => "PREPARE",
        "ExecuteStmt" => "EXECUTE",
        "DeallocateStmt" => "DEALLOCATE",
        "DeclareCursorStmt" => "DECLARE CURSOR",
        "LockStmt" => "LOCK",
        "GrantStmt" => "GRANT",
        "GrantRoleStmt" => "GRANT ROLE",
        "CreateRoleStmt" => "CREATE ROLE",
        "AlterRoleStmt" => "ALTER ROLE",
        "ListenStmt" => "LISTEN",
        "NotifyStmt" => "NOTIFY",
        "UnlistenStmt" => "UNLISTEN",
        "ReindexStmt" => "REINDEX",
        "ClusterStmt" => "CLUSTER",
        "CheckPointStmt" => "CHECKPOINT",
        "DiscardStmt" => "DISCARD",
        "LoadStmt" => "LOAD",
        "CreateFunctionStmt" => "CREATE FUNCTION",
        "AlterTableStmt" => "ALTER TABLE",
        "CreateExtensionStmt" => "CREATE EXTENSION",
        "RefreshMatViewStmt" => "REFRESH MATERIALIZED VIEW",
        "CreateSchemaStmt" => "CREATE SCHEMA",
        "ViewStmt" => "CREATE VIEW",
        "CreateSeqStmt" => "CREATE SEQUENCE",
        "AlterSeqStmt" => "ALTER SEQUENCE",
        "CommentStmt" => "COMMENT",
        _ => "",
    };
    if !fixed.is_empty() {
        return fixed.to_string();
    }
    // `AlterDatabaseSetStmt` -> `ALTER DATABASE SET`, good enough for a log.
    let name = variant.strip_suffix("Stmt").unwrap_or(variant);
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
