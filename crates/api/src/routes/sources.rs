//! `/v1/sources`: databases that branches are made from.

use axum::Json;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use pgfork_engine::view::SourceInfo;
use pgfork_engine::{AssertionFile, GatesChange, SourceGates};
use serde::Deserialize;

use crate::body::{JsonBody, known_params, query_flag};
use crate::error::ApiError;
use crate::state::Scoped;

/// Body of `POST /v1/sources`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSource {
    /// Name of the new local source (also its database and role).
    pub name: String,
}

/// `GET /v1/sources`.
pub async fn list(s: Scoped) -> Result<Json<Vec<SourceInfo>>, ApiError> {
    Ok(Json(s.engine(|e| e.source_list()).await?))
}

/// `POST /v1/sources`: a local source, started, ready for data.
pub async fn create(
    s: Scoped,
    JsonBody(req): JsonBody<CreateSource>,
) -> Result<(StatusCode, Json<SourceInfo>), ApiError> {
    let info = s.engine(move |e| e.source_create(&req.name)).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /v1/sources/{name}`.
pub async fn info(s: Scoped, Path(name): Path<String>) -> Result<Json<SourceInfo>, ApiError> {
    Ok(Json(s.engine(move |e| e.source_info(&name)).await?))
}

/// `DELETE /v1/sources/{name}?force=true`.
pub async fn remove(
    s: Scoped,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    known_params(q.as_deref(), &["force"])?;
    let force = query_flag(q.as_deref(), "force")?;
    let deleted = s.engine(move |e| e.source_delete(&name, force)).await?;
    Ok(Json(serde_json::json!({ "deleted": deleted })))
}

/// Body of `PUT /v1/sources/{name}/gates`: the source's gates, whole
/// (what it leaves out, it removes).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutGates {
    /// Assertion files: `{name, sql}`.
    #[serde(default)]
    pub assert: Vec<AssertionFile>,
    /// Most rows one promote may change (absent or null: no bound).
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// Most tables whose rows one promote may change.
    #[serde(default)]
    pub max_tables: Option<u64>,
}

/// `GET /v1/sources/{name}/gates`: the promotion gates every promote to
/// the source must pass (admins only).
pub async fn gates(s: Scoped, Path(name): Path<String>) -> Result<Json<SourceGates>, ApiError> {
    Ok(Json(s.engine(move |e| e.source_gates(&name)).await?))
}

/// `PUT /v1/sources/{name}/gates`: replaces the source's gates; every file
/// is checked first, and a refusal changes nothing.
pub async fn set_gates(
    s: Scoped,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<PutGates>,
) -> Result<Json<SourceGates>, ApiError> {
    let change = GatesChange {
        clear: true,
        files: Some(req.assert),
        max_rows: Some(req.max_rows),
        max_tables: Some(req.max_tables),
    };
    Ok(Json(
        s.engine(move |e| e.set_source_gates(&name, &change))
            .await?,
    ))
}

/// Body of `PATCH /v1/sources/{name}/limits`: what every new branch of the
/// source gets unless its create says otherwise. Absent or null: unchanged;
/// `"none"`: no limit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchLimits {
    /// CPUs (`0.5`).
    #[serde(default)]
    pub branch_cpu: Option<serde_json::Value>,
    /// Memory (bytes, or `"512M"`).
    #[serde(default)]
    pub branch_memory: Option<serde_json::Value>,
    /// Most processes.
    #[serde(default)]
    pub branch_pids: Option<serde_json::Value>,
    /// Storage of its own (bytes, or `"2G"`; btrfs pools).
    #[serde(default)]
    pub branch_max_size: Option<serde_json::Value>,
}

/// The source's limits for new branches, as `pgfork source limits --json`
/// shows them.
fn limits_json(
    compute: pgfork_engine::SourceLimits,
    storage: &pgfork_pool::meta::SourceLimits,
) -> serde_json::Value {
    let mut out = serde_json::to_value(&compute).unwrap_or_default();
    out["branch_max_size"] = serde_json::json!(storage.branch_max_size);
    out
}

/// `GET /v1/sources/{name}/limits`.
pub async fn limits(
    s: Scoped,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (compute, storage) = s
        .engine(move |e| {
            let compute = pgfork_engine::SourceLimits {
                branch: e.source_branch_limits(&name)?,
                source: name.clone(),
            };
            Ok((compute, e.source_storage_limits(&name)?))
        })
        .await?;
    Ok(Json(limits_json(compute, &storage)))
}

/// `PATCH /v1/sources/{name}/limits` (admins only): a limit cgroups or the
/// pool cannot enforce here is refused, and nothing changes.
pub async fn set_limits(
    s: Scoped,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<PatchLimits>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let compute = super::branches::limits_request(
        ("branch_cpu", &req.branch_cpu),
        ("branch_memory", &req.branch_memory),
        ("branch_pids", &req.branch_pids),
    )?;
    let max_size = match &req.branch_max_size {
        None => None,
        Some(v) => {
            let text = super::branches::limit_text("branch_max_size", v)?;
            Some(match text.trim() {
                "none" => None,
                size => Some(pgfork_pool::space::parse_size(size).ok_or_else(|| {
                    ApiError::field(
                        "branch_max_size",
                        pgfork_engine::EngineError::InvalidArgument(format!(
                            "'{size}' is not a number of bytes or a size like 2G (or none)"
                        )),
                    )
                })?),
            })
        }
    };
    let (compute, storage) = s
        .engine(move |e| {
            // The storage limit is checked first: it can be refused by the
            // pool, and then the compute limits must not have changed.
            let mut storage = e.source_storage_limits(&name)?;
            if let Some(size) = max_size {
                storage.branch_max_size = size;
                e.check_storage_limit(size)?;
            }
            let compute = e.source_limits(&name, &compute)?;
            if max_size.is_some() {
                storage = e.set_source_storage_limits(&name, storage)?;
            }
            Ok((compute, storage))
        })
        .await?;
    Ok(Json(limits_json(compute, &storage)))
}
