//! `/v1/branches`: writable copy-on-write clones, each a real PostgreSQL
//! server. Creating one returns its DSN, password included.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use pgfork_engine::view::BranchInfo;
use pgfork_engine::{
    AssertionFile, BranchCreate, ComputeRequest, DiffRequest, PromoteReport, PromoteRequest,
    Strategy, compute, names,
};
use serde::Deserialize;

use crate::body::{JsonBody, MAX_DIFF_ROWS, known_params, query_flag, query_number, query_pairs};
use crate::error::ApiError;
use crate::state::Scoped;

/// Body of `POST /v1/branches`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBranch {
    /// New branch name.
    pub name: String,
    /// A source (its latest snapshot), a snapshot id (`shop@3`) or a branch.
    pub from: String,
    /// Time to live (`30m`, `2h`, `7d`).
    #[serde(default)]
    pub ttl: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Never deleted by gc or the reaper.
    #[serde(default)]
    pub protect: bool,
    /// fsync on.
    #[serde(default)]
    pub durable: bool,
    /// Snapshot the source first.
    #[serde(default)]
    pub fresh: bool,
    /// Empty every table.
    #[serde(default)]
    pub schema_only: bool,
    /// Allow an unmasked snapshot of a remote source without rules.
    #[serde(default)]
    pub unmasked: bool,
    /// Most bytes the branch may write of its own: a number of bytes or a
    /// size like `"512M"` (btrfs pools; default: the source's).
    #[serde(default)]
    pub max_size: Option<Size>,
    /// CPUs (a number such as 0.5, or a string; "none": no limit).
    #[serde(default)]
    pub cpu: Option<serde_json::Value>,
    /// Memory: bytes, or a size such as "512M" ("none": no limit).
    #[serde(default)]
    pub memory: Option<serde_json::Value>,
    /// Most processes ("none": no limit).
    #[serde(default)]
    pub pids: Option<serde_json::Value>,
}

/// A size given as bytes or as text like `512M`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Size {
    /// A number of bytes.
    Bytes(u64),
    /// `512M`, `2G`.
    Text(String),
}

impl Size {
    fn bytes(&self) -> Option<u64> {
        match self {
            Size::Bytes(n) => Some(*n),
            Size::Text(t) => pgfork_pool::space::parse_size(t),
        }
    }
}

/// A compute limit's JSON value as the CLI's text: a number or a string.
pub(super) fn limit_text(field: &str, v: &serde_json::Value) -> Result<String, ApiError> {
    match v {
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::String(s) => Ok(s.clone()),
        _ => Err(ApiError::field(
            field,
            pgfork_engine::EngineError::InvalidArgument(format!(
                "{field} must be a number or a string such as \"none\""
            )),
        )),
    }
}

/// The compute limits of a create body, each checked and named.
fn compute_request(req: &CreateBranch) -> Result<ComputeRequest, ApiError> {
    limits_request(
        ("cpu", &req.cpu),
        ("memory", &req.memory),
        ("pids", &req.pids),
    )
}

