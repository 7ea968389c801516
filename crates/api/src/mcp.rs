//! The MCP server: tools for agents to fork a database, inspect and query
//! their branch, and throw it away. Served over stdio (`pgfork mcp`) and
//! streamable HTTP (`/mcp` in `pgfork serve`), on the official Rust SDK.
//!
//! Engine failures are tool errors (`isError: true`) whose text is the
//! engine's JSON error, so that the agent reads what to do next; protocol
//! errors are left for requests the server cannot route at all.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use pgfork_engine::Actor;
use pgfork_engine::EngineError;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::body::MAX_DIFF_ROWS;
use crate::error::ApiError;
use crate::query::{self, DEFAULT_ROWS, MAX_ROWS_LIMIT, MAX_TIMEOUT_SECS, QueryError};
use crate::state::{Scoped, Shared};

/// Parameters of `create_branch`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateBranchParams {
    /// Name of the new branch: lowercase letters, digits, '-' and '_', starting with a letter, at most 48 characters. Sources and branches share one namespace.
    pub name: String,
    /// What to clone: a source name (its latest snapshot), a snapshot id such as "shop@3", or an existing branch name (snapshotted now).
    pub from: String,
    /// Time to live, such as "30m", "2h" or "7d" (at most "10y"); the branch is deleted after it. Omit for no expiry.
    #[serde(default)]
    pub ttl: Option<String>,
    /// Labels to attach, such as {"agent": "a1"}: at most 32; keys like "team" or "example.com/team" (a name of 1-63 letters, digits, '-', '_', '.', after an optional DNS-subdomain prefix and '/'); values at most 256 characters, no control characters.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Parameters of `rehearse_migration`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RehearseParams {
    /// What to try it on a copy of: a source name (its newest snapshot), a snapshot id such as "shop@3", or a branch.
    pub from: String,
    /// The migration: SQL statements, run one by one as the application role; BEGIN/COMMIT in it are honoured.
    pub sql: String,
    /// Snapshot the source first, so the rehearsal sees its current data.
    #[serde(default)]
    pub fresh: bool,
    /// A lock blocking writes (or reads) on an existing table held longer than this many milliseconds makes the verdict "blocked".
    #[serde(default)]
    pub max_lock_ms: Option<u64>,
}

/// Parameters of `request_promotion`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RequestPromotionParams {
    /// The branch whose changes should reach the source (one of yours).
    pub branch: String,
    /// What the change is for, for the person who decides.
    #[serde(default)]
    pub note: Option<String>,
    /// The migration SQL you ran on the branch, if any: pgfork rehearses it on a fresh copy of the branch's base and attaches the report (locks, rewrites, errors, lints) for the reviewer.
    #[serde(default)]
    pub migration: Option<String>,
}

/// Parameters of `list_branches`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct ListBranchesParams {
    /// Only branches carrying all of these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Only branches this agent made (an orchestrator lists its workers' branches).
    #[serde(default)]
    pub agent: Option<String>,
}

/// Parameters of `share_branch`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ShareBranchParams {
    /// Branch to share (one you made).
    pub branch: String,
    /// The agent to share it with.
    pub agent: String,
    /// The member may only read (default: read and write).
    #[serde(default)]
    pub read_only: bool,
}

/// Parameters of `unshare_branch`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct UnshareBranchParams {
    /// Branch shared before.
    pub branch: String,
    /// The member agent to remove.
    pub agent: String,
}

/// A branch named in a tool call.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct BranchParams {
    /// Branch name (see list_branches).
    pub branch: String,
}

/// Parameters of `delete_branch`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DeleteBranchParams {
    /// Branch name.
    pub branch: String,
    /// Also delete the branches that were made from this one (otherwise such a delete is refused).
    #[serde(default)]
    pub force: bool,
}

/// Parameters of `run_sql`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunSqlParams {
    /// Branch to run on (never a source).
    pub branch: String,
    /// SQL text: one statement, or several separated by ';' (run in one implicit transaction unless they contain BEGIN/COMMIT).
    pub sql: String,
    /// Most rows to return (default 100, at most 1000); the result says when rows were cut.
    #[serde(default)]
    pub max_rows: Option<usize>,
    /// Time limit in seconds, 1 to 60 (default 60): past it the SQL is canceled and the call fails with code "canceled".
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// Parameters of `diff_branch`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DiffBranchParams {
    /// Branch whose changes to show.
    pub branch: String,
    /// Compare against this branch or snapshot id of the same source instead of the branch's base snapshot.
    #[serde(default)]
    pub against: Option<String>,
    /// Changed rows listed per table (default 20, at most 10000); the counts are always complete.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The MCP server of one pgfork home.
