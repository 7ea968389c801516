//! One client session after login: two halves joined by a queue of
//! entries (see [`entries`]), one reading the client ([`requests`]), one
//! reading the server ([`responses`]).

pub mod entries;
pub mod requests;
pub mod responses;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::audit::AuditSink;
use crate::policy::Rules;
use crate::upstream::{Address, Upstream};
use crate::wire::FrameReader;
use crate::wire::backend::ErrorFields;
use requests::{Closed, Limits, Requests};
use responses::{End, Responses};

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
    pub busy: Arc<std::sync::atomic::AtomicBool>,
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
    /// The server closed the connection.
    Server,
    /// The session was ended by pgfork (revoked agent, shutdown).
    Killed,
}

/// Runs a logged-in session until it ends. `server_addr` and `key` let a
/// client that vanishes mid-query have that query cancelled; `kill` ends
/// the session at once (a revoked agent).
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
    let key = upstream.key.clone();
    let (server_stream, buffered) = upstream.reader.into_parts();
    let (server_read, server_write) = server_stream.split();
    let server_reader = FrameReader::with_buffer(server_read, buffered, max_message);
    let tx = Arc::new(entries::Queue::default());
    let rx = tx.clone();
    let requests = Requests::new(client_reader, server_write, tx, info.clone(), rules, limits);
    let responses = Responses::new(client_writer, rx, info.clone(), info.last_status.clone());
    let mut req_task = tokio::spawn(requests.run());
    let mut resp_task = tokio::spawn(responses.run(server_reader, kill));
    let cancel = || {
        let (addr, key) = (server_addr.clone(), key.clone());
        tokio::spawn(async move {
            let _ = crate::upstream::cancel(&addr, key.0, &key.1).await;
        });
    };
    tokio::select! {
        r = &mut req_task => {
            let closed = r.map(|(c, _)| c).unwrap_or(Closed::ServerGone);
            match closed {
                Closed::Client => {
                    // The client is gone: whatever it started must not run on.
                    if info.busy.load(Ordering::Acquire) {
                        cancel();
                    }
                    resp_task.abort();
                    Ended::Client
                }
                Closed::BadInput(e) => {
                    // The fatal error is queued; let the server half write it.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut resp_task).await;
                    resp_task.abort();
                    cancel();
                    Ended::BadInput(e.to_string())
                }
                Closed::ServerGone => {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut resp_task).await;
                    resp_task.abort();
                    Ended::Server
                }
            }
        }
        r = &mut resp_task => {
            req_task.abort();
            match r.map(|(e, _)| e) {
                Ok(End::ServerGone(_)) => Ended::Server,
                Ok(End::Killed) => {
                    cancel();
                    Ended::Killed
                }
                Ok(End::ClientGone) | Err(_) => {
                    cancel();
                    Ended::Client
                }
                Ok(End::Done) => Ended::Client,
            }
        }
    }
}

/// Writes a fatal error to a client before closing.
pub async fn fatal<W: AsyncWrite + Unpin>(w: &mut W, code: &str, message: &str) {
    let _ = w
        .write_all(&ErrorFields::fatal(code, message).to_error())
        .await;
    let _ = w.flush().await;
}
