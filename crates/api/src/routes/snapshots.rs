//! `/v1/snapshots`: sealed, immutable images of a source or branch.

use axum::Json;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use pgfork_engine::view::SnapshotInfo;
use serde::Deserialize;

use crate::body::{JsonBody, known_params, query_flag, query_pairs};
use crate::error::ApiError;
use crate::state::Scoped;

/// Body of `POST /v1/snapshots`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// Source or branch to snapshot.
    pub of: String,
    /// Allow an unmasked snapshot of a remote source without masking rules.
    #[serde(default)]
    pub unmasked: bool,
}

/// `GET /v1/snapshots?source=NAME`.
pub async fn list(s: Scoped, RawQuery(q): RawQuery) -> Result<Json<Vec<SnapshotInfo>>, ApiError> {
    known_params(q.as_deref(), &["source"])?;
    let source = query_pairs(q.as_deref())
        .into_iter()
        .find(|(k, _)| k == "source")
        .map(|(_, v)| v);
    Ok(Json(
        s.engine(move |e| e.snapshot_list(source.as_deref()))
            .await?,
    ))
}

/// `POST /v1/snapshots`.
pub async fn create(
    s: Scoped,
    JsonBody(req): JsonBody<CreateSnapshot>,
) -> Result<(StatusCode, Json<SnapshotInfo>), ApiError> {
    let info = s
        .engine(move |e| e.snapshot_create_opts(&req.of, req.unmasked))
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /v1/snapshots/{id}`.
pub async fn info(s: Scoped, Path(id): Path<String>) -> Result<Json<SnapshotInfo>, ApiError> {
    Ok(Json(s.engine(move |e| e.snapshot_info(&id)).await?))
}

/// `DELETE /v1/snapshots/{id}?force=true`.
pub async fn remove(
    s: Scoped,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    known_params(q.as_deref(), &["force"])?;
    let force = query_flag(q.as_deref(), "force")?;
    let deleted = s.engine(move |e| e.snapshot_delete(&id, force)).await?;
    Ok(Json(serde_json::json!({ "deleted": deleted })))
}