#[derive(Clone)]
pub struct PgforkMcp {
    shared: Shared,
    /// Who a stdio server acts for (`pgfork mcp`, `pgfork mcp --agent`).
    /// Over HTTP each request's token decides instead.
    stdio_actor: Option<Actor>,
    tool_router: ToolRouter<Self>,
}

fn failed(e: ApiError) -> CallToolResult {
    CallToolResult::structured_error(json!({ "error": { "code": e.code, "message": e.message } }))
}

fn done(value: Value) -> CallToolResult {
    CallToolResult::structured(value)
}

/// What an agent needs to know of a branch.
fn branch_summary(b: &pgfork_engine::BranchInfo, dsn: Option<String>) -> Value {
    let mut v = json!({
        "name": b.name,
        "status": b.status,
        "source": b.source,
        "snapshot": b.snapshot,
        "parent_branch": b.parent_branch,
        "port": b.port,
        "database": b.database,
        "user": b.user,
        "created_at": b.created_at,
        "expires_at": b.expires_at,
        "protected": b.protected,
        "labels": b.labels,
    });
    if let Some(dsn) = dsn {
        v["dsn"] = json!(dsn);
    }
    if let Some(error) = &b.error {
        v["error"] = json!(error);
    }
    v
}

/// An argument outside what a tool takes.
fn bad_argument(message: String) -> CallToolResult {
    failed(ApiError::from(EngineError::InvalidArgument(message)))
}

/// What a failed `run_sql` tells the agent.
fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::Sql(e) => sql_error(e),
        e @ QueryError::Canceled(_) => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "canceled", e.to_string())
        }
    }
}

#[tool_router]
impl PgforkMcp {
    /// A server for the home of `shared`, served over HTTP: each call acts
    /// for the identity of the token that came with it.
    pub fn new(shared: Shared) -> PgforkMcp {
        PgforkMcp {
            shared,
            stdio_actor: None,
            tool_router: Self::tool_router(),
        }
    }

    /// A server on stdio acting for `actor` throughout.
    pub fn on_stdio(shared: Shared, actor: Actor) -> PgforkMcp {
        PgforkMcp {
            stdio_actor: Some(actor),
            ..PgforkMcp::new(shared)
        }
    }

