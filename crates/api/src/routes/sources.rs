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
