//! `/v1/agents` and `/v1/audit`: credentials of the policy proxy and its
//! audit log, as `pgfork agent` and `pgfork audit` show them.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use pgfork_engine::EngineError;
use pgfork_engine::agents::{
    AgentCreate, AgentInfo, AgentSecret, DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS, Policy,
};
use pgfork_engine::audit::{AuditQuery, VerifyReport};
use pgfork_engine::names::{self, Limit};
use pgfork_pool::meta::AuditRow;
use serde::Deserialize;

use crate::body::{JsonBody, number_in, query_pairs};
use crate::error::ApiError;
use crate::state::Scoped;

/// Body of `POST /v1/agents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Agent name (the user name of its connection string).
    pub name: String,
    /// Source it works on.
    pub source: String,
    /// `read-only`, `dry-run` or `branch`.
    pub policy: String,
    /// A named branch (branch policy).
    pub branch: Option<String>,
    /// Each connection gets its own branch.
    #[serde(default)]
    pub per_session: bool,
    /// Per-session branches outlive their session.
    #[serde(default)]
    pub keep: bool,
    /// Branches from a new snapshot.
    #[serde(default)]
    pub fresh: bool,
    /// TTL of its branches (`4h`).
    pub ttl: Option<String>,
    /// Most rows one statement may affect.
    pub max_rows: Option<u64>,
    /// Statement timeout (`30s`).
    pub statement_timeout: Option<String>,
    /// Most storage of its branch, in bytes.
    pub max_storage: Option<u64>,
    /// Stop its branch after this long without a session (`10m`, `0`: never).
    pub idle_stop: Option<String>,
    /// Audit statement parameters.
    #[serde(default)]
    pub audit_params: bool,
    /// Most proxy sessions at once (1-1000, default 10).
    pub max_connections: Option<u64>,
    /// Most branches it may hold through the API and MCP.
    pub max_branches: Option<u32>,
    /// Longest TTL it may give its branches (`24h`, the default).
    pub max_ttl: Option<String>,
    /// The orchestrator agent it works for.
    pub parent: Option<String>,
}

/// A duration field within `limit`; absent or `0` is none.
fn duration(field: &str, text: Option<&str>, limit: Limit) -> Result<Option<Duration>, ApiError> {
    match text.map(str::trim) {
        None | Some("0") => Ok(None),
        Some(t) => names::parse_duration(field, t, limit)
            .map(Some)
            .map_err(|e| ApiError::field(field, e)),
    }
}

/// Most audit records one request returns.
const MAX_AUDIT_ROWS: u64 = 100_000;

/// `GET /v1/agents`.
pub async fn list(s: Scoped) -> Result<Json<Vec<AgentInfo>>, ApiError> {
    Ok(Json(s.engine(|e| e.agent_list()).await?))
}

/// `POST /v1/agents`: the response carries the secret and DSN, once.
pub async fn create(
    s: Scoped,
    JsonBody(req): JsonBody<CreateAgent>,
) -> Result<(StatusCode, Json<AgentSecret>), ApiError> {
    let policy = Policy::parse(&req.policy)
        .map_err(|e| ApiError::bad_request(format!("invalid field 'policy': {e}")))?;
    names::validate(&req.name).map_err(|e| ApiError::field("name", e))?;
    let ttl = match req.ttl.as_deref() {
        Some(t) => Some(names::parse_ttl(t).map_err(|e| ApiError::field("ttl", e))?),
        None => None,
    };
    let idle = if policy == Policy::Branch {
        duration(
            "idle_stop",
            Some(req.idle_stop.as_deref().unwrap_or("10m")),
            names::IDLE,
        )?
    } else {
        None
    };
    let statement_timeout = duration(
        "statement_timeout",
        req.statement_timeout.as_deref(),
        names::STATEMENT_TIMEOUT,
    )?;
    let max_connections = match req.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(n) if (1..=u64::from(MAX_CONNECTIONS)).contains(&n) => n as u32,
        Some(n) => {
            return Err(ApiError::field(
                "max_connections",
                EngineError::InvalidArgument(format!(
                    "the most proxy sessions the agent holds at once is 1 to {MAX_CONNECTIONS}, not {n}"
                )),
            ));
        }
    };
    let create = AgentCreate {
        name: req.name,
        source: req.source,
        policy,
        branch: req.branch,
        ttl,
        max_rows: req.max_rows,
        statement_timeout,
        max_storage: req.max_storage,
        idle_stop: idle,
        per_session: req.per_session,
        keep: req.keep,
        fresh: req.fresh,
        audit_params: req.audit_params,
        max_connections,
        max_branches: req.max_branches,
        max_ttl: duration("max_ttl", req.max_ttl.as_deref(), names::TTL)?,
        parent: req.parent,
    };
    let created = s.engine(move |e| e.agent_create(&create)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/agents/{name}`.
pub async fn info(s: Scoped, Path(name): Path<String>) -> Result<Json<AgentInfo>, ApiError> {
    Ok(Json(s.engine(move |e| e.agent_info(&name)).await?))
}

/// `POST /v1/agents/{name}/rotate`: a new secret, returned once.
pub async fn rotate(s: Scoped, Path(name): Path<String>) -> Result<Json<AgentSecret>, ApiError> {
    Ok(Json(s.engine(move |e| e.agent_rotate(&name)).await?))
}

/// `POST /v1/agents/{name}/revoke`: no new logins; a running proxy ends its sessions.
pub async fn revoke(s: Scoped, Path(name): Path<String>) -> Result<Json<AgentInfo>, ApiError> {
    Ok(Json(s.engine(move |e| e.agent_revoke(&name)).await?))
}

/// `GET /v1/audit?agent=A&since=1h&limit=N`: records, oldest first.
pub async fn audit(s: Scoped, RawQuery(q): RawQuery) -> Result<Json<Vec<AuditRow>>, ApiError> {
    let mut query = AuditQuery {
        limit: Some(1000),
        ..AuditQuery::default()
    };
    for (k, v) in query_pairs(q.as_deref()) {
        match k.as_str() {
            "agent" => query.agent = Some(v),
            "since" => {
                let d = humantime::parse_duration(v.trim()).map_err(|_| {
                    ApiError::bad_request(format!(
                        "query parameter 'since' must be a duration like 1h, not '{}'",
                        v.chars().take(40).collect::<String>()
                    ))
                })?;
                query.since_ms = Some(names::since_ms(pgfork_pool::meta::now() * 1000, d));
            }
            "limit" => query.limit = Some(number_in("limit", &v, 1..=MAX_AUDIT_ROWS)? as i64),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter '{other}'"
                )));
            }
        }
    }
    Ok(Json(s.engine(move |e| e.audit_query(&query)).await?))
}

/// `GET /v1/audit/verify`: the hash chain recomputed.
pub async fn verify(s: Scoped) -> Result<Json<VerifyReport>, ApiError> {
    Ok(Json(s.engine(|e| e.audit_verify()).await?))
}
