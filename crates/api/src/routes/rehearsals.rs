//! `/v1/rehearsals`: try a migration on a branch made for it (see
//! `pgfork rehearse`).

use axum::Json;
use pgfork_engine::{RehearsalReport, RehearseRequest, Severity};
use serde::Deserialize;

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::Scoped;

/// Body of `POST /v1/rehearsals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rehearse {
    /// A source (its newest snapshot), a snapshot id or a branch.
    pub from: String,
    /// The migration.
    pub sql: String,
    /// A name for it in the report (default `migration.sql`).
    #[serde(default)]
    pub file: Option<String>,
    /// Snapshot the source first.
    #[serde(default)]
    pub fresh: bool,
    /// Keep the branch (the report then holds its DSN).
    #[serde(default)]
    pub keep: bool,
    /// `warning` or `error` (default): lint findings this severe block.
    #[serde(default)]
    pub fail_on: Option<String>,
    /// Blocking locks held longer than this block.
    #[serde(default)]
    pub max_lock_ms: Option<u64>,
}

/// The engine's request from the API's (and MCP's) body.
pub fn rehearse_request(req: Rehearse) -> Result<RehearseRequest, ApiError> {
    let fail_on = match req.fail_on.as_deref() {
        None => Severity::Error,
        Some(s) => s.parse().map_err(ApiError::bad_request)?,
    };
    Ok(RehearseRequest {
        from: req.from,
        file: req.file.unwrap_or_else(|| "migration.sql".into()),
        sql: req.sql,
        fresh: req.fresh,
        keep: req.keep,
        fail_on,
        max_lock_ms: req.max_lock_ms,
    })
}

/// `POST /v1/rehearsals`: the report, whatever the verdict (`verdict` says
/// it: `applies`, `fails` or `blocked`).
pub async fn create(
    s: Scoped,
    JsonBody(req): JsonBody<Rehearse>,
) -> Result<Json<RehearsalReport>, ApiError> {
    let req = rehearse_request(req)?;
    Ok(Json(s.engine(move |e| e.rehearse(&req)).await?))
}
