//! The HTTP routes, as one table: the router is built from it and the
//! OpenAPI document is checked against it (see `openapi.rs`), so neither
//! can list a route the other lacks.

mod agents;
mod branches;
mod promotions;
pub mod rehearsals;
mod snapshots;
mod sources;
mod system;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::routing::{MethodRouter, delete, get, patch, post, put};

use crate::error::ApiError;
use crate::state::Shared;

/// One route: method, path (axum syntax, which is OpenAPI's: `{name}`) and
/// its handler.
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path template.
    pub path: &'static str,
    handler: MethodRouter<Shared>,
}

fn route(method: Method, path: &'static str, handler: MethodRouter<Shared>) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

/// Every route of the API. `/mcp` (the MCP server's own transport) is
/// added next to these by the server, outside the OpenAPI document.
pub fn table() -> Vec<Route> {
    use Method as M;
    vec![
        route(M::GET, "/health", get(system::health)),
        route(M::GET, "/openapi.json", get(system::openapi)),
        route(M::GET, "/metrics", get(system::metrics)),
        route(M::GET, "/v1/sources", get(sources::list)),
        route(M::POST, "/v1/sources", post(sources::create)),
        route(M::GET, "/v1/sources/{name}", get(sources::info)),
        route(M::DELETE, "/v1/sources/{name}", delete(sources::remove)),
        route(M::GET, "/v1/sources/{name}/gates", get(sources::gates)),
        route(M::PUT, "/v1/sources/{name}/gates", put(sources::set_gates)),
        route(M::GET, "/v1/sources/{name}/limits", get(sources::limits)),
        route(
            M::PATCH,
            "/v1/sources/{name}/limits",
            patch(sources::set_limits),
        ),
        route(M::GET, "/v1/snapshots", get(snapshots::list)),
        route(M::POST, "/v1/snapshots", post(snapshots::create)),
        route(M::GET, "/v1/snapshots/{id}", get(snapshots::info)),
        route(M::DELETE, "/v1/snapshots/{id}", delete(snapshots::remove)),
        route(M::GET, "/v1/branches", get(branches::list)),
        route(M::POST, "/v1/branches", post(branches::create)),
        route(M::GET, "/v1/branches/{name}", get(branches::info)),
        route(M::PATCH, "/v1/branches/{name}", patch(branches::set)),
        route(M::DELETE, "/v1/branches/{name}", delete(branches::remove)),
        route(M::GET, "/v1/branches/{name}/dsn", get(branches::dsn)),
        route(M::GET, "/v1/branches/{name}/diff", get(branches::diff)),
        route(M::POST, "/v1/branches/{name}/reset", post(branches::reset)),
        route(M::POST, "/v1/branches/{name}/start", post(branches::start)),
        route(M::POST, "/v1/branches/{name}/stop", post(branches::stop)),
        route(
            M::POST,
            "/v1/branches/{name}/promote",
            post(branches::promote),
        ),
        route(M::POST, "/v1/branches/{name}/share", post(branches::share)),
        route(
            M::DELETE,
            "/v1/branches/{name}/share/{agent}",
            delete(branches::unshare),
        ),
        route(
            M::GET,
            "/v1/branches/{name}/members",
            get(branches::members),
        ),
        route(M::POST, "/v1/rehearsals", post(rehearsals::create)),
        route(M::GET, "/v1/promotions", get(promotions::list)),
        route(M::POST, "/v1/promotions", post(promotions::create)),
        route(M::GET, "/v1/promotions/{id}", get(promotions::info)),
        route(
            M::POST,
            "/v1/promotions/{id}/approve",
            post(promotions::approve),
        ),
        route(
            M::POST,
            "/v1/promotions/{id}/reject",
            post(promotions::reject),
        ),
        route(M::GET, "/v1/agents", get(agents::list)),
        route(M::POST, "/v1/agents", post(agents::create)),
        route(M::GET, "/v1/agents/{name}", get(agents::info)),
        route(M::POST, "/v1/agents/{name}/rotate", post(agents::rotate)),
        route(M::POST, "/v1/agents/{name}/revoke", post(agents::revoke)),
        route(M::GET, "/v1/audit", get(agents::audit)),
        route(M::GET, "/v1/audit/verify", get(agents::verify)),
    ]
}

/// The router of [`table`], with JSON errors for unknown paths and methods.
pub fn router() -> Router<Shared> {
    let mut router = Router::new();
    for r in table() {
        // Routes of one path merge their methods.
        router = router.route(r.path, r.handler);
    }
    router
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route: GET /openapi.json lists them",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method: GET /openapi.json lists them",
            )
        })
}
