//! Rows of the policy proxy: agents (credentials with a policy) and the
//! append-only audit log.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::MetaError;

/// An agent: a credential of the proxy and what it may do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentRow {
    /// Name; also the user name the agent logs in with.
    pub name: String,
    /// The source it works on.
    pub source: String,
    /// `read-only`, `dry-run` or `branch`.
    pub policy: String,
    /// SCRAM-SHA-256 verifier of its secret (never the secret).
    #[serde(skip)]
    pub verifier: String,
    /// A named branch it uses (possibly shared with other agents).
    pub branch: Option<String>,
    /// Time to live of branches made for it, in seconds.
    pub ttl: Option<i64>,
    /// Most rows one statement may affect.
    pub max_rows: Option<i64>,
    /// Statement timeout, in milliseconds.
    pub statement_timeout_ms: Option<i64>,
    /// Most bytes its branch may stop sharing with its snapshot.
    pub max_storage: Option<i64>,
    /// Seconds without a session before its branch is stopped.
    pub idle_stop: Option<i64>,
    /// Each connection gets its own branch.
    pub per_session: bool,
    /// Per-session branches outlive their session.
    pub keep: bool,
    /// Branches are made from a new snapshot of the source.
    pub fresh: bool,
    /// Statement parameters are written to the audit log.
    pub audit_params: bool,
    /// Most proxy sessions at once (and its role's CONNECTION LIMIT).
    pub max_connections: i64,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Last secret rotation (Unix seconds).
    pub rotated_at: Option<i64>,
    /// Revocation time (Unix seconds); a revoked agent cannot log in.
    pub revoked_at: Option<i64>,
    /// Most branches it may hold through the API and MCP (None: no limit).
    pub max_branches: Option<i64>,
    /// Longest TTL it may ask for, in seconds (None: the default, 24 h).
    pub max_ttl: Option<i64>,
    /// The orchestrator agent it works for, which may use its branches.
    pub parent: Option<String>,
}

const AGENT_COLUMNS: &str = "name, source, policy, verifier, branch, ttl, max_rows, statement_timeout_ms, \
     max_storage, idle_stop, per_session, keep, fresh, audit_params, created_at, rotated_at, revoked_at, max_connections, \
     max_branches, max_ttl, parent";

impl AgentRow {
    fn from_row(r: &Row) -> Result<AgentRow, rusqlite::Error> {
        Ok(AgentRow {
            name: r.get(0)?,
            source: r.get(1)?,
            policy: r.get(2)?,
            verifier: r.get(3)?,
            branch: r.get(4)?,
            ttl: r.get(5)?,
            max_rows: r.get(6)?,
            statement_timeout_ms: r.get(7)?,
            max_storage: r.get(8)?,
            idle_stop: r.get(9)?,
            per_session: r.get(10)?,
            keep: r.get(11)?,
            fresh: r.get(12)?,
            audit_params: r.get(13)?,
            created_at: r.get(14)?,
            rotated_at: r.get(15)?,
            revoked_at: r.get(16)?,
            max_connections: r.get(17)?,
            max_branches: r.get(18)?,
            max_ttl: r.get(19)?,
            parent: r.get(20)?,
        })
    }

    /// The agent named `name`, revoked or not.
    pub fn get(conn: &Connection, name: &str) -> Result<Option<AgentRow>, MetaError> {
        Ok(conn
            .query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE name = ?1"),
                [name],
                AgentRow::from_row,
            )
            .optional()?)
    }

    /// Every agent, by name.
    pub fn list(conn: &Connection) -> Result<Vec<AgentRow>, MetaError> {
        let mut stmt =
            conn.prepare(&format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name"))?;
        let rows = stmt
            .query_map([], AgentRow::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Inserts a new agent.
    pub fn insert(&self, conn: &Connection) -> Result<(), MetaError> {
        conn.execute(
            &format!(
                "INSERT INTO agents ({AGENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
            ),
            params![
                self.name,
                self.source,
                self.policy,
                self.verifier,
                self.branch,
                self.ttl,
                self.max_rows,
                self.statement_timeout_ms,
                self.max_storage,
                self.idle_stop,
                self.per_session,
                self.keep,
                self.fresh,
                self.audit_params,
                self.created_at,
                self.rotated_at,
                self.revoked_at,
                self.max_connections,
                self.max_branches,
                self.max_ttl,
                self.parent,
            ],
        )?;
        Ok(())
    }

    /// Replaces the verifier of an agent's secret.
    pub fn set_verifier(
        conn: &Connection,
        name: &str,
        verifier: &str,
        at: i64,
    ) -> Result<(), MetaError> {
        conn.execute(
            "UPDATE agents SET verifier = ?2, rotated_at = ?3 WHERE name = ?1",
            params![name, verifier, at],
        )?;
        Ok(())
    }

    /// Marks an agent revoked.
    pub fn revoke(conn: &Connection, name: &str, at: i64) -> Result<(), MetaError> {
        conn.execute(
            "UPDATE agents SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, at],
        )?;
        Ok(())
    }

    /// Deletes an agent row (its audit records stay).
    pub fn delete(conn: &Connection, name: &str) -> Result<(), MetaError> {
        conn.execute("DELETE FROM agents WHERE name = ?1", [name])?;
        Ok(())
    }
}

/// One audit record: a statement the proxy passed on or refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditRow {
    /// Position in the log (0 until written).
    pub id: i64,
    /// When the statement arrived (Unix milliseconds).
    pub at_ms: i64,
    /// The agent.
    pub agent: String,
    /// The proxy session.
    pub session: String,
    /// The client's address.
    pub client: String,
    /// The branch or source the session reached.
    pub target: String,
    /// The agent's policy.
    pub policy: String,
    /// The statement text.
    pub statement: String,
    /// Its parameters as JSON, when the agent was made with `--audit-params`.
    pub params: Option<String>,
    /// How long it took, in microseconds.
    pub duration_us: i64,
    /// The command tag (`SELECT`, `INSERT`, ...).
    pub tag: Option<String>,
    /// Rows returned or affected.
    pub rows: Option<i64>,
    /// SQLSTATE of an error.
    pub sqlstate: Option<String>,
    /// The error message.
    pub message: Option<String>,
    /// The transaction status the client was told after it: `I` idle,
    /// `T` in a transaction, `E` in a failed one (`None` in old records).
    pub tx_status: Option<String>,
    /// Hash of the record before it.
    pub prev_hash: String,
    /// Hash of this record's fields and `prev_hash`.
    pub hash: String,
}

/// The `policy` of records of actions, not statements: an action's record
/// names the interface it came through (see `record_action` in the engine).
const INTERFACES: &str = "'api', 'mcp', 'cli', 'web'";

/// Which audit records [`AuditRow::query`] returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditFilter<'a> {
    /// Only this agent's (`agent:NAME`-less name, or `admin:NAME`).
    pub agent: Option<&'a str>,
    /// Only records about this branch or source.
    pub target: Option<&'a str>,
    /// Only records whose agent, target, statement or error contain this
    /// text (any case).
    pub contains: Option<&'a str>,
    /// Only statements through the proxy, not API, MCP, CLI or dashboard
    /// actions.
    pub statements_only: bool,
    /// Only records from this time on (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// At most this many (the newest).
    pub limit: Option<i64>,
}

