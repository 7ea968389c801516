//! What every request handler and MCP tool shares, and how they reach the
//! engine.
//!
//! The engine is synchronous and takes `&mut self`, so each call opens its
//! own [`Engine`] on a blocking thread. Opening reconciles, which is cheap,
//! and concurrent engines are safe: meta.db serialises their decisions and
//! every operation claims its object for its thread.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use pgfork_engine::{Actor, Engine, EngineError, Quiet};
use pgfork_pool::Home;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// State shared by the HTTP handlers, the MCP server and the reaper.
#[derive(Clone)]
pub struct Shared {
    /// The pgfork home.
    pub home: Home,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Shared state for `home`.
    pub fn new(home: Home) -> Shared {
        Shared {
            home,
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// Runs `f` on a freshly opened engine acting for `actor`, on a
    /// blocking thread.
    pub async fn engine_as<T: Send + 'static>(
        &self,
        actor: Actor,
        f: impl FnOnce(&mut Engine) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let home = self.home.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut engine = Engine::open(home, Arc::new(Quiet))?;
            engine.act_as(actor);
            f(&mut engine)
        })
        .await
        .map_err(|e| ApiError::internal(format!("an engine worker failed: {e}")))?;
        Ok(result?)
    }

    /// Records a use of branch `name` now by `actor` (see
    /// [`pgfork_engine::activity::touch_as`]); a failure is only logged.
    pub async fn touch(&self, actor: &Actor, name: String) {
        let home = self.home.clone();
        let actor = actor.clone();
        let touched = tokio::task::spawn_blocking(move || {
            pgfork_engine::activity::touch_as(&home, &actor, &name)
        })
        .await;
        if let Ok(Err(e)) = touched {
            tracing::warn!("recording a branch's activity: {e}");
        }
    }
}

/// What a request handler or MCP tool works with: the shared state, and the
/// identity whose token came with the request, whose scope every engine
/// call obeys.
#[derive(Clone)]
pub struct Scoped {
    /// The shared state.
    pub shared: Shared,
    /// Who is asking.
    pub actor: Actor,
}

impl std::ops::Deref for Scoped {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl<S> FromRequestParts<S> for Scoped
where
    S: Send + Sync,
    Shared: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Scoped, ApiError> {
        // The token check put it there; a route it skipped has none.
        let actor = parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Scoped {
            shared: Shared::from_ref(state),
            actor,
        })
    }
}

impl Scoped {
    /// Runs `f` on an engine acting for the request's identity.
    pub async fn engine<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.shared.engine_as(self.actor.clone(), f).await
    }

    /// Creates a branch and records the outcome in the metrics.
    pub async fn create_branch(
        &self,
        req: pgfork_engine::BranchCreate,
    ) -> Result<pgfork_engine::BranchInfo, ApiError> {
        let result = self.engine(move |e| e.branch_create(&req)).await;
        match &result {
            Ok(info) => self.shared.metrics.branch_created(info.timings.as_ref()),
            Err(e) => self.shared.metrics.branch_create_failed(e.code),
        }
        result
    }

    /// Starts a branch, recording how long a stopped one took to wake.
    pub async fn start_branch(&self, name: String) -> Result<pgfork_engine::BranchInfo, ApiError> {
        let metrics = self.shared.metrics.clone();
        // The engine records the start (or the request, if it was running)
        // as a use of the branch.
        self.engine(move |e| {
            let before = e.branch_info(&name)?;
            if before.status == "running" {
                return Ok(before);
            }
            let began = Instant::now();
            let info = e.branch_start(&name)?;
            metrics.branch_woken(began.elapsed());
            Ok(info)
        })
        .await
    }
}
