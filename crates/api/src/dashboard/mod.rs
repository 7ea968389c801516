//! The web dashboard `pgfork serve` serves at `/`: server-rendered pages
//! (maud templates, which escape everything they interpolate) and one
//! small script, all compiled into the binary.
//!
//! A viewer signs in once with an API token (an admin's, or an agent's,
//! who then sees only its own things); the token is exchanged for a
//! session cookie and never appears in a URL. Every form carries the
//! session's CSRF token. Every read and every action goes through the same
//! engine calls as the API, acting as the token's identity, and actions
//! are audited like API requests (interface `web`).

mod agents;
mod assets;
mod audit;
mod branch;
mod branches;
mod counts;
mod diff_view;
mod page;
mod promotions;
mod session;
mod sources;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth::TokenCheck;
use crate::error::ApiError;
use crate::state::{Scoped, Shared};
use session::Viewer;

pub use session::Sessions;

/// What the dashboard's handlers share.
#[derive(Clone)]
pub struct Web {
    /// The API's shared state.
    pub shared: Shared,
    /// Signed-in viewers.
    pub sessions: Arc<Sessions>,
    /// The API's token check, so that a revoked or rotated token ends its
    /// sessions within a second, as it does for the API.
    pub tokens: Arc<TokenCheck>,
    /// Recent client-session counts of branches.
    pub counts: Arc<counts::SessionCounts>,
}

impl FromRef<Web> for Shared {
    fn from_ref(web: &Web) -> Shared {
        web.shared.clone()
    }
}

impl Web {
    /// The viewer's scope, as an API request with its token would have.
    fn scoped(&self, viewer: &Viewer) -> Scoped {
        Scoped {
            shared: self.shared.clone(),
            actor: viewer.actor.clone(),
        }
    }

    /// Runs `f` on an engine acting as the viewer.
    async fn engine<T: Send + 'static>(
        &self,
        viewer: &Viewer,
        f: impl FnOnce(&mut pgfork_engine::Engine) -> Result<T, pgfork_engine::EngineError>
        + Send
        + 'static,
    ) -> Result<T, ApiError> {
        self.shared.engine_as(viewer.actor.clone(), f).await
    }

    /// Runs an action and audits it like an API request, as interface
    /// `web`: `what` is the route (`POST /branches/dev/reset`).
    async fn audited<T>(
        &self,
        viewer: &Viewer,
        what: String,
        target: &str,
        action: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let began = std::time::Instant::now();
        let result = action.await;
        let (status, error) = match &result {
            Ok(_) => ("ok".to_string(), None),
            Err(e) => (
                e.status.as_u16().to_string(),
                Some((e.code.to_string(), e.message.clone())),
            ),
        };
        let done = crate::audit::Done {
            actor: viewer.actor.clone(),
            interface: "web",
            client: "http",
            action: what,
            target: target.to_string(),
            result: status,
            error,
            began,
        };
        crate::audit::record(&self.shared, done).await;
        result
    }

    /// Leaves `result`'s message for the next page and sends the browser
    /// to `back`.
    fn after(&self, viewer: &Viewer, back: &str, result: Result<String, ApiError>) -> Response {
        let flash = match result {
            Ok(text) => page::Flash::ok(text),
            Err(e) => page::Flash::error(e.message),
        };
        self.sessions.flash(&viewer.session, flash);
        axum::response::Redirect::to(back).into_response()
    }
}

/// The first path segments the dashboard owns (the API's are under `/v1`).
const SECTIONS: &[&str] = &[
    "login",
    "logout",
    "assets",
    "branches",
    "promotions",
    "sources",
    "agents",
    "audit",
];

/// Whether `path` is one of the dashboard's, which the bearer-token check
/// leaves to the session check.
pub fn serves(path: &str) -> bool {
    let first = path
        .strip_prefix('/')
        .map(|rest| rest.split('/').next().unwrap_or(""));
    match first {
        Some("") => true,
        Some(segment) => SECTIONS.contains(&segment),
        None => false,
    }
}

/// The dashboard's routes.
pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(branches::page))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/assets/{file}", get(assets::serve))
        .route(
            "/branches",
            get(|| async { axum::response::Redirect::to("/") }),
        )
        .route("/branches/{name}", get(branch::page))
        .route("/branches/{name}/diff", get(branch::diff))
        .route("/branches/{name}/dsn", post(branch::dsn))
        .route("/branches/{name}/{action}", post(branches::act))
        .route("/promotions", get(promotions::list))
        .route("/promotions/{id}", get(promotions::page))
        .route("/promotions/{id}/{action}", post(promotions::decide))
        .route("/sources", get(sources::page))
        .route("/agents", get(agents::page))
        .route("/agents/{name}/{action}", post(agents::act))
        .route("/audit", get(audit::page))
        .with_state(web)
        .layer(from_fn(guard_headers))
}

/// Headers on every dashboard response: the pages load nothing but their
/// own script and stylesheet, run no inline script, cannot be framed, and
/// are not cached (they show live state, and the DSN page a password).
async fn guard_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::serves;

    #[test]
    fn the_dashboard_owns_its_sections_and_nothing_of_the_api() {
        for path in ["/", "/login", "/branches/dev", "/assets/app.js", "/audit"] {
            assert!(serves(path), "{path}");
        }
        for path in [
            "/v1/branches",
            "/health",
            "/mcp",
            "/metrics",
            "/openapi.json",
            "",
        ] {
            assert!(!serves(path), "{path}");
        }
    }
}
