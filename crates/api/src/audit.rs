//! Every API request and MCP tool call is audited, in the same
//! hash-chained log as the proxy's statements (see
//! [`pgfork_engine::audit::record_action`]): who, which route or tool,
//! which object, and the result.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use pgfork_engine::Actor;
use pgfork_engine::audit::{Action, record_action};

use crate::error::ApiError;
use crate::state::Shared;

/// The object a request path is about: the segment after the collection
/// (`/v1/branches/dev/reset` is about `dev`), or `-`.
fn target_of(path: &str) -> &str {
    path.strip_prefix("/v1/")
        .and_then(|rest| rest.split('/').nth(1))
        .filter(|t| !t.is_empty())
        .unwrap_or("-")
}

/// An action that has been answered, to be audited.
pub struct Done {
    /// Who asked.
    pub actor: Actor,
    /// `api` or `mcp`.
    pub interface: &'static str,
    /// `http` or `stdio`.
    pub client: &'static str,
    /// Route or tool.
    pub action: String,
    /// The object, or `-`.
    pub target: String,
    /// HTTP status, or `ok`/`error`.
    pub result: String,
    /// Code and message of a failure.
    pub error: Option<(String, String)>,
    /// When it began.
    pub began: Instant,
}

/// Writes one action to the log, off the async workers; a failure is
/// logged (the action itself has happened).
pub async fn record(shared: &Shared, done: Done) {
    let home = shared.home.clone();
    let interface = done.interface;
    let written = tokio::task::spawn_blocking(move || {
        record_action(
            &home,
            &Action {
                actor: &done.actor,
                interface: done.interface,
                client: done.client,
                action: &done.action,
                target: &done.target,
                result: &done.result,
                error: done.error.as_ref().map(|(c, m)| (c.as_str(), m.as_str())),
                duration: done.began.elapsed(),
            },
        )
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("writing the audit record of {interface} action: {e}"),
        Err(e) => tracing::warn!("the audit writer failed: {e}"),
    }
}

/// Middleware (inside the token check): audits each API request once it
/// has been answered. `/mcp` is left to the tools, which know what was
/// called; `/metrics` and `/openapi.json` change and reveal nothing of
/// anyone's.
pub async fn audit_requests(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let actor = req.extensions().get::<Actor>().cloned();
    let (Some(actor), true) = (actor, path.starts_with("/v1/")) else {
        return next.run(req).await;
    };
    let action = format!("{} {path}", req.method());
    let began = Instant::now();
    let response = next.run(req).await;
    let error = response
        .extensions()
        .get::<ApiError>()
        .map(|e| (e.code.to_string(), e.message.clone()));
    let done = Done {
        actor,
        interface: "api",
        client: "http",
        action,
        target: target_of(&path).to_string(),
        result: response.status().as_u16().to_string(),
        error,
        began,
    };
    record(&s, done).await;
    response
}

#[cfg(test)]
mod tests {
    use super::target_of;

    #[test]
    fn the_object_of_a_path() {
        assert_eq!(target_of("/v1/branches"), "-");
        assert_eq!(target_of("/v1/branches/dev"), "dev");
        assert_eq!(target_of("/v1/branches/dev/reset"), "dev");
        assert_eq!(target_of("/v1/snapshots/shop@2"), "shop@2");
        assert_eq!(target_of("/metrics"), "-");
    }
}
