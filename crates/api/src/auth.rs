//! Bearer-token authentication. meta.db keeps only each token's SHA-256,
//! an admin's or an agent's (see [`pgfork_engine::identity`]). A lookup is
//! trusted for at most a second, so that a revoked or rotated token stops
//! working on a running server within a second, without a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pgfork_engine::Actor;
use pgfork_pool::Home;

use crate::error::ApiError;

/// How long a lookup is trusted.
const REFRESH: Duration = Duration::from_secs(1);

/// Cached lookups kept at most; past it the cache starts afresh (a client
/// trying many tokens only makes lookups).
const MAX_CACHED: usize = 1024;

/// Resolves bearer tokens to the identity they belong to.
pub struct TokenCheck {
    home: Home,
    cached: Mutex<HashMap<String, (Instant, Option<Actor>)>>,
}

impl TokenCheck {
    /// A checker for the tokens of `home`.
    pub fn new(home: Home) -> TokenCheck {
        TokenCheck {
            home,
            cached: Mutex::new(HashMap::new()),
        }
    }

    /// Whose token `token` is; `None` for an unknown, revoked or rotated one.
    pub fn resolve(&self, token: &str) -> Option<Actor> {
        self.resolve_hash(&pgfork_engine::hash_api_token(token))
    }

    /// Whose token has SHA-256 `key`: what a dashboard session keeps.
    pub fn resolve_hash(&self, key: &str) -> Option<Actor> {
        {
            let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, actor)) = cached.get(key)
                && at.elapsed() < REFRESH
            {
                return actor.clone();
            }
        }
        let actor = match pgfork_engine::identity::resolve_token_hash(&self.home, key) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("looking up an API token: {e}");
                None
            }
        };
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached.len() >= MAX_CACHED {
            cached.clear();
        }
        cached.insert(key.to_string(), (Instant::now(), actor.clone()));
        actor
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

/// Middleware: every route but `/health` and the dashboard's needs a token; the identity it
/// belongs to goes with the request (an [`Actor`] extension), for the
/// handlers and MCP tools to act as.
pub async fn require_token(
    State(check): State<Arc<TokenCheck>>,
    mut req: Request,
    next: Next,
) -> Response {
    // The dashboard's pages have their own sessions (see `dashboard`).
    if req.uri().path() == "/health" || crate::dashboard::serves(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(token) = bearer(&req) else {
        return ApiError::unauthorized().into_response();
    };
    // Reading meta.db may wait for another writer's lock: not on the
    // async workers.
    let actor = tokio::task::spawn_blocking(move || check.resolve(&token))
        .await
        .ok()
        .flatten();
    match actor {
        Some(actor) => {
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        None => ApiError::unauthorized().into_response(),
    }
}
