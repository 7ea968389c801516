//! Request bodies and query strings, read so that a malformed request gets
//! a 400 that names the field at fault (axum's own `Json` rejection does
//! not, for a value of the wrong type).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body read (requests are small JSON documents).
const MAX_BODY: usize = 1 << 20;

/// Most changed rows a diff lists per table, through the API or MCP (the
/// counts are complete whatever the limit).
pub const MAX_DIFF_ROWS: usize = 10_000;

/// A JSON request body.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(ApiError::bad_request(
                "the body must be JSON: send Content-Type: application/json",
            ));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| ApiError::bad_request("the body is larger than 1 MiB"))?;
        let _ = state;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses a JSON document, naming the field at fault on error.
pub fn parse<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("the body is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request(format!("invalid request body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid field '{path}': {inner}"))
        }
    })
}

/// The `key=value` pairs of a query string, percent-decoded, in order
/// (repeated keys such as `label=a=1&label=b=2` kept).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Refuses query parameters a route does not take, naming the first, so
/// that a mistyped one is not silently ignored.
pub fn known_params(query: Option<&str>, known: &[&str]) -> Result<(), ApiError> {
    match query_pairs(query)
        .into_iter()
        .find(|(k, _)| !known.contains(&k.as_str()))
    {
        None => Ok(()),
        Some((k, _)) => Err(ApiError::bad_request(format!(
            "unknown query parameter '{k}': this route takes {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))),
    }
}

/// A whole-number query parameter within `range`, or `default` if absent.
pub fn query_number(
    query: Option<&str>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
) -> Result<u64, ApiError> {
    match query_pairs(query).into_iter().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, v)) => number_in(key, &v, range),
    }
}

/// The whole number in query parameter `key`'s value `v`, within `range`.
pub fn number_in(
    key: &str,
    v: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    match v.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "query parameter '{key}' must be a whole number from {} to {}, not '{}'",
            range.start(),
            range.end(),
            v.chars().take(40).collect::<String>()
        ))),
    }
}

/// A boolean query parameter (`force=true`); absent is false.
pub fn query_flag(query: Option<&str>, key: &str) -> Result<bool, ApiError> {
    match query_pairs(query).into_iter().find(|(k, _)| k == key) {
        None => Ok(false),
        Some((_, v)) => match v.as_str() {
            "" | "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(ApiError::bad_request(format!(
                "query parameter '{key}' must be true or false, not '{other}'"
            ))),
        },
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        name: String,
        #[serde(default)]
        protect: bool,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<Req>(&Bytes::from_static(br#"{"name": 5}"#)).unwrap_err();
        assert!(e.message.contains("'name'"), "{}", e.message);
        let e = parse::<Req>(&Bytes::from_static(br#"{"protect": true}"#)).unwrap_err();
        assert!(e.message.contains("`name`"), "{}", e.message);
        let e = parse::<Req>(&Bytes::from_static(br#"{"name": "a", "nmae": 1}"#)).unwrap_err();
        assert!(e.message.contains("nmae"), "{}", e.message);
        let e = parse::<Req>(&Bytes::from_static(br#"{"name": "#)).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            query_pairs(Some("label=agent%3Da1&label=x=y&force")),
            vec![
                ("label".into(), "agent=a1".into()),
                ("label".into(), "x=y".into()),
                ("force".into(), "".into())
            ]
        );
        assert!(query_flag(Some("force=true"), "force").unwrap());
        assert!(!query_flag(None, "force").unwrap());
        assert!(query_flag(Some("force=maybe"), "force").is_err());
        known_params(Some("force=true"), &["force"]).unwrap();
        let e = known_params(Some("force=true&forse=1"), &["force"]).unwrap_err();
        assert!(e.message.contains("'forse'"), "{}", e.message);
        assert_eq!(query_number(None, "limit", 1..=10, 5).unwrap(), 5);
        assert_eq!(
            query_number(Some("limit=10"), "limit", 1..=10, 5).unwrap(),
            10
        );
        for bad in ["limit=11", "limit=0", "limit=-1", "limit=x"] {
            assert!(
                query_number(Some(bad), "limit", 1..=10, 5).is_err(),
                "{bad}"
            );
        }
    }
}
