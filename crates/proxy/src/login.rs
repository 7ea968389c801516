//! A client's way in: startup packet (answering SSL and GSS requests with
//! "no", routing cancel requests), SCRAM-SHA-256 against the agent's
//! verifier, and the same failure for an unknown agent, a revoked one or
//! a wrong secret.

use std::time::Duration;

use bytes::Bytes;
use pgfork_pool::meta::AgentRow;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::scram::{Exchange, MECHANISM, Verifier};
use crate::wire::FrameReader;
use crate::wire::backend::{authentication, negotiate_protocol_version};
use crate::wire::frontend::{SaslInitial, Startup};

/// What a client asked for in its startup packet.
#[derive(Debug, Clone)]
pub struct Hello {
    /// User name (the agent).
    pub user: String,
    /// Database.
    pub database: String,
    /// Other parameters.
    pub params: Vec<(String, String)>,
}

/// What the first packets were.
pub enum First {
    /// A session to log in.
    Session(Hello),
    /// A cancel request.
    Cancel(i32, i32),
    /// Nothing usable; the message says why (already sent to the client).
    Refused(String),
    /// The client closed before saying anything.
    Gone,
}

/// Startup parameters passed on to the server: harmless session settings.
/// Anything else (`options`, arbitrary settings, `replication`) could
/// undo what the proxy sets, so it is dropped.
pub const PASSED_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
];

/// Reads the startup packet(s).
pub async fn hello<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    reader: &mut FrameReader<R>,
    w: &mut W,
) -> First {
    loop {
        let body = match reader.startup().await {
            Ok(Some(b)) => b,
            Ok(None) => return First::Gone,
            Err(e) => {
                let msg = format!("invalid startup packet: {e}");
                crate::session::fatal(w, "08P01", &msg).await;
                return First::Refused(msg);
            }
        };
        let (minor, params) = match Startup::decode(&body) {
            // No TLS here: say so, and libpq-style clients carry on in clear
            // (or stop, if they require TLS).
            Ok(Startup::SslRequest) | Ok(Startup::GssEncRequest) => {
                if reader.buffered() > 0 {
                    // Bytes after an SSLRequest before our answer: a
                    // man-in-the-middle trick (CVE-2021-23222).
                    let msg = "unexpected data after an SSL request".to_string();
                    crate::session::fatal(w, "08P01", &msg).await;
                    return First::Refused(msg);
                }
                if w.write_all(b"N").await.is_err() {
                    return First::Gone;
                }
                continue;
            }
            Ok(Startup::Cancel { pid, key }) => return First::Cancel(pid, key),
            Ok(Startup::Session { minor, params }) => (minor, params),
            Err(e) => {
                let msg = format!("invalid startup packet: {e}");
                crate::session::fatal(w, "08P01", &msg).await;
                return First::Refused(msg);
            }
        };
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let Some(user) = get("user").filter(|u| !u.is_empty()) else {
            let msg = "no PostgreSQL user name specified in startup packet".to_string();
            crate::session::fatal(w, "28000", &msg).await;
            return First::Refused(msg);
        };
        if get("replication").is_some_and(|r| r != "false" && r != "0" && r != "off") {
            let msg = "the pgfork proxy does not accept replication connections".to_string();
            crate::session::fatal(w, "08P01", &msg).await;
            return First::Refused(msg);
        }
        let unknown: Vec<String> = params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.clone())
            .collect();
        if (minor > 0 || !unknown.is_empty())
            && w.write_all(&negotiate_protocol_version(0, &unknown))
                .await
                .is_err()
        {
            return First::Gone;
        }
        if let Some(enc) = get("client_encoding")
            && let Err(msg) = crate::parser::ClientEncoding::from_name(&enc)
        {
            crate::session::fatal(w, "0A000", &msg).await;
            return First::Refused(msg);
        }
        let database = get("database")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone());
        let params = params
            .into_iter()
            .filter(|(k, _)| PASSED_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
            .collect();
        return First::Session(Hello {
            user,
            database,
            params,
        });
    }
}

/// Runs SCRAM with `agent`'s verifier (or a mock one); true if the client
/// proved the secret. On failure the client has been told, without a hint
/// of which part was wrong.
pub async fn authenticate<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    reader: &mut FrameReader<R>,
    w: &mut W,
    user: &str,
    agent: Option<&AgentRow>,
    mock_secret: &[u8; 32],
) -> bool {
    let verifier = agent
        .filter(|a| a.revoked_at.is_none())
        .and_then(|a| Verifier::parse(&a.verifier).ok());
    let real = verifier.is_some();
    let verifier = verifier.unwrap_or_else(|| Verifier::mock(user, mock_secret));
    let ok = tokio::time::timeout(Duration::from_secs(30), exchange(reader, w, verifier))
        .await
        .unwrap_or(Err(()));
    match ok {
        Ok(server_final) if real => {
            let mut out = Vec::new();
            out.extend_from_slice(&authentication(12, server_final.as_bytes()));
            out.extend_from_slice(&authentication(0, &[]));
            w.write_all(&out).await.is_ok()
        }
        _ => {
            crate::session::fatal(
                w,
                "28P01",
                &format!("password authentication failed for user \"{user}\""),
            )
            .await;
            false
        }
    }
}

async fn exchange<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    reader: &mut FrameReader<R>,
    w: &mut W,
    verifier: Verifier,
) -> Result<String, ()> {
    let mut mechanisms = Vec::from(MECHANISM.as_bytes());
    mechanisms.extend_from_slice(b"\0\0");
    w.write_all(&authentication(10, &mechanisms))
        .await
        .map_err(|_| ())?;
    let first = password_message(reader).await?;
    let initial = SaslInitial::decode(&first).map_err(|_| ())?;
    if initial.mechanism != MECHANISM {
        return Err(());
    }
    let ex = Exchange::start(verifier, &initial.data).map_err(|_| ())?;
    w.write_all(&authentication(11, ex.server_first().as_bytes()))
        .await
        .map_err(|_| ())?;
    let last = password_message(reader).await?;
    ex.finish(&last).map_err(|_| ())
}

async fn password_message<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) -> Result<Bytes, ()> {
    match reader.next().await {
        Ok(Some(f)) if f.tag == b'p' => Ok(f.body),
        _ => Err(()),
    }
}
