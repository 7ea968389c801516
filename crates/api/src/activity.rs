//! Requests about a branch count as its use: they reset its idle clock,
//! kept by the engine (see [`pgfork_engine::activity`]) for the reaper
//! and the proxy alike.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::Shared;

/// The branch a request path is about: `/v1/branches/NAME[/...]`.
fn branch_of(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/v1/branches/")?.split('/').next()?;
    // Anything else names no branch; the handler says so.
    pgfork_engine::names::validate(name).ok().map(|()| name)
}

/// Middleware: records use of the branch a request is about, before the
/// request is handled (so that the reaper cannot stop it meanwhile).
pub async fn touch_requested(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if let (Some(name), Some(actor)) = (
        branch_of(req.uri().path()),
        req.extensions().get::<pgfork_engine::Actor>(),
    ) {
        s.touch(actor, name.to_string()).await;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::branch_of;

    #[test]
    fn paths_about_a_branch() {
        assert_eq!(branch_of("/v1/branches/dev"), Some("dev"));
        assert_eq!(branch_of("/v1/branches/dev/diff"), Some("dev"));
        assert_eq!(branch_of("/v1/branches"), None);
        assert_eq!(branch_of("/v1/branches/"), None);
        assert_eq!(branch_of("/v1/branches/Bad%20Name"), None);
        assert_eq!(branch_of("/v1/sources/shop"), None);
    }
}
