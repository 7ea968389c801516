//! Errors as the API reports them: an HTTP status and a JSON body
//! `{"error": {"code": "...", "message": "..."}}` whose code is stable (the
//! engine's own codes, plus a few of the API's) and whose message says what
//! to do, as the CLI's `--json` errors do.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pgfork_engine::EngineError;

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 for a request the API cannot read.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// An engine's refusal of one field of a request, naming the field
    /// (400 with the engine's code, such as `invalid_argument`).
    pub fn field(field: &str, e: EngineError) -> ApiError {
        ApiError {
            status: status_of(&e),
            code: e.code(),
            message: format!("invalid field '{field}': {e}"),
        }
    }

    /// 401, the same for a missing and a wrong token: saying which would
    /// help someone guessing.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 500 for a failure of the server itself (a panicked worker).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// The HTTP status for an engine error's code.
pub fn status_of(e: &EngineError) -> StatusCode {
    if e.is_not_found() {
        return StatusCode::NOT_FOUND;
    }
    match e.code() {
        "invalid_name" | "invalid_argument" => StatusCode::BAD_REQUEST,
        "name_taken" | "has_dependents" | "busy" | "wrong_state" | "unsafe_content"
        | "promote_unverified" | "partial_patch" => StatusCode::CONFLICT,
        "quota_exceeded" => StatusCode::TOO_MANY_REQUESTS,
        "forbidden" => StatusCode::FORBIDDEN,
        "compute_unavailable" | "gate_failed" => StatusCode::UNPROCESSABLE_ENTITY,
        "disk_floor" | "no_space" => StatusCode::INSUFFICIENT_STORAGE,
        "no_free_port" | "no_free_uid" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        ApiError {
            status: status_of(&e),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        // For the audit of the request (see crate::audit).
        response.extensions_mut().insert(self.clone());
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_statuses() {
        let cases = [
            (EngineError::UnknownBranch("x".into()), 404),
            (
                EngineError::QuotaExceeded {
                    source_name: "s".into(),
                    count: 3,
                    max: 3,
                },
                429,
            ),
            (
                EngineError::DiskFloor {
                    available: 1,
                    floor: 2,
                },
                507,
            ),
            (EngineError::InvalidArgument("bad".into()), 400),
            (EngineError::GateFailed("assertion failed".into()), 422),
            (
                EngineError::NameTaken {
                    name: "x".into(),
                    kind: "branch",
                },
                409,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).status.as_u16(), status);
        }
    }
}
