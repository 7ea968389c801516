//! Server messages: the ones the proxy writes itself, and checked decoding
//! of the ones it looks into.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Reader, WireError};

/// Fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// `ERROR`, `FATAL`, `NOTICE`, ...
    pub severity: String,
    /// SQLSTATE.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Detail, if any.
    pub detail: Option<String>,
    /// Hint, if any.
    pub hint: Option<String>,
}

impl ErrorFields {
    /// An error with SQLSTATE `code`.
    pub fn error(code: &str, message: impl Into<String>) -> ErrorFields {
        ErrorFields {
            severity: "ERROR".into(),
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A fatal error (the session ends).
    pub fn fatal(code: &str, message: impl Into<String>) -> ErrorFields {
        ErrorFields {
            severity: "FATAL".into(),
            ..ErrorFields::error(code, message)
        }
    }

    /// With a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> ErrorFields {
        self.hint = Some(hint.into());
        self
    }

    /// Decodes the body of an `E` or `N` message.
    pub fn decode(body: &[u8]) -> Result<ErrorFields, WireError> {
        let mut r = Reader::new(body);
        let mut f = ErrorFields::default();
        loop {
            let kind = r.u8()?;
            if kind == 0 {
                break;
            }
            let value = r.cstr()?;
            match kind {
                b'V' => f.severity = value,
                b'S' if f.severity.is_empty() => f.severity = value,
                b'C' => f.code = value,
                b'M' => f.message = value,
                b'D' => f.detail = Some(value),
                b'H' => f.hint = Some(value),
                _ => {}
            }
        }
        Ok(f)
    }

    fn encode(&self, tag: u8, out: &mut BytesMut) {
        let mut b = BytesMut::new();
        let mut field = |k: u8, v: &str| {
            b.put_u8(k);
            b.put_slice(v.as_bytes());
            b.put_u8(0);
        };
        field(b'S', &self.severity);
        field(b'V', &self.severity);
        field(b'C', &self.code);
        field(b'M', &self.message);
        if let Some(d) = &self.detail {
            field(b'D', d);
        }
        if let Some(h) = &self.hint {
            field(b'H', h);
        }
        b.put_u8(0);
        frame(tag, &b, out);
    }

    /// As an ErrorResponse frame.
    pub fn to_error(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(b'E', &mut out);
        out.freeze()
    }

    /// As a NoticeResponse frame.
    pub fn to_notice(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(b'N', &mut out);
        out.freeze()
    }
}

/// Appends a frame with `tag` and `body`.
pub fn frame(tag: u8, body: &[u8], out: &mut BytesMut) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

/// ReadyForQuery with a transaction status (`I`, `T`, `E`).
pub fn ready_for_query(status: u8) -> Bytes {
    let mut out = BytesMut::with_capacity(6);
    frame(b'Z', &[status], &mut out);
    out.freeze()
}

/// An authentication request: code and data.
pub fn authentication(code: i32, data: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i32(code);
    b.put_slice(data);
    let mut out = BytesMut::new();
    frame(b'R', &b, &mut out);
    out.freeze()
}

/// BackendKeyData.
pub fn backend_key_data(pid: i32, key: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i32(pid);
    b.put_i32(key);
    let mut out = BytesMut::new();
    frame(b'K', &b, &mut out);
    out.freeze()
}

/// ParameterStatus.
pub fn parameter_status(name: &str, value: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_slice(name.as_bytes());
    b.put_u8(0);
    b.put_slice(value.as_bytes());
    b.put_u8(0);
    let mut out = BytesMut::new();
    frame(b'S', &b, &mut out);
    out.freeze()
}

/// NegotiateProtocolVersion: the newest minor version spoken and the
/// startup options not recognised.
pub fn negotiate_protocol_version(minor: i32, unknown: &[String]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i32(minor);
    b.put_i32(unknown.len() as i32);
    for o in unknown {
        b.put_slice(o.as_bytes());
        b.put_u8(0);
    }
    let mut out = BytesMut::new();
    frame(b'v', &b, &mut out);
    out.freeze()
}

/// A CommandComplete tag split into its command and row count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The whole tag, e.g. `INSERT 0 5`.
    pub tag: String,
    /// The command word(s), e.g. `INSERT`.
    pub command: String,
    /// Rows, when the tag carries a count.
    pub rows: Option<u64>,
}

impl Completion {
    /// Decodes a CommandComplete body.
    pub fn decode(body: &[u8]) -> Result<Completion, WireError> {
        let tag = Reader::new(body).cstr()?;
        let mut words: Vec<&str> = tag.split(' ').collect();
        let rows = match words.last().map(|w| w.parse::<u64>()) {
            Some(Ok(n)) if words.len() > 1 => {
                words.pop();
                // `INSERT oid rows`: drop the oid too.
                if words.first() == Some(&"INSERT") && words.len() > 1 {
                    words.pop();
                }
                Some(n)
            }
            _ => None,
        };
        Ok(Completion {
            command: words.join(" "),
            rows,
            tag,
        })
    }

    /// Whether the command changes rows (what the max-rows budget counts).
    pub fn is_write(&self) -> bool {
        matches!(
            self.command.as_str(),
            "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY"
        )
    }
}

/// The transaction status in a ReadyForQuery body.
pub fn ready_status(body: &[u8]) -> Result<u8, WireError> {
    let mut r = Reader::new(body);
    let s = r.u8()?;
    if !matches!(s, b'I' | b'T' | b'E') {
        return Err(WireError::Malformed("unknown transaction status"));
    }
    Ok(s)
}

/// Decodes BackendKeyData: process id and secret key.
pub fn decode_key_data(body: &[u8]) -> Result<(i32, Vec<u8>), WireError> {
    let mut r = Reader::new(body);
    let pid = r.i32()?;
    let n = r.remaining();
    let key = r.take_rest(n)?;
    Ok((pid, key))
}

impl Reader<'_> {
    fn take_rest(&mut self, n: usize) -> Result<Vec<u8>, WireError> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.u8()?);
        }
        Ok(v)
    }
}

/// Decodes an Authentication message: its code and the rest.
pub fn decode_auth(body: &Bytes) -> Result<(i32, Bytes), WireError> {
    let mut r = Reader::new(body);
    let code = r.i32()?;
    Ok((code, body.slice(4..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_tags() {
        let c = |t: &str| {
            let mut b = t.as_bytes().to_vec();
            b.push(0);
            Completion::decode(&b).unwrap()
        };
        assert_eq!(c("INSERT 0 5").rows, Some(5));
        assert_eq!(c("INSERT 0 5").command, "INSERT");
        assert_eq!(c("UPDATE 12").rows, Some(12));
        assert_eq!(c("SELECT 3").command, "SELECT");
        assert_eq!(c("CREATE TABLE").rows, None);
        assert_eq!(c("CREATE TABLE").command, "CREATE TABLE");
        assert!(c("DELETE 1").is_write());
        assert!(!c("SELECT 1").is_write());
    }

    #[test]
    fn errors_round_trip() {
        let e = ErrorFields::error("25006", "no").hint("h");
        let bytes = e.to_error();
        let back = ErrorFields::decode(&bytes[5..]).unwrap();
        assert_eq!(back, e);
    }
}
