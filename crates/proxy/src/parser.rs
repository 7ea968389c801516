//! PostgreSQL's own parser, of the same major version as the servers the
//! proxy fronts (libpg_query, linked through the `pg_query` crate), read
//! as its JSON parse tree: every node of every statement, and where each
//! statement starts and ends in the bytes the client sent.
//!
//! The parser must read a query string exactly as the server does, or a
//! statement the proxy judges is not the statement the server runs. So:
//! - its major version is the server's ([`PARSER_MAJOR`]; a source of
//!   another major is refused, see [`check_server_version`]);
//! - the settings that change how the server splits a string are pinned
//!   (`standard_conforming_strings = on`, the parser's default) and the
//!   proxy watches that they stay so;
//! - the text is read in the client's encoding: only encodings in which
//!   no byte of a multibyte character is an ASCII byte are accepted
//!   ([`ClientEncoding`]), and for those the bytes are read as Latin-1,
//!   which keeps every ASCII byte (and so every quote, semicolon, comment
//!   and dollar-quote tag) where it was.

use std::ffi::{CStr, CString, c_char, c_int};

use serde_json::Value;

// The crate is linked for its static libpg_query only.
extern crate pg_query;

/// The major version of PostgreSQL whose grammar the proxy parses with.
pub const PARSER_MAJOR: u32 = 15;

#[repr(C)]
struct PgQueryError {
    message: *mut c_char,
    funcname: *mut c_char,
    filename: *mut c_char,
    lineno: c_int,
    cursorpos: c_int,
    context: *mut c_char,
}

#[repr(C)]
struct PgQueryParseResult {
    parse_tree: *mut c_char,
    stderr_buffer: *mut c_char,
    error: *mut PgQueryError,
}

unsafe extern "C" {
    fn pg_query_parse(input: *const c_char) -> PgQueryParseResult;
    fn pg_query_free_parse_result(result: PgQueryParseResult);
}

/// A client encoding, as far as parsing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEncoding {
    /// UTF8: the text is parsed as it is.
    Utf8,
    /// Another encoding in which every byte below 0x80 is ASCII (LATIN1,
    /// WIN1252, EUC_JP, KOI8R, SQL_ASCII, ...): parsed as Latin-1.
    AsciiSafe,
}

/// Encodings whose multibyte characters may hold ASCII bytes (a backslash
/// or a quote): PostgreSQL's own client refuses them as a client encoding
/// for the same reason, and so does the proxy.
const UNSAFE_ENCODINGS: &[&str] = &["SJIS", "BIG5", "GBK", "GB18030", "UHC", "JOHAB"];

impl ClientEncoding {
    /// The encoding a `client_encoding` value names, or an error naming it
    /// when the proxy cannot parse text in it safely.
    pub fn from_name(name: &str) -> Result<ClientEncoding, String> {
        let canonical: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_uppercase();
        if canonical == "UTF8" || canonical == "UNICODE" {
            return Ok(ClientEncoding::Utf8);
        }
        let unsafe_one = UNSAFE_ENCODINGS
            .iter()
            .any(|e| canonical == e.replace('_', "") || canonical == "SHIFTJIS" && *e == "SJIS")
            || matches!(
                canonical.as_str(),
                "WIN932"
                    | "WIN936"
                    | "WIN949"
                    | "WIN950"
                    | "CP932"
                    | "CP936"
                    | "CP949"
                    | "CP950"
                    | "SHIFTJIS2004"
            );
        if unsafe_one {
            return Err(format!(
                "client_encoding {name} is not allowed through the pgfork proxy: its multibyte characters can \
                 hold ASCII bytes, which makes statement boundaries ambiguous (PostgreSQL's own psql warns \
                 of the same); use UTF8"
            ));
        }
        Ok(ClientEncoding::AsciiSafe)
    }
}

/// One statement of a parsed string.
#[derive(Debug, Clone)]
pub struct RawStatement {
    /// Byte offset in the client's bytes.
    pub location: usize,
    /// Byte length in the client's bytes (to the end of the statement,
    /// without the semicolon).
    pub len: usize,
    /// The statement's node: `{"SelectStmt": {...}}`.
    pub node: Value,
}

/// Parses `sql` (the client's bytes, in `encoding`) into its statements.
/// An error is the parser's message: the caller refuses the string.
pub fn parse(sql: &[u8], encoding: ClientEncoding) -> Result<Vec<RawStatement>, String> {
    if sql.contains(&0) {
        return Err("the query string holds a NUL byte".into());
    }
    let (text, map) = match (encoding, std::str::from_utf8(sql)) {
        (ClientEncoding::Utf8, Ok(text)) => (text.to_string(), None),
        (ClientEncoding::Utf8, Err(_)) => {
            return Err("the query string is not valid UTF8, the client_encoding".into());
        }
        (ClientEncoding::AsciiSafe, _) => {
            let text: String = sql.iter().map(|&b| b as char).collect();
            (text, Some(Latin1Offsets::new(sql)))
        }
    };
    let mut tree = parse_json(&text)?;
    let stmts = match tree.get_mut("stmts").map(Value::take) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let to_client = |offset: usize| match &map {
        Some(m) => m.to_client(offset),
        None => offset,
    };
    let mut out = Vec::with_capacity(stmts.len());
    for mut raw in stmts {
        let location = raw
            .get("stmt_location")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        let len = raw.get("stmt_len").and_then(Value::as_u64).unwrap_or(0) as usize;
        let end = if len == 0 { text.len() } else { location + len };
        let (start, end) = (to_client(location), to_client(end.min(text.len())));
        out.push(RawStatement {
            location: start,
            len: end.saturating_sub(start),
            node: raw.get_mut("stmt").map(Value::take).unwrap_or(Value::Null),
        });
    }
    Ok(out)
}