    /// The state and identity a call acts with: over HTTP, the identity
    /// of the request's token (put there by the token check).
    fn scoped(&self, ctx: &RequestContext<RoleServer>) -> Result<Scoped, CallToolResult> {
        let over_http = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Actor>().cloned());
        match over_http.or_else(|| self.stdio_actor.clone()) {
            Some(actor) => Ok(Scoped {
                shared: self.shared.clone(),
                actor,
            }),
            None => Err(failed(ApiError::unauthorized())),
        }
    }

    /// The DSN of a branch, started first if it was stopped; either way
    /// the engine records the call as a use of the branch.
    async fn awake_dsn(&self, s: &Scoped, branch: String) -> Result<String, ApiError> {
        let info = s.start_branch(branch).await?;
        Ok(info.dsn_with_password().unwrap_or_default())
    }

    #[tool(
        description = "List the sources: the databases branches are made from. Returns {\"sources\": [{name, mode (local/physical/logical), status, database, snapshots, branches}]}. Use a source name as `from` in create_branch."
    )]
    async fn list_sources(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = match self.scoped(&ctx) {
            Ok(s) => s,
            Err(e) => return Ok(e),
        };
        Ok(match s.engine(|e| e.source_list()).await {
            Ok(list) => done(json!({ "sources": list.iter().map(|s| json!({
                "name": s.name, "mode": s.mode, "status": s.status, "database": s.database,
                "snapshots": s.snapshots, "branches": s.branches,
            })).collect::<Vec<_>>() })),
            Err(e) => failed(e),
        })
    }

    #[tool(
        description = "Create a branch: a private, writable, copy-on-write copy of a source's database (or of a snapshot or another branch), running as its own PostgreSQL server, ready in about a second whatever the data size. Returns the branch with `dsn`, a postgres:// connection string (with password) for a non-superuser role. Changes on the branch never reach the source. Errors: name_taken, unknown_origin, quota_exceeded, disk_floor."
    )]
    async fn create_branch(
        &self,
        Parameters(p): Parameters<CreateBranchParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = match self.scoped(&ctx) {
            Ok(s) => s,
            Err(e) => return Ok(e),
        };
        let ttl = match p
            .ttl
            .as_deref()
            .map(pgfork_engine::names::parse_ttl)
            .transpose()
        {
            Ok(t) => t,
            Err(e) => return Ok(failed(e.into())),
        };
        let req = pgfork_engine::BranchCreate {
            name: p.name,
            from: p.from,
            ttl,
            labels: p.labels,
            ..Default::default()
        };
        Ok(match s.create_branch(req).await {
            Ok(info) => done(branch_summary(&info, info.dsn_with_password())),
            Err(e) => failed(e),
        })
    }

    #[tool(
        description = "Ask for your branch's changes to be promoted to its source. You cannot promote yourself: this files a request that a person approves (pgfork then applies the changes, after checking them against the source as it is) or rejects with a reason. Returns the request {id, status: \"open\", summary (what the branch changed: schema objects and per-table row counts)}; the branch does not expire while the request is open. Errors: unknown_branch, wrong_state (a request for it is open already)."
    )]
    async fn request_promotion(
        &self,
        Parameters(p): Parameters<RequestPromotionParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = match self.scoped(&ctx) {
            Ok(s) => s,
            Err(e) => return Ok(e),
        };
        Ok(
            match s
                .engine(move |e| {
                    let migration = p.migration.as_deref().map(|sql| ("migration.sql", sql));
                    e.promotion_request(&p.branch, p.note.as_deref(), migration)
                })
                .await
            {
                Ok(row) => done(serde_json::to_value(&row).unwrap_or_default()),
                Err(e) => failed(e),
            },
        )
    }

    #[tool(
        description = "Rehearse a migration before running it for real: pgfork makes a throwaway branch of `from`, runs the SQL statement by statement, and reports for each whether it applied (or the server's error with SQLSTATE and line/column), its wall time, rows, the locks it took with how long blocking ones were held (what production readers/writers would wait), and which tables or indexes it rewrote; plus squawk lint findings by line, the schema diff, and a verdict: \"applies\", \"fails\" or \"blocked\" (a lint error or a lock over max_lock_ms). The branch is deleted afterwards."
    )]
    async fn rehearse_migration(
        &self,
        Parameters(p): Parameters<RehearseParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = match self.scoped(&ctx) {
            Ok(s) => s,
            Err(e) => return Ok(e),
        };
        let req = pgfork_engine::RehearseRequest {
            from: p.from,
            file: "migration.sql".into(),
            sql: p.sql,
            fresh: p.fresh,
            keep: false,
            fail_on: pgfork_engine::Severity::Error,
            max_lock_ms: p.max_lock_ms,
        };
        Ok(match s.engine(move |e| e.rehearse(&req)).await {
            Ok(report) => done(serde_json::to_value(&report).unwrap_or_default()),
            Err(e) => failed(e),
        })
    }

    #[tool(
        description = "List branches, optionally only those with all the given labels. Returns {\"branches\": [{name, status (running/stopped/crashed), source, snapshot, port, database, user, created_at, expires_at, protected, labels, error}]}; passwords are not included; `error` appears only on a branch whose stored record cannot be shown whole, saying what to do."
    )]
    async fn list_branches(
        &self,
        Parameters(p): Parameters<ListBranchesParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = match self.scoped(&ctx) {
            Ok(s) => s,
            Err(e) => return Ok(e),
        };
        let listed = s
            .engine(move |e| e.branch_list_by(&p.labels, p.agent.as_deref()))
            .await;
        Ok(match listed {
            Ok(list) => done(json!({
                "branches": list.iter().map(|b| branch_summary(b, None)).collect::<Vec<_>>()
            })),
            Err(e) => failed(e),
        })
    }

    #[tool(
        description = "Describe a branch's schema: every table, view and materialized view outside the system schemas, with columns (name, type, nullable, default), primary key, foreign keys, unique/check constraints, indexes and the planner's row estimate. Returns {\"tables\": [...]}. Starts the branch if it was stopped."
    )]
    async fn describe_schema(
        &self,
        Parameters(p): Parameters<BranchParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = match self.scoped(&ctx) {
            Ok(s) => s,
            Err(e) => return Ok(e),
        };
        let dsn = match self.awake_dsn(&s, p.branch).await {
            Ok(d) => d,
            Err(e) => return Ok(failed(e)),
        };
        let result = tokio::task::spawn_blocking(move || query::describe_schema(&dsn)).await;
        Ok(match result {
            Ok(Ok(tables)) => done(json!({ "tables": tables })),
            Ok(Err(e)) => failed(sql_error(e)),
            Err(e) => failed(ApiError::internal(e.to_string())),
        })
    }

    #[tool(
        description = "Run SQL on a branch (never on a source), as the branch's own non-superuser role, within a time limit (timeout_seconds, default and most 60): past it pgfork cancels the SQL from outside its session and the call fails with code \"canceled\". Returns {columns, rows (text values, null for NULL), truncated, statements (row counts per statement), note}: the rows of the last statement that returned any, at most max_rows (default 100, at most 1000); `note` says when rows were cut. Starts the branch if it was stopped."
    )]
    async fn run_sql(
        &self,
        Parameters(p): Parameters<RunSqlParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = match self.scoped(&ctx) {
            Ok(s) => s,
            Err(e) => return Ok(e),
        };
        let max_rows = p.max_rows.unwrap_or(DEFAULT_ROWS).clamp(1, MAX_ROWS_LIMIT);
        let secs = p.timeout_seconds.unwrap_or(MAX_TIMEOUT_SECS);
        if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
            return Ok(bad_argument(format!(
                "timeout_seconds must be 1 to {MAX_TIMEOUT_SECS}, not {secs}; leave it out for {MAX_TIMEOUT_SECS}"
            )));
        }
        let limit = Duration::from_secs(secs);
        let dsn = match self.awake_dsn(&s, p.branch.clone()).await {
            Ok(d) => d,
            Err(e) => return Ok(failed(e)),
        };
        let sql = p.sql;
        let work = tokio::task::spawn_blocking(move || query::run_sql(&dsn, &sql, max_rows, limit));
        // The worker cancels and then ends the session itself; this only
        // keeps the agent's answer bounded should even that hang.
        let result = tokio::time::timeout(limit + 3 * query::GRACE, work).await;
        // A long query was a use until it ended: idle time counts from here.
        self.shared.touch(&s.actor, p.branch).await;
        Ok(match result {
            Ok(Ok(Ok(r))) => done(serde_json::to_value(r).expect("serialisable")),
            Ok(Ok(Err(e))) => failed(query_error(e)),
            Ok(Err(e)) => failed(ApiError::internal(e.to_string())),
            Err(_) => failed(query_error(QueryError::Canceled(secs))),
        })
    }

    #[tool(
        description = "Show what a branch changed against the snapshot it was made from (or against another branch or snapshot of the same source): per table, the rows inserted, updated and deleted (counts complete, up to `limit` rows of each listed), and schema changes where the engine reports them. Reads only the blocks the branch no longer shares, so it is fast on large databases."
    )]
    async fn diff_branch(
        &self,
        Parameters(p): Parameters<DiffBranchParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = match self.scoped(&ctx) {
            Ok(s) => s,
            Err(e) => return Ok(e),
        };
        let limit = p.limit.unwrap_or(20);
        if limit > MAX_DIFF_ROWS {
            return Ok(bad_argument(format!(
                "limit must be at most {MAX_DIFF_ROWS}, not {limit}; the counts are complete whatever it is"
            )));
        }
        self.shared.touch(&s.actor, p.branch.clone()).await;
        let req = pgfork_engine::DiffRequest {
            target: p.branch,
            against: p.against,
            schema: true,
            data: true,
            limit,
            full: false,
            sql: false,
        };
        Ok(match s.engine(move |e| e.diff(&req)).await {
            Ok(report) => done(serde_json::to_value(report).expect("serialisable")),
            Err(e) => failed(e),
        })
    }

    #[tool(
        description = "Reset a branch: throw away every change made on it and go back to the snapshot it was made from. Name, port and password stay the same, so existing connection strings keep working (open connections are closed). Returns the branch."
    )]
    async fn reset_branch(
        &self,
        Parameters(p): Parameters<BranchParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = match self.scoped(&ctx) {
            Ok(s) => s,
            Err(e) => return Ok(e),
        };
        // The engine records the reset as a use of the branch.
        let name = p.branch;
        Ok(match s.engine(move |e| e.branch_reset(&name)).await {
            Ok(info) => done(branch_summary(&info, None)),
            Err(e) => failed(e),
        })
    }

    #[tool(
        description = "Delete a branch and its data for good. Refused (has_dependents) while other branches were made from it, unless force is true, which deletes those too. Returns {\"deleted\": [...]}."
    )]
    async fn delete_branch(
        &self,
        Parameters(p): Parameters<DeleteBranchParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = match self.scoped(&ctx) {
            Ok(s) => s,
            Err(e) => return Ok(e),
        };
        let (name, force) = (p.branch, p.force);
        Ok(
            match s.engine(move |e| e.branch_delete(&name, force)).await {
                Ok(deleted) => done(json!({ "deleted": deleted })),
                Err(e) => failed(e),
            },
        )
    }

    #[tool(
        description = "Share a branch you made with another agent: it then lists the branch and gets a postgres:// DSN of its own (a role of its own on the branch; read_only: it may only read). Returns {branch, agent, read_only, role}. Errors: unknown_branch, forbidden (only the branch's maker shares it), invalid_argument (no such agent)."
    )]
    async fn share_branch(
        &self,
        Parameters(p): Parameters<ShareBranchParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = match self.scoped(&ctx) {
            Ok(s) => s,
            Err(e) => return Ok(e),
        };
        let shared = s
            .engine(move |e| e.branch_share(&p.branch, &p.agent, p.read_only))
            .await;
        Ok(match shared {
            Ok(member) => done(serde_json::to_value(member).expect("serialisable")),
            Err(e) => failed(e),
        })
    }

    #[tool(
        description = "Stop sharing a branch you made with an agent: its role on the branch is dropped and its open sessions end at once. Returns {branch, unshared}."
    )]
    async fn unshare_branch(
        &self,
        Parameters(p): Parameters<UnshareBranchParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = match self.scoped(&ctx) {
            Ok(s) => s,
            Err(e) => return Ok(e),
        };
        let (branch, agent) = (p.branch.clone(), p.agent.clone());
        let unshared = s
            .engine(move |e| e.branch_unshare(&p.branch, &p.agent))
            .await;
        Ok(match unshared {
            Ok(()) => done(json!({ "branch": branch, "unshared": agent })),
            Err(e) => failed(e),
        })
    }
}

