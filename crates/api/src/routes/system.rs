//! Health, the OpenAPI document and the metrics.

use axum::Json;
use axum::http::header;
use axum::response::IntoResponse;

use crate::error::ApiError;
use crate::state::Scoped;

/// `GET /health`: no token needed, nothing revealed.
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// `GET /openapi.json`.
pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(s: Scoped) -> Result<impl IntoResponse, ApiError> {
    let (branches, snapshots) = s
        .engine(|e| Ok((e.branch_list(&Default::default())?, e.snapshot_list(None)?)))
        .await?;
    let text = s
        .metrics
        .render(&branches, &snapshots, pgfork_pool::meta::now());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
