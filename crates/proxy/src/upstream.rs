//! The proxy's own connection to a server: over TCP to a branch (with the
//! branch's application-role password, SCRAM), or over a source's unix
//! socket (which only pgfork can enter; no password).

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::wire::backend::{ErrorFields, decode_auth, decode_key_data};
use crate::wire::{FrameReader, WireError};

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// Host and port.
    Tcp(String, u16),
    /// Unix socket directory and port.
    Unix(PathBuf, u16),
}

/// How to log in to a server. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Login {
    /// Where.
    pub address: Address,
    /// Role.
    pub user: String,
    /// Password (none over the unix socket).
    pub password: Option<String>,
    /// Database.
    pub database: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{:?}/{}", self.user, self.address, self.database)
    }
}

/// Why the proxy could not reach a server.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting failed.
    #[error("cannot connect to the server: {0}")]
    Connect(io::Error),
    /// The server refused the login or the session.
    #[error("the server refused the session: {}", .0.message)]
    Refused(ErrorFields),
    /// The server sent something the proxy did not expect.
    #[error("protocol error from the server: {0}")]
    Protocol(String),
    /// Reading failed.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// A byte stream over TCP or a unix socket.
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket.
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Read and write halves of a [`Stream`], owned, for two tasks.
pub type Halves = (
    Box<dyn AsyncRead + Send + Unpin>,
    Box<dyn AsyncWrite + Send + Unpin>,
);

impl Stream {
    /// Opens a connection.
    pub async fn connect(address: &Address) -> io::Result<Stream> {
        Ok(match address {
            Address::Tcp(host, port) => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Address::Unix(dir, port) => {
                Stream::Unix(UnixStream::connect(pgfork_pg::server::socket_path(dir, *port)).await?)
            }
        })
    }

    /// Splits into owned halves.
    pub fn split(self) -> Halves {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
        }
    }
}

/// A logged-in server session, ready for queries.
pub struct Upstream {
    /// The connection.
    pub reader: FrameReader<Stream>,
    /// ParameterStatus frames the server sent at login.
    pub parameters: Vec<Bytes>,
    /// The server's process id and cancel key.
    pub key: (i32, Vec<u8>),
}

/// Sends a CancelRequest for `key` to the server at `address`.
pub async fn cancel(address: &Address, pid: i32, key: &[u8]) -> io::Result<()> {
    let mut s = Stream::connect(address).await?;
    let mut buf = BytesMut::new();
    if key.len() == 4 {
        frontend::cancel_request(
            pid,
            i32::from_be_bytes([key[0], key[1], key[2], key[3]]),
            &mut buf,
        );
    } else {
        // Protocol 3.2 keys are longer; write the packet by hand.
        use bytes::BufMut;
        buf.put_i32(12 + key.len() as i32 - 4);
        buf.put_i32(crate::wire::frontend::CANCEL_REQUEST);
        buf.put_i32(pid);
        buf.put_slice(key);
    }
    s.write_all(&buf).await?;
    s.flush().await
}

/// Connects and logs in with `params` (startup parameters besides user
/// and database), up to the first ReadyForQuery.
pub async fn connect(
    login: &Login,
    params: &[(String, String)],
    max_message: usize,
) -> Result<Upstream, UpstreamError> {
    let mut stream = Stream::connect(&login.address)
        .await
        .map_err(UpstreamError::Connect)?;
    let mut buf = BytesMut::new();
    let mut all: Vec<(&str, &str)> = vec![("user", &login.user), ("database", &login.database)];
    all.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    frontend::startup_message(all, &mut buf).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    stream
        .write_all(&buf)
        .await
        .map_err(UpstreamError::Connect)?;
    let mut reader = FrameReader::new(stream, max_message);
    let mut scram: Option<ScramSha256> = None;
    let mut parameters = Vec::new();
    let mut key = (0, Vec::new());
    loop {
        let frame = reader.next().await?.ok_or_else(|| {
            UpstreamError::Protocol("the server closed the connection during login".into())
        })?;
        match frame.tag {
            b'R' => {
                let (code, data) = decode_auth(&frame.body)?;
                let mut out = BytesMut::new();
                let password = login.password.as_deref().unwrap_or("");
                match code {
                    0 => continue,
                    3 => frontend::password_message(password.as_bytes(), &mut out),
                    5 => {
                        let salt: [u8; 4] = data
                            .get(..4)
                            .and_then(|s| s.try_into().ok())
                            .ok_or_else(|| UpstreamError::Protocol("short MD5 salt".into()))?;
                        let hash = postgres_protocol::authentication::md5_hash(
                            login.user.as_bytes(),
                            password.as_bytes(),
                            salt,
                        );
                        frontend::password_message(hash.as_bytes(), &mut out)
                    }
                    10 => {
                        let s =
                            ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                        let r = frontend::sasl_initial_response(
                            crate::scram::MECHANISM,
                            s.message(),
                            &mut out,
                        );
                        scram = Some(s);
                        r
                    }
                    11 => {
                        let s = scram.as_mut().ok_or_else(|| {
                            UpstreamError::Protocol("SASL continue before start".into())
                        })?;
                        s.update(&data)
                            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                        frontend::sasl_response(s.message(), &mut out)
                    }
                    12 => {
                        let s = scram.as_mut().ok_or_else(|| {
                            UpstreamError::Protocol("SASL final before start".into())
                        })?;
                        s.finish(&data)
                            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                        continue;
                    }
                    other => {
                        return Err(UpstreamError::Protocol(format!(
                            "authentication method {other} is not supported"
                        )));
                    }
                }
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                reader
                    .get_mut()
                    .write_all(&out)
                    .await
                    .map_err(UpstreamError::Connect)?;
            }
            b'E' => return Err(UpstreamError::Refused(ErrorFields::decode(&frame.body)?)),
            b'S' => parameters.push(frame.raw),
            b'K' => key = decode_key_data(&frame.body)?,
            b'Z' => {
                return Ok(Upstream {
                    reader,
                    parameters,
                    key,
                });
            }
            // Notices and NegotiateProtocolVersion during login: nothing to do.
            _ => {}
        }
    }
}
