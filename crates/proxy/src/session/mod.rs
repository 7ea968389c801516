//! One client session after login, run by one task that owns both
//! connections (see [`conductor`]).
//!
//! The server decides, the proxy's parse only explains: every statement
//! reaches the server alone, in an extended-protocol `Parse` (which the
//! server refuses if it holds two), and every `CommandComplete` and
//! `ReadyForQuery` the server sends is checked against the policy. In
//! `read-only` and `dry-run` the transactions are the proxy's own: it opens
//! them (`BEGIN READ ONLY`, `BEGIN`) and ends them (`COMMIT`, `ROLLBACK`),
//! and simulates the client's `BEGIN`/`COMMIT`/`ROLLBACK` (see [`txn`]).

mod budget;
mod conductor;
mod extended;
mod guard;
pub mod limits;
mod pump;
mod record;
mod simple;
mod txn;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::audit::AuditSink;
use crate::policy::Rules;
use crate::upstream::{Address, Upstream};
use crate::wire::FrameReader;
use crate::wire::backend::ErrorFields;
pub use limits::Limits;

/// Who a session is, for its audit records.
pub struct SessionInfo {
    /// Agent name.
    pub agent: String,
    /// Session id.
    pub session: String,
    /// Client address.
    pub client: String,
    /// Branch or source reached.
    pub target: String,
    /// Policy name.
    pub policy: String,
    /// Where records go.
    pub audit: AuditSink,
    /// Last transaction status the server reported.
    pub last_status: Arc<AtomicU8>,
    /// Whether the server owes responses (a query may be running).
    pub busy: Arc<AtomicBool>,
}

impl SessionInfo {
    /// The last transaction status seen.
    pub fn status(&self) -> u8 {
        self.last_status.load(Ordering::Acquire)
    }
}

/// How a session ended.
#[derive(Debug)]
pub enum Ended {
    /// The client left.
    Client,
    /// The client broke the protocol.
    BadInput(String),
    /// The server closed the connection or broke the protocol.
    Server(String),
    /// The session was ended by pgfork (revoked agent, shutdown).
    Killed,
    /// The proxy ended it: the server did what the policy forbids, a
    /// setting the parser cannot follow changed, or a time limit ran out.
    Policy(String),
}

/// Runs a logged-in session until it ends. `server_addr` and the
/// upstream's key let the proxy cancel a running statement (a time limit,
/// a client that vanished); `kill` ends the session at once (a revoked
/// agent, shutdown).
#[allow(clippy::too_many_arguments)]
pub async fn run<CR, CW>(
    client_reader: FrameReader<CR>,
    client_writer: CW,
    upstream: Upstream,
    server_addr: Address,
    info: Arc<SessionInfo>,
    rules: Rules,
    limits: Limits,
    kill: watch::Receiver<bool>,
    max_message: usize,
) -> Ended
where
    CR: AsyncRead + Unpin + Send + 'static,
    CW: AsyncWrite + Unpin + Send + 'static,
{
    let conductor = conductor::Conductor::new(
        client_reader,
        client_writer,
        upstream,
        server_addr,
        info,
        rules,
        limits,
        kill,
        max_message,
    );
    match conductor {
        Ok(c) => c.run().await,
        Err(e) => Ended::Policy(e),
    }
}

/// Writes a fatal error to a client before closing.
pub async fn fatal<W: AsyncWrite + Unpin>(w: &mut W, code: &str, message: &str) {
    let _ = w
        .write_all(&ErrorFields::fatal(code, message).to_error())
        .await;
    let _ = w.flush().await;
}
