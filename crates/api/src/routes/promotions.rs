//! `/v1/promotions`: promotion requests (the only promote an agent may
//! do) and their decisions (an admin's).

use axum::Json;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use pgfork_engine::PromotionRow;
use serde::Deserialize;

use crate::body::{JsonBody, known_params, query_pairs};
use crate::error::ApiError;
use crate::state::Scoped;

/// Body of `POST /v1/promotions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestPromotion {
    /// The branch to promote.
    pub branch: String,
    /// What it is for.
    #[serde(default)]
    pub note: Option<String>,
    /// The migration that made the changes, to be rehearsed on a new branch
    /// of the same base snapshot; the report is kept with the request.
    #[serde(default)]
    pub migration: Option<String>,
}

/// Body of `POST /v1/promotions/{id}/reject`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reject {
    /// Why.
    pub reason: String,
}

/// `POST /v1/promotions`: ask for a branch to be promoted.
pub async fn create(
    s: Scoped,
    JsonBody(req): JsonBody<RequestPromotion>,
) -> Result<(StatusCode, Json<PromotionRow>), ApiError> {
    let row = s
        .engine(move |e| {
            let migration = req.migration.as_deref().map(|sql| ("migration.sql", sql));
            e.promotion_request(&req.branch, req.note.as_deref(), migration)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(row)))
}

/// `GET /v1/promotions?status=open`: the requests the caller may see.
pub async fn list(s: Scoped, RawQuery(q): RawQuery) -> Result<Json<Vec<PromotionRow>>, ApiError> {
    known_params(q.as_deref(), &["status"])?;
    let status = query_pairs(q.as_deref())
        .into_iter()
        .find(|(k, _)| k == "status")
        .map(|(_, v)| v);
    Ok(Json(
        s.engine(move |e| e.promotion_list(status.as_deref()))
            .await?,
    ))
}

/// `GET /v1/promotions/{id}`.
pub async fn info(s: Scoped, Path(id): Path<i64>) -> Result<Json<PromotionRow>, ApiError> {
    Ok(Json(s.engine(move |e| e.promotion_get(id)).await?))
}

/// `POST /v1/promotions/{id}/approve`: promote now (admin).
pub async fn approve(s: Scoped, Path(id): Path<i64>) -> Result<Json<PromotionRow>, ApiError> {
    Ok(Json(
        s.engine(move |e| e.promotion_approve(id).map(|(row, _)| row))
            .await?,
    ))
}

/// `POST /v1/promotions/{id}/reject` with `{"reason"}` (admin).
pub async fn reject(
    s: Scoped,
    Path(id): Path<i64>,
    JsonBody(req): JsonBody<Reject>,
) -> Result<Json<PromotionRow>, ApiError> {
    Ok(Json(
        s.engine(move |e| e.promotion_reject(id, &req.reason))
            .await?,
    ))
}
