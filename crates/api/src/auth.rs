//! Bearer-token authentication. `init` stores only the token's SHA-256 in
//! meta.db; the hash is read again at most once a second, so that `pgfork
//! token rotate` takes effect on a running server without a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pgfork_pool::Home;

use crate::error::ApiError;

/// How long a read of the stored hash is trusted.
const REFRESH: Duration = Duration::from_secs(1);

/// Checks bearer tokens against the hash in meta.db.
pub struct TokenCheck {
    home: Home,
    cached: Mutex<Option<(Instant, Option<String>)>>,
}

impl TokenCheck {
    /// A checker for the token of `home`.
    pub fn new(home: Home) -> TokenCheck {
        TokenCheck {
            home,
            cached: Mutex::new(None),
        }
    }

    fn stored_hash(&self) -> Option<String> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, hash)) = cached.as_ref()
            && at.elapsed() < REFRESH
        {
            return hash.clone();
        }
        let hash = match pgfork_engine::api_token_sha256(&self.home) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("reading the API token hash: {e}");
                None
            }
        };
        *cached = Some((Instant::now(), hash.clone()));
        hash
    }

    /// Whether `token` is the current one.
    pub fn accepts(&self, token: &str) -> bool {
        let Some(stored) = self.stored_hash() else {
            return false;
        };
        let given = pgfork_engine::hash_api_token(token);
        // Constant time, although comparing hashes leaks little anyway.
        given.len() == stored.len()
            && given
                .bytes()
                .zip(stored.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
}

/// Middleware: every route but `/health` needs the token.
pub async fn require_token(
    State(check): State<Arc<TokenCheck>>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let Some(token) = bearer(&req) else {
        return ApiError::unauthorized().into_response();
    };
    // Reading meta.db may wait for another writer's lock: not on the
    // async workers.
    let allowed = tokio::task::spawn_blocking(move || check.accepts(&token))
        .await
        .unwrap_or(false);
    if allowed {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}
