//! Messages a client sends, one typed struct each, decoded from a frame
//! body by a reader that checks every length: no input makes it panic.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Reader, WireError};

/// `Q`: a simple query (one or more statements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The query string, in the client's encoding.
    pub sql: Bytes,
}

/// `P`: prepares a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse {
    /// Statement name (`""`: the unnamed statement).
    pub name: String,
    /// The statement text, in the client's encoding.
    pub sql: Bytes,
    /// Parameter type OIDs (0: unspecified).
    pub param_types: Vec<u32>,
}

/// `B`: binds parameters to a prepared statement, making a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Portal name.
    pub portal: String,
    /// Statement name.
    pub statement: String,
    /// Format codes of the parameters (0 text, 1 binary).
    pub param_formats: Vec<i16>,
    /// Parameter values (`None`: NULL).
    pub params: Vec<Option<Bytes>>,
    /// Format codes of the result columns.
    pub result_formats: Vec<i16>,
}

/// `E`: runs a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execute {
    /// Portal name.
    pub portal: String,
    /// Most rows to return (0: all).
    pub max_rows: i32,
}

/// `D` or `C`: which object a Describe or Close is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `S` (statement) or `P` (portal).
    pub kind: u8,
    /// Its name.
    pub name: String,
}

/// `F`: the legacy function call message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall {
    /// OID of the function.
    pub oid: u32,
}

/// A message from the client after startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend {
    /// `Q`.
    Query(Query),
    /// `P`.
    Parse(Parse),
    /// `B`.
    Bind(Bind),
    /// `E`.
    Execute(Execute),
    /// `D`.
    Describe(Target),
    /// `C`.
    Close(Target),
    /// `S`.
    Sync,
    /// `H`.
    Flush,
    /// `X`.
    Terminate,
    /// `d`: a chunk of COPY FROM STDIN data.
    CopyData(Bytes),
    /// `c`.
    CopyDone,
    /// `f`: the client aborts a COPY FROM STDIN.
    CopyFail(String),
    /// `F`.
    FunctionCall(FunctionCall),
    /// `p`: a password or SASL message (only meaningful during login).
    Password(Bytes),
}

impl Frontend {
    /// Decodes the body of a frame with tag `tag`.
    pub fn decode(tag: u8, body: Bytes) -> Result<Frontend, WireError> {
        let mut r = Reader::new(&body);
        let msg = match tag {
            b'Q' => Frontend::Query(Query {
                sql: Bytes::copy_from_slice(r.cstr_bytes()?),
            }),
            b'P' => {
                let name = r.cstr()?;
                let sql = Bytes::copy_from_slice(r.cstr_bytes()?);
                let n = r.count16()?;
                let mut param_types = Vec::with_capacity(n.min(r.remaining() / 4));
                for _ in 0..n {
                    param_types.push(r.u32()?);
                }
                Frontend::Parse(Parse {
                    name,
                    sql,
                    param_types,
                })
            }
            b'B' => {
                let portal = r.cstr()?;
                let statement = r.cstr()?;
                let n = r.count16()?;
                let mut param_formats = Vec::with_capacity(n.min(r.remaining() / 2));
                for _ in 0..n {
                    param_formats.push(r.i16()?);
                }
                let n = r.count16()?;
                let mut params = Vec::with_capacity(n.min(r.remaining() / 4));
                for _ in 0..n {
                    let len = r.i32()?;
                    if len == -1 {
                        params.push(None);
                    } else if len < 0 {
                        return Err(WireError::Malformed("negative parameter length"));
                    } else {
                        let at = r.position();
                        r.skip(len as usize)?;
                        params.push(Some(body.slice(at..at + len as usize)));
                    }
                }
                let n = r.count16()?;
                let mut result_formats = Vec::with_capacity(n.min(r.remaining() / 2));
                for _ in 0..n {
                    result_formats.push(r.i16()?);
                }
                Frontend::Bind(Bind {
                    portal,
                    statement,
                    param_formats,
                    params,
                    result_formats,
                })
            }
            b'E' => Frontend::Execute(Execute {
                portal: r.cstr()?,
                max_rows: r.i32()?,
            }),
            b'D' | b'C' => {
                let kind = r.u8()?;
                if kind != b'S' && kind != b'P' {
                    return Err(WireError::Malformed("Describe/Close of neither S nor P"));
                }
                let t = Target {
                    kind,
                    name: r.cstr()?,
                };
                if tag == b'D' {
                    Frontend::Describe(t)
                } else {
                    Frontend::Close(t)
                }
            }
            b'S' => Frontend::Sync,
            b'H' => Frontend::Flush,
            b'X' => Frontend::Terminate,
            b'd' => return Ok(Frontend::CopyData(body)),
            b'c' => Frontend::CopyDone,
            b'f' => Frontend::CopyFail(String::from_utf8_lossy(r.cstr_bytes()?).into_owned()),
            b'F' => {
                let oid = r.u32()?;
                r.skip(r.remaining())?;
                Frontend::FunctionCall(FunctionCall { oid })
            }
            b'p' => return Ok(Frontend::Password(body)),
            other => return Err(WireError::UnknownMessage(other)),
        };
        if r.remaining() != 0 {
            return Err(WireError::Malformed("trailing bytes after the message"));
        }
        Ok(msg)
    }

