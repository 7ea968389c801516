//! A protocol client written by hand, for attacks a driver cannot send:
//! messages out of order, pipelines without Sync, COPY data where no COPY
//! runs, fastpath calls, startup parameters of any kind.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

/// How long a reply may take before the test calls it a hang.
const PATIENCE: Duration = Duration::from_secs(30);

/// One backend message.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Its type byte.
    pub tag: u8,
    /// Its body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A field of an ErrorResponse or NoticeResponse.
    pub fn field(&self, code: u8) -> Option<String> {
        if !matches!(self.tag, b'E' | b'N') {
            return None;
        }
        let mut rest = &self.body[..];
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if c == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    /// The SQLSTATE of an ErrorResponse.
    pub fn code(&self) -> Option<String> {
        (self.tag == b'E').then(|| self.field(b'C')).flatten()
    }

    /// The text of a CommandComplete.
    pub fn command(&self) -> Option<String> {
        (self.tag == b'C').then(|| cstr(&self.body))
    }

    /// The status byte of a ReadyForQuery.
    pub fn status(&self) -> Option<u8> {
        (self.tag == b'Z')
            .then(|| self.body.first().copied())
            .flatten()
    }

    /// A one-line description, for failure messages.
    pub fn describe(&self) -> String {
        match self.tag {
            b'E' | b'N' => format!(
                "{} {} {}",
                self.tag as char,
                self.field(b'C').unwrap_or_default(),
                self.field(b'M').unwrap_or_default()
            ),
            b'C' => format!("C {}", self.command().unwrap_or_default()),
            b'Z' => format!("Z {}", self.status().map(|s| s as char).unwrap_or('?')),
            t => format!("{}", t as char),
        }
    }
}

/// What a run of messages got back.
#[derive(Debug, Default, Clone)]
pub struct Transcript {
    /// Every reply, in order.
    pub replies: Vec<Reply>,
    /// The proxy closed the connection.
    pub closed: bool,
}

impl Transcript {
    /// The SQLSTATEs of the errors, in order.
    pub fn errors(&self) -> Vec<String> {
        self.replies.iter().filter_map(Reply::code).collect()
    }

    /// The command tags, in order.
    pub fn commands(&self) -> Vec<String> {
        self.replies.iter().filter_map(Reply::command).collect()
    }

    /// The texts of the data rows' first columns.
    pub fn values(&self) -> Vec<Option<Vec<u8>>> {
        self.replies
            .iter()
            .filter(|r| r.tag == b'D')
            .map(|r| first_column(&r.body))
            .collect()
    }

    /// Short, for failure messages.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.replies.iter().map(Reply::describe).collect();
        if self.closed {
            parts.push("<closed>".into());
        }
        parts.join(" | ")
    }
}

/// A connection that speaks the protocol one message at a time.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects and logs in with SCRAM; `Err` holds the login's replies
    /// (an ErrorResponse, usually).
    pub fn connect(
        port: u16,
        user: &str,
        password: &str,
        db: &str,
        params: &[(&str, &str)],
    ) -> Result<Raw, Transcript> {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let mut body = 196608i32.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", db)].iter().chain(params) {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut startup = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        startup.extend_from_slice(&body);
        raw.write(&startup);
        let mut scram = None;
        let mut seen = Transcript::default();
        loop {
            let Some(r) = raw.read() else {
                seen.closed = true;
                return Err(seen);
            };
            match (r.tag, auth_code(&r)) {
                (b'R', Some(10)) => {
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    let first = s.message().to_vec();
                    let mut b = b"SCRAM-SHA-256\0".to_vec();
                    b.extend_from_slice(&(first.len() as i32).to_be_bytes());
                    b.extend_from_slice(&first);
                    raw.write(&frame(b'p', &b));
                    scram = Some(s);
                }
                (b'R', Some(11)) => {
                    let s = scram.as_mut().expect("SASL started");
                    s.update(&r.body[4..]).expect("server-first message");
                    raw.write(&frame(b'p', s.message()));
                }
                (b'R', Some(12)) => {
                    let mut s = scram.take().expect("SASL started");
                    s.finish(&r.body[4..]).expect("server signature");
                }
                (b'R', Some(0)) => {}
                (b'Z', _) => return Ok(raw),
                (b'E', _) => {
                    seen.replies.push(r);
                    seen.closed = raw.read().is_none();
                    return Err(seen);
                }
                _ => seen.replies.push(r),
            }
        }
    }

    /// Writes bytes as they are.
    pub fn write(&mut self, bytes: &[u8]) {
        // A proxy that already closed may refuse the bytes; the read that
        // follows says so.
        let _ = self.stream.write_all(bytes);
    }

    /// The next message, or None once the connection is closed.
    pub fn read(&mut self) -> Option<Reply> {
        let started = Instant::now();
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                assert!(len >= 4, "bad length from the proxy");
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    let body = self.buf[5..len + 1].to_vec();
                    self.buf.drain(..len + 1);
                    return Some(Reply { tag, body });
                }
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!(
                    "no reply from the proxy after {:?} ({e}): a hang",
                    started.elapsed()
                ),
            }
        }
    }

    /// Sends `bytes`, then reads until `readies` ReadyForQuery messages
    /// came or the connection closed.
    pub fn exchange(&mut self, bytes: &[u8], readies: usize) -> Transcript {
        self.write(bytes);
        self.collect(readies)
    }

    /// Reads until `readies` ReadyForQuery messages came or the
    /// connection closed.
    pub fn collect(&mut self, readies: usize) -> Transcript {
        let mut t = Transcript::default();
        let mut seen = 0;
        while seen < readies {
            match self.read() {
                Some(r) => {
                    seen += usize::from(r.tag == b'Z');
                    t.replies.push(r);
                }
                None => {
                    t.closed = true;
                    break;
                }
            }
        }
        t
    }

    /// Says goodbye.
    pub fn close(mut self) {
        self.write(&frame(b'X', &[]));
    }
}