/// A PostgreSQL error with the server's own message, which `Display`
/// leaves out.
fn sql_error(e: postgres::Error) -> ApiError {
    let message = match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    };
    ApiError::new(StatusCode::BAD_REQUEST, "sql_error", message)
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PgforkMcp {
    /// Runs a tool and audits the call: who, which tool, which branch or
    /// source, and the result.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let began = std::time::Instant::now();
        let actor = self.scoped(&context).ok().map(|s| s.actor);
        let tool = request.name.to_string();
        let target = request
            .arguments
            .as_ref()
            .and_then(|a| ["branch", "name", "from"].iter().find_map(|k| a.get(*k)))
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .to_string();
        let tcc = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        let response = self.tool_router.call(tcc).await;
        let Some(actor) = actor else {
            return response;
        };
        let (result, error) = match &response {
            Ok(rmcp::model::CallToolResponse::Complete(r)) if r.is_error == Some(true) => {
                let e = r.structured_content.as_ref().map(|v| &v["error"]).map(|e| {
                    (
                        e["code"].as_str().unwrap_or("").to_string(),
                        e["message"].as_str().unwrap_or("").to_string(),
                    )
                });
                ("error", e)
            }
            Ok(_) => ("ok", None),
            Err(e) => (
                "error",
                Some(("protocol".to_string(), e.message.to_string())),
            ),
        };
        let done = crate::audit::Done {
            actor,
            interface: "mcp",
            client: if self.stdio_actor.is_some() {
                "stdio"
            } else {
                "http"
            },
            action: format!("tool {tool}"),
            target,
            result: result.into(),
            error,
            began,
        };
        crate::audit::record(&self.shared, done).await;
        response
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("pgfork", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "pgfork gives you your own writable copy (a branch) of a PostgreSQL database in about a second. \
                 Typical use: list_sources, create_branch (keep the dsn), describe_schema, run_sql as often as needed, \
                 reset_branch to start over, delete_branch when done. Branches are isolated: nothing you do reaches \
                 the source.",
            )
    }
}