/// The JSON parse tree of UTF-8 `text`.
fn parse_json(text: &str) -> Result<Value, String> {
    let input = CString::new(text).map_err(|_| "the query string holds a NUL byte".to_string())?;
    // SAFETY: a valid C string in; the result is freed below, after its
    // strings are copied out.
    let result = unsafe { pg_query_parse(input.as_ptr()) };
    let outcome = unsafe {
        if !result.error.is_null() {
            let e = &*result.error;
            let message = if e.message.is_null() {
                "syntax error".to_string()
            } else {
                CStr::from_ptr(e.message).to_string_lossy().into_owned()
            };
            Err(message)
        } else if result.parse_tree.is_null() {
            Err("the parser returned nothing".to_string())
        } else {
            Ok(CStr::from_ptr(result.parse_tree)
                .to_string_lossy()
                .into_owned())
        }
    };
    // SAFETY: the result came from pg_query_parse and is freed once.
    unsafe { pg_query_free_parse_result(result) };
    serde_json::from_str(&outcome?).map_err(|e| format!("unreadable parse tree: {e}"))
}

/// Offsets in the Latin-1 decoding of some bytes, back to the bytes.
struct Latin1Offsets {
    /// For each byte of the decoded text, the byte of the original it came from.
    to_client: Vec<usize>,
}

impl Latin1Offsets {
    fn new(bytes: &[u8]) -> Latin1Offsets {
        let mut to_client = Vec::with_capacity(bytes.len() + bytes.len() / 4);
        for (i, &b) in bytes.iter().enumerate() {
            to_client.push(i);
            if b >= 0x80 {
                to_client.push(i);
            }
        }
        to_client.push(bytes.len());
        Latin1Offsets { to_client }
    }

    fn to_client(&self, offset: usize) -> usize {
        self.to_client
            .get(offset)
            .copied()
            .unwrap_or_else(|| *self.to_client.last().unwrap_or(&0))
    }
}

/// Refuses a server whose major version is not the parser's: its grammar
/// may split or read a string differently.
pub fn check_server_version(server_version: &str) -> Result<(), String> {
    let major: u32 = server_version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major == PARSER_MAJOR {
        Ok(())
    } else {
        Err(format!(
            "the source runs PostgreSQL {server_version}, and this pgfork's proxy parses statements with \
             PostgreSQL {PARSER_MAJOR}'s grammar: a statement could read differently to the proxy and to \
             the server, so agents of this source are refused; use a pgfork built for PostgreSQL \
             {major}, or give the agent the branch policy on a source of version {PARSER_MAJOR}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_and_their_places() {
        let s = parse(
            b"SELECT 1; INSERT INTO t VALUES ('a;b') ;",
            ClientEncoding::Utf8,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[0].node.get("SelectStmt").is_some());
        assert_eq!((s[0].location, s[0].len), (0, 8));
        let sql = "SELECT 1; INSERT INTO t VALUES ('a;b') ;";
        assert_eq!(
            &sql[s[1].location..s[1].location + s[1].len],
            " INSERT INTO t VALUES ('a;b') "
        );
        assert!(parse(b"SELEC 1", ClientEncoding::Utf8).is_err());
        assert!(parse(b"SELECT '\xff'", ClientEncoding::Utf8).is_err());
    }

    #[test]
    fn ascii_safe_bytes_keep_their_places() {
        // LATIN9 text: an e-acute (0xE9) in a literal and in a dollar tag.
        let sql = b"SELECT '\xe9;'; SELECT $\xe9$ x $\xe8$ ; $\xe9$";
        let s = parse(sql, ClientEncoding::AsciiSafe).unwrap();
        assert_eq!(s.len(), 2, "{s:?}");
        let second = &sql[s[1].location..s[1].location + s[1].len];
        assert!(second.ends_with(b"$\xe9$"), "{second:?}");
    }

    #[test]
    fn encodings_that_hide_ascii_bytes_are_refused() {
        for bad in [
            "SJIS",
            "sjis",
            "Shift_JIS",
            "BIG5",
            "gbk",
            "GB18030",
            "UHC",
            "JOHAB",
            "WIN932",
        ] {
            assert!(ClientEncoding::from_name(bad).is_err(), "{bad}");
        }
        assert_eq!(ClientEncoding::from_name("utf-8"), Ok(ClientEncoding::Utf8));
        assert_eq!(
            ClientEncoding::from_name("LATIN9"),
            Ok(ClientEncoding::AsciiSafe)
        );
        assert_eq!(
            ClientEncoding::from_name("EUC_JP"),
            Ok(ClientEncoding::AsciiSafe)
        );
    }

    #[test]
    fn the_parser_is_the_servers_major() {
        assert!(check_server_version("15.18 (Debian 15.18-0+deb12u1)").is_ok());
        let err = check_server_version("16.4").unwrap_err();
        assert!(
            err.contains("PostgreSQL 16.4") && err.contains("15"),
            "{err}"
        );
    }
}