/// Compute limits from a body's fields (each `(name, value)`): a number,
/// or a string such as `"0.5"`, `"512M"` or `"none"` (no limit); absent or
/// null leaves it as it is.
pub(super) fn limits_request(
    cpu: (&str, &Option<serde_json::Value>),
    memory: (&str, &Option<serde_json::Value>),
    pids: (&str, &Option<serde_json::Value>),
) -> Result<ComputeRequest, ApiError> {
    let parse = |(field, v): (&str, &Option<serde_json::Value>),
                 f: &dyn Fn(&str, &str) -> pgfork_engine::Result<Option<u64>>|
     -> Result<Option<Option<u64>>, ApiError> {
        v.as_ref()
            .map(|v| {
                let text = limit_text(field, v)?;
                f(field, &text).map_err(|e| ApiError::field(field, e))
            })
            .transpose()
    };
    let narrow = |v: Option<Option<u64>>| v.map(|o| o.map(|n| n as u32));
    let cpu = parse(cpu, &|f, t| Ok(compute::parse_cpu(f, t)?.map(u64::from)))?;
    // A bare number is bytes, as in the rest of the API.
    let memory = parse(memory, &|f, t| compute::parse_memory(f, t))?;
    let pids = parse(pids, &|f, t| Ok(compute::parse_pids(f, t)?.map(u64::from)))?;
    Ok(ComputeRequest {
        cpu_millis: narrow(cpu),
        memory,
        pids: narrow(pids),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBranch {
    /// New TTL from now.
    #[serde(default)]
    pub ttl: Option<String>,
    /// Remove the TTL.
    #[serde(default)]
    pub clear_ttl: bool,
    /// Protect (true) or unprotect (false).
    #[serde(default)]
    pub protect: Option<bool>,
    /// Labels to add or change.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Label keys to remove.
    #[serde(default)]
    pub unlabel: Vec<String>,
    /// CPUs (a number, or a string; `"none"` removes the limit).
    #[serde(default)]
    pub cpu: Option<serde_json::Value>,
    /// Memory (bytes, or `"512M"`; `"none"`).
    #[serde(default)]
    pub memory: Option<serde_json::Value>,
    /// Most processes (`"none"`).
    #[serde(default)]
    pub pids: Option<serde_json::Value>,
}

/// The engine's request for a create body, every field checked (the
/// engine checks again; here the refusal names the field).
pub fn branch_create(req: CreateBranch) -> Result<BranchCreate, ApiError> {
    names::validate(&req.name).map_err(|e| ApiError::field("name", e))?;
    names::validate_labels(&req.labels).map_err(|e| ApiError::field("labels", e))?;
    let compute = compute_request(&req)?;
    Ok(BranchCreate {
        ttl: req
            .ttl
            .as_deref()
            .map(names::parse_ttl)
            .transpose()
            .map_err(|e| ApiError::field("ttl", e))?,
        name: req.name,
        from: req.from,
        labels: req.labels,
        protect: req.protect,
        durable: req.durable,
        fresh: req.fresh,
        schema_only: req.schema_only,
        unmasked: req.unmasked,
        proxy_only: false,
        for_agent: None,
        max_size: req
            .max_size
            .map(|s| {
                s.bytes().ok_or_else(|| {
                    ApiError::field(
                        "max_size",
                        pgfork_engine::EngineError::InvalidArgument(
                            "not a number of bytes or a size like 512M".into(),
                        ),
                    )
                })
            })
            .transpose()?,
        compute,
    })
}

/// `GET /v1/branches?label=KEY=VALUE&agent=NAME`: labels repeatable (all
/// must match); `agent` keeps the branches that agent made (the registry).
pub async fn list(s: Scoped, RawQuery(q): RawQuery) -> Result<Json<Vec<BranchInfo>>, ApiError> {
    known_params(q.as_deref(), &["label", "agent"])?;
    let pairs = query_pairs(q.as_deref());
    let labels: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "label")
        .map(|(_, v)| v.clone())
        .collect();
    let agent = pairs
        .into_iter()
        .find(|(k, _)| k == "agent")
        .map(|(_, v)| v);
    let labels = names::parse_labels(&labels).map_err(|e| ApiError::field("label", e))?;
    Ok(Json(
        s.engine(move |e| e.branch_list_by(&labels, agent.as_deref()))
            .await?,
    ))
}

/// `POST /v1/branches`: 201 with the branch, `dsn` carrying its password.
pub async fn create(
    s: Scoped,
    JsonBody(req): JsonBody<CreateBranch>,
) -> Result<(StatusCode, Json<BranchInfo>), ApiError> {
    let info = s.create_branch(branch_create(req)?).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /v1/branches/{name}`, with the bytes it no longer shares with its
/// snapshot (password masked).
pub async fn info(s: Scoped, Path(name): Path<String>) -> Result<Json<BranchInfo>, ApiError> {
    let info = s
        .engine(move |e| {
            let mut info = e.branch_info(&name)?;
            // A branch being made or removed has no extent map to read yet.
            info.unshared_bytes = e.branch_unshared_bytes(&name).ok();
            Ok(info)
        })
        .await?;
    Ok(Json(info))
}

/// `GET /v1/branches/{name}/dsn`: `{"name", "dsn"}` with the password.
pub async fn dsn(s: Scoped, Path(name): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let info = s.engine(move |e| e.branch_info(&name)).await?;
    Ok(Json(serde_json::json!({
        "name": info.name,
        "dsn": info.dsn_with_password().unwrap_or_default(),
    })))
}

/// `GET /v1/branches/{name}/diff?against=X&schema=false&data=false&limit=N&full=true`:
/// what the branch changed against its base snapshot (or `against`).
pub async fn diff(
    s: Scoped,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<pgfork_engine::DiffReport>, ApiError> {
    let req = diff_request(name, q.as_deref())?;
    Ok(Json(s.engine(move |e| e.diff(&req)).await?))
}

/// The engine's diff request from a query string; both schema and data
/// unless one is turned off.
pub fn diff_request(target: String, query: Option<&str>) -> Result<DiffRequest, ApiError> {
    known_params(
        query,
        &["against", "schema", "data", "limit", "full", "sql"],
    )?;
    let pairs = query_pairs(query);
    let value = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let on = |key: &str| -> Result<bool, ApiError> {
        match value(key).as_deref() {
            None | Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(other) => Err(ApiError::bad_request(format!(
                "query parameter '{key}' must be true or false, not '{other}'"
            ))),
        }
    };
    let limit = query_number(query, "limit", 0..=MAX_DIFF_ROWS as u64, 20)? as usize;
    let (schema, data) = (on("schema")?, on("data")?);
    if !schema && !data {
        return Err(ApiError::bad_request(
            "schema=false and data=false leave nothing to compare",
        ));
    }
    Ok(DiffRequest {
        target,
        against: value("against"),
        schema,
        data,
        limit,
        full: query_flag(query, "full")?,
        sql: query_flag(query, "sql")?,
    })
}

/// `PATCH /v1/branches/{name}`: TTL, protection, labels.
pub async fn set(
    s: Scoped,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SetBranch>,
) -> Result<Json<BranchInfo>, ApiError> {
    if req.ttl.is_some() && req.clear_ttl {
        return Err(ApiError::bad_request(
            "fields 'ttl' and 'clear_ttl' exclude each other",
        ));
    }
    let ttl = match (&req.ttl, req.clear_ttl) {
        (Some(t), _) => Some(Some(
            names::parse_ttl(t).map_err(|e| ApiError::field("ttl", e))?,
        )),
        (None, true) => Some(None),
        (None, false) => None,
    };
    names::validate_labels(&req.labels).map_err(|e| ApiError::field("labels", e))?;
    let limits = limits_request(
        ("cpu", &req.cpu),
        ("memory", &req.memory),
        ("pids", &req.pids),
    )?;
    let info = s
        .engine(move |e| {
            // The limits first: a refusal there changes nothing else.
            e.branch_set_limits(&name, &limits)?;
            e.branch_set(&name, ttl, req.protect, &req.labels, &req.unlabel)
        })
        .await?;
    Ok(Json(info))
}

/// `DELETE /v1/branches/{name}?force=true`.
pub async fn remove(
    s: Scoped,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    known_params(q.as_deref(), &["force"])?;
    let force = query_flag(q.as_deref(), "force")?;
    let deleted = s.engine(move |e| e.branch_delete(&name, force)).await?;
    Ok(Json(serde_json::json!({ "deleted": deleted })))
}

/// `POST /v1/branches/{name}/reset`.
pub async fn reset(s: Scoped, Path(name): Path<String>) -> Result<Json<BranchInfo>, ApiError> {
    Ok(Json(s.engine(move |e| e.branch_reset(&name)).await?))
}

/// `POST /v1/branches/{name}/start`.
pub async fn start(s: Scoped, Path(name): Path<String>) -> Result<Json<BranchInfo>, ApiError> {
    Ok(Json(s.start_branch(name).await?))
}

/// `POST /v1/branches/{name}/stop`.
pub async fn stop(s: Scoped, Path(name): Path<String>) -> Result<Json<BranchInfo>, ApiError> {
    Ok(Json(s.engine(move |e| e.branch_stop(&name)).await?))
}

/// Body of `POST /v1/branches/{name}/share`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareBranch {
    /// The agent to share it with.
    pub agent: String,
    /// Read only (default: read and write, as the branch's role).
    #[serde(default)]
    pub read_only: bool,
}

/// `POST /v1/branches/{name}/share`: the owner shares its branch.
pub async fn share(
    s: Scoped,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<ShareBranch>,
) -> Result<Json<pgfork_engine::sharing::Member>, ApiError> {
    Ok(Json(
        s.engine(move |e| e.branch_share(&name, &req.agent, req.read_only))
            .await?,
    ))
}

/// `DELETE /v1/branches/{name}/share/{agent}`: the member's role is dropped
/// and its sessions end.
pub async fn unshare(
    s: Scoped,
    Path((name, agent)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.engine({
        let (name, agent) = (name.clone(), agent.clone());
        move |e| e.branch_unshare(&name, &agent)
    })
    .await?;
    Ok(Json(
        serde_json::json!({ "branch": name, "unshared": agent }),
    ))
}

/// `GET /v1/branches/{name}/members`.
pub async fn members(
    s: Scoped,
    Path(name): Path<String>,
) -> Result<Json<Vec<pgfork_engine::sharing::Member>>, ApiError> {
    Ok(Json(s.engine(move |e| e.branch_members(&name)).await?))
}

/// Body of `POST /v1/branches/{name}/promote` (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// Only report what would be applied (and evaluate the gates on the branch).
    #[serde(default)]
    pub dry_run: bool,
    /// Resolve conflicts: `ours` (the branch wins) or `theirs`.
    #[serde(default)]
    pub strategy: Option<String>,
    /// Apply to a remote source (the CLI's `--yes`).
    #[serde(default)]
    pub yes: bool,
    /// Apply a patch that cannot carry every change.
    #[serde(default)]
    pub allow_partial: bool,
    /// Assertion files to pass besides the source's stored gates.
    #[serde(default)]
    pub assert: Vec<AssertionFile>,
}

/// `POST /v1/branches/{name}/promote`: applies the branch's changes to its
/// source (admins only), as `pgfork promote` does, the source's promotion
/// gates included. Unresolved conflicts are a 200 with `applied: false`
/// and the conflicts; a failed gate is a 422 `gate_failed`.
pub async fn promote(
    s: Scoped,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<Promote>,
) -> Result<Json<PromoteReport>, ApiError> {
    let strategy = match req.strategy.as_deref() {
        None => None,
        Some("ours") => Some(Strategy::Ours),
        Some("theirs") => Some(Strategy::Theirs),
        Some(other) => {
            return Err(ApiError::field(
                "strategy",
                pgfork_engine::EngineError::InvalidArgument(format!(
                    "{other:?} is not a strategy: ours (the branch wins) or theirs (the source wins)"
                )),
            ));
        }
    };
    let req = PromoteRequest {
        branch: name,
        dry_run: req.dry_run,
        strategy,
        confirmed: req.yes,
        allow_partial: req.allow_partial,
        assertions: req.assert,
    };
    Ok(Json(s.engine(move |e| e.promote(&req)).await?))
}
