//! `pgfork serve` and `pgfork mcp`: the runtime, the listener, the router
//! with its token check, the MCP endpoint and the reaper.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use pgfork_engine::{Engine, Quiet};
use pgfork_pool::Home;
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

use tokio_util::sync::CancellationToken;

use crate::activity::touch_requested;
use crate::audit::audit_requests;
use crate::auth::{TokenCheck, require_token};
use crate::mcp::PgforkMcp;
use crate::reaper::{self, ReaperOptions};
use crate::state::Shared;

/// How `pgfork serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Whether a non-loopback address is allowed.
    pub allow_remote: bool,
    /// The reaper's settings.
    pub reaper: ReaperOptions,
    /// Where to POST each new promotion request, if anywhere.
    pub notify_url: Option<reqwest::Url>,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without `--allow-remote`.
    #[error(
        "{0} is not a loopback address: the API hands out database passwords, so pgfork listens on \
         127.0.0.1 unless you pass --allow-remote (and put TLS in front of it)"
    )]
    NotLoopback(SocketAddr),
    /// The home has no API token (made before tokens existed).
    #[error(
        "this home has no admin API token: run `pgfork token rotate` (or `pgfork token create --admin NAME`) to make one"
    )]
    NoToken,
    /// The home cannot be opened.
    #[error(transparent)]
    Engine(#[from] pgfork_engine::EngineError),
    /// Listening or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime, ServeError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| ServeError::Io {
            what: "start the async runtime".into(),
            source,
        })
}

/// The whole HTTP application: API routes, `/mcp`, the dashboard, and the
/// token check in front of everything but `/health` and the dashboard
/// (which has its sessions).
pub fn app(shared: Shared, allow_remote: bool, cancel: CancellationToken) -> axum::Router {
    let mut config = StreamableHttpServerConfig::default().with_cancellation_token(cancel);
    if allow_remote {
        // Host validation guards a loopback server against DNS
        // rebinding; a server meant to be reached by name has the token.
        config = config.disable_allowed_hosts();
    }
    let for_mcp = shared.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(PgforkMcp::new(for_mcp.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let token = Arc::new(TokenCheck::new(shared.home.clone()));
    let dashboard = crate::dashboard::router(crate::dashboard::Web {
        shared: shared.clone(),
        sessions: Arc::default(),
        tokens: token.clone(),
        counts: Arc::default(),
    });
    // The token check is the outer layer: only a request that passed it
    // counts as a use of a branch. It leaves the dashboard's paths to the
    // dashboard's session check.
    crate::routes::router()
        .route_service("/mcp", mcp)
        .layer(from_fn_with_state(shared.clone(), touch_requested))
        .layer(from_fn_with_state(shared.clone(), audit_requests))
        .with_state(shared)
        .merge(dashboard)
        .layer(from_fn_with_state(token, require_token))
}

/// Runs `pgfork serve` until SIGINT or SIGTERM.
pub fn serve(home: Home, opts: ServeOptions) -> Result<(), ServeError> {
    if !opts.listen.ip().is_loopback() && !opts.allow_remote {
        return Err(ServeError::NotLoopback(opts.listen));
    }
    // Fail now, not at the first request, on a home that cannot be used.
    drop(Engine::open(home.clone(), Arc::new(Quiet))?);
    if !pgfork_engine::has_admin_token(&home)? {
        return Err(ServeError::NoToken);
    }
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| ServeError::Io {
                what: format!("listen on {}", opts.listen),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Io {
            what: "read the listening address".into(),
            source,
        })?;
        let shared = Shared::new(home);
        let cancel = CancellationToken::new();
        let app = app(shared.clone(), opts.allow_remote, cancel.clone());
        let reaper = tokio::spawn(reaper::run(shared.clone(), opts.reaper));
        let sampler = tokio::spawn(reaper::sample_storage(shared.clone()));
        let notifier = opts
            .notify_url
            .clone()
            .map(|url| tokio::spawn(crate::notify::run(shared.clone(), url)));
        eprintln!(
            "pgfork serve: listening on http://{addr} (dashboard at http://{addr}/, MCP at http://{addr}/mcp)"
        );
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                // Open MCP event streams would hold a graceful shutdown.
                cancel.cancel();
            })
            .await
            .map_err(|source| ServeError::Io {
                what: "serve HTTP".into(),
                source,
            });
        reaper.abort();
        sampler.abort();
        if let Some(n) = notifier {
            n.abort();
        }
        served
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Runs `pgfork mcp`: the MCP server on stdin and stdout until the client
/// closes them.
pub fn mcp_stdio(home: Home, actor: pgfork_engine::Actor) -> Result<(), ServeError> {
    drop(Engine::open(home.clone(), Arc::new(Quiet))?);
    runtime()?.block_on(async move {
        let server = PgforkMcp::on_stdio(Shared::new(home), actor)
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| ServeError::Io {
                what: "start the MCP server on stdio".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        server.waiting().await.map_err(|e| ServeError::Io {
            what: "run the MCP server".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(())
    })
}