const AUDIT_COLUMNS: &str = "id, at_ms, agent, session, client, target, policy, statement, params, \
     duration_us, tag, rows, sqlstate, message, prev_hash, hash, tx_status";

impl AuditRow {
    fn from_row(r: &Row) -> Result<AuditRow, rusqlite::Error> {
        Ok(AuditRow {
            id: r.get(0)?,
            at_ms: r.get(1)?,
            agent: r.get(2)?,
            session: r.get(3)?,
            client: r.get(4)?,
            target: r.get(5)?,
            policy: r.get(6)?,
            statement: r.get(7)?,
            params: r.get(8)?,
            duration_us: r.get(9)?,
            tag: r.get(10)?,
            rows: r.get(11)?,
            sqlstate: r.get(12)?,
            message: r.get(13)?,
            prev_hash: r.get(14)?,
            hash: r.get(15)?,
            tx_status: r.get(16)?,
        })
    }

    /// The id and hash of the last record, if any.
    pub fn last(conn: &Connection) -> Result<Option<(i64, String)>, MetaError> {
        Ok(conn
            .query_row(
                "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Appends a record whose `prev_hash` and `hash` are set; returns its id.
    pub fn append(&self, conn: &Connection) -> Result<i64, MetaError> {
        // Cached: the proxy appends thousands of records a second.
        conn.prepare_cached(
            "INSERT INTO audit (at_ms, agent, session, client, target, policy, statement, params, duration_us, \
             tag, rows, sqlstate, message, prev_hash, hash, tx_status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?
        .execute(params![
                self.at_ms,
                self.agent,
                self.session,
                self.client,
                self.target,
                self.policy,
                self.statement,
                self.params,
                self.duration_us,
                self.tag,
                self.rows,
                self.sqlstate,
                self.message,
                self.prev_hash,
                self.hash,
                self.tx_status,
        ])?;
        Ok(conn.last_insert_rowid())
    }

    /// Records that pass `filter`, oldest first, at most `filter.limit`
    /// (the newest ones).
    pub fn query(conn: &Connection, filter: &AuditFilter) -> Result<Vec<AuditRow>, MetaError> {
        // `instr` over lower(): a plain substring, no LIKE wildcards to escape.
        let mut stmt = conn.prepare(&format!(
            "SELECT * FROM (SELECT {AUDIT_COLUMNS} FROM audit
              WHERE (?1 IS NULL OR agent = ?1) AND (?2 IS NULL OR at_ms >= ?2)
                AND (?3 IS NULL OR target = ?3)
                AND (?4 IS NULL OR instr(lower(agent || ' ' || target || ' ' || statement || ' '
                                              || coalesce(message, '')), lower(?4)) > 0)
                AND (NOT ?5 OR policy NOT IN ({INTERFACES}))
              ORDER BY id DESC LIMIT ?6) ORDER BY id"
        ))?;
        let rows = stmt
            .query_map(
                params![
                    filter.agent,
                    filter.since_ms,
                    filter.target,
                    filter.contains.filter(|c| !c.is_empty()),
                    filter.statements_only,
                    filter.limit.unwrap_or(-1)
                ],
                AuditRow::from_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Calls `f` on every record in order, for verification.
    pub fn for_each(
        conn: &Connection,
        mut f: impl FnMut(AuditRow) -> bool,
    ) -> Result<(), MetaError> {
        let mut stmt = conn.prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id"))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            if !f(AuditRow::from_row(r)?) {
                break;
            }
        }
        Ok(())
    }
}