    /// Encodes the message as a whole frame (tag, length, body).
    pub fn encode(&self, out: &mut BytesMut) {
        let (tag, body) = match self {
            Frontend::Query(q) => (b'Q', bytes_body(&[&q.sql])),
            Frontend::Parse(p) => {
                let mut b = bytes_body(&[p.name.as_bytes(), &p.sql]);
                b.put_i16(p.param_types.len() as i16);
                for t in &p.param_types {
                    b.put_u32(*t);
                }
                (b'P', b)
            }
            Frontend::Bind(bind) => {
                let mut b = cstr_body(&[&bind.portal, &bind.statement]);
                b.put_i16(bind.param_formats.len() as i16);
                for f in &bind.param_formats {
                    b.put_i16(*f);
                }
                b.put_i16(bind.params.len() as i16);
                for p in &bind.params {
                    match p {
                        None => b.put_i32(-1),
                        Some(v) => {
                            b.put_i32(v.len() as i32);
                            b.put_slice(v);
                        }
                    }
                }
                b.put_i16(bind.result_formats.len() as i16);
                for f in &bind.result_formats {
                    b.put_i16(*f);
                }
                (b'B', b)
            }
            Frontend::Execute(e) => {
                let mut b = cstr_body(&[&e.portal]);
                b.put_i32(e.max_rows);
                (b'E', b)
            }
            Frontend::Describe(t) | Frontend::Close(t) => {
                let mut b = BytesMut::new();
                b.put_u8(t.kind);
                b.put_slice(t.name.as_bytes());
                b.put_u8(0);
                let tag = if matches!(self, Frontend::Describe(_)) {
                    b'D'
                } else {
                    b'C'
                };
                (tag, b)
            }
            Frontend::Sync => (b'S', BytesMut::new()),
            Frontend::Flush => (b'H', BytesMut::new()),
            Frontend::Terminate => (b'X', BytesMut::new()),
            Frontend::CopyData(d) => (b'd', BytesMut::from(&d[..])),
            Frontend::CopyDone => (b'c', BytesMut::new()),
            Frontend::CopyFail(m) => (b'f', cstr_body(&[m])),
            Frontend::FunctionCall(f) => {
                let mut b = BytesMut::new();
                b.put_u32(f.oid);
                (b'F', b)
            }
            Frontend::Password(p) => (b'p', BytesMut::from(&p[..])),
        };
        out.put_u8(tag);
        out.put_i32(body.len() as i32 + 4);
        out.put_slice(&body);
    }
}