fn auth_code(r: &Reply) -> Option<i32> {
    (r.body.len() >= 4).then(|| i32::from_be_bytes(r.body[..4].try_into().unwrap()))
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn first_column(body: &[u8]) -> Option<Vec<u8>> {
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    (len >= 0).then(|| body[6..6 + len as usize].to_vec())
}

/// A message with type byte `tag`.
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn with_nul(mut b: Vec<u8>, s: &[u8]) -> Vec<u8> {
    b.extend_from_slice(s);
    b.push(0);
    b
}

/// Query (simple protocol), text given as bytes (any encoding).
pub fn query_bytes(sql: &[u8]) -> Vec<u8> {
    frame(b'Q', &with_nul(vec![], sql))
}

/// Query (simple protocol).
pub fn query(sql: &str) -> Vec<u8> {
    query_bytes(sql.as_bytes())
}

/// Parse of statement `name`.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = with_nul(with_nul(vec![], name.as_bytes()), sql.as_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'P', &b)
}

/// Bind of statement `stmt` to `portal`, parameters as text.
pub fn bind(portal: &str, stmt: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut b = with_nul(with_nul(vec![], portal.as_bytes()), stmt.as_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v.as_bytes());
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'B', &b)
}

/// Describe of portal `name`.
pub fn describe_portal(name: &str) -> Vec<u8> {
    frame(b'D', &with_nul(vec![b'P'], name.as_bytes()))
}

/// Describe of statement `name`.
pub fn describe_statement(name: &str) -> Vec<u8> {
    frame(b'D', &with_nul(vec![b'S'], name.as_bytes()))
}

/// Execute of `portal`, at most `max_rows` rows (0: all).
pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = with_nul(vec![], portal.as_bytes());
    b.extend_from_slice(&max_rows.to_be_bytes());
    frame(b'E', &b)
}

/// Close of statement `name`.
pub fn close_statement(name: &str) -> Vec<u8> {
    frame(b'C', &with_nul(vec![b'S'], name.as_bytes()))
}

/// Close of portal `name`.
pub fn close_portal(name: &str) -> Vec<u8> {
    frame(b'C', &with_nul(vec![b'P'], name.as_bytes()))
}

/// Sync.
pub fn sync() -> Vec<u8> {
    frame(b'S', &[])
}

/// Flush.
pub fn flush() -> Vec<u8> {
    frame(b'H', &[])
}

/// CopyData.
pub fn copy_data(data: &[u8]) -> Vec<u8> {
    frame(b'd', data)
}

/// CopyDone.
pub fn copy_done() -> Vec<u8> {
    frame(b'c', &[])
}

/// CopyFail.
pub fn copy_fail(why: &str) -> Vec<u8> {
    frame(b'f', &with_nul(vec![], why.as_bytes()))
}

/// FunctionCall (fastpath) of function `oid` with text arguments.
pub fn function_call(oid: u32, args: &[&str]) -> Vec<u8> {
    let mut b = oid.to_be_bytes().to_vec();
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(args.len() as i16).to_be_bytes());
    for a in args {
        b.extend_from_slice(&(a.len() as i32).to_be_bytes());
        b.extend_from_slice(a.as_bytes());
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'F', &b)
}

/// Parse, Bind, Describe, Execute of the unnamed statement and portal:
/// one statement in the extended protocol, without Sync.
pub fn extended(sql: &str) -> Vec<u8> {
    [
        parse("", sql),
        bind("", "", &[]),
        describe_portal(""),
        execute("", 0),
    ]
    .concat()
}