fn cstr_body(parts: &[&str]) -> BytesMut {
    let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    bytes_body(&parts)
}

fn bytes_body(parts: &[&[u8]]) -> BytesMut {
    let mut b = BytesMut::new();
    for p in parts {
        b.put_slice(p);
        b.put_u8(0);
    }
    b
}

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// A session: protocol version and parameters (`user`, `database`, ...).
    Session {
        /// Minor protocol version asked for (3.x).
        minor: u16,
        /// Parameters in order.
        params: Vec<(String, String)>,
    },
    /// Asks for TLS.
    SslRequest,
    /// Asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancels the query of another session.
    Cancel {
        /// Process id the proxy handed out.
        pid: i32,
        /// Secret key the proxy handed out.
        key: i32,
    },
}

/// Protocol code of SSLRequest.
pub const SSL_REQUEST: i32 = 80877103;
/// Protocol code of GSSENCRequest.
pub const GSSENC_REQUEST: i32 = 80877104;
/// Protocol code of CancelRequest.
pub const CANCEL_REQUEST: i32 = 80877102;

impl Startup {
    /// Decodes a startup packet body (after its length word).
    pub fn decode(body: &[u8]) -> Result<Startup, WireError> {
        let mut r = Reader::new(body);
        let code = r.i32()?;
        let msg = match code {
            SSL_REQUEST => Startup::SslRequest,
            GSSENC_REQUEST => Startup::GssEncRequest,
            CANCEL_REQUEST => Startup::Cancel {
                pid: r.i32()?,
                // Protocol 3.2 allows longer keys; the proxy hands out 4 bytes.
                key: r.i32()?,
            },
            _ if code >> 16 == 3 => {
                let mut params = Vec::new();
                loop {
                    let name = r.cstr()?;
                    if name.is_empty() {
                        break;
                    }
                    let value = r.cstr()?;
                    params.push((name, value));
                }
                Startup::Session {
                    minor: (code & 0xffff) as u16,
                    params,
                }
            }
            _ => return Err(WireError::UnsupportedProtocol(code)),
        };
        if r.remaining() != 0 {
            return Err(WireError::Malformed(
                "trailing bytes after the startup packet",
            ));
        }
        Ok(msg)
    }

    /// Encodes the packet with its length word.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut b = BytesMut::new();
        match self {
            Startup::SslRequest => b.put_i32(SSL_REQUEST),
            Startup::GssEncRequest => b.put_i32(GSSENC_REQUEST),
            Startup::Cancel { pid, key } => {
                b.put_i32(CANCEL_REQUEST);
                b.put_i32(*pid);
                b.put_i32(*key);
            }
            Startup::Session { minor, params } => {
                b.put_i32((3 << 16) | i32::from(*minor));
                for (k, v) in params {
                    b.put_slice(k.as_bytes());
                    b.put_u8(0);
                    b.put_slice(v.as_bytes());
                    b.put_u8(0);
                }
                b.put_u8(0);
            }
        }
        out.put_i32(b.len() as i32 + 4);
        out.put_slice(&b);
    }
}

/// The SASL messages a client sends during login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitial {
    /// Mechanism chosen.
    pub mechanism: String,
    /// Its first message.
    pub data: Bytes,
}

impl SaslInitial {
    /// Decodes a `p` body sent as SASLInitialResponse.
    pub fn decode(body: &Bytes) -> Result<SaslInitial, WireError> {
        let mut r = Reader::new(body);
        let mechanism = r.cstr()?;
        let len = r.i32()?;
        if len < 0 {
            return Ok(SaslInitial {
                mechanism,
                data: Bytes::new(),
            });
        }
        let at = r.position();
        r.skip(len as usize)?;
        if r.remaining() != 0 {
            return Err(WireError::Malformed(
                "trailing bytes after SASLInitialResponse",
            ));
        }
        Ok(SaslInitial {
            mechanism,
            data: body.slice(at..at + len as usize),
        })
    }
}
