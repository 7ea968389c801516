//! Names, labels and TTLs as users type them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{EngineError, Result};

/// Longest name: leaves room in unix socket paths and identifiers.
pub const MAX_NAME: usize = 48;

/// Checks a source or branch name: lowercase letters, digits, `-` and `_`,
/// starting with a letter. Source names become database and role names.
pub fn validate(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(EngineError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME {
        return bad("it is longer than 48 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("it must start with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return bad("use only lowercase letters, digits, '-' and '_'");
    }
    if matches!(name, "postgres" | "template0" | "template1") || name.starts_with("pg_") {
        return bad("it is reserved by PostgreSQL");
    }
    Ok(())
}

/// Parses `key=value` labels.
pub fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            return Err(EngineError::InvalidArgument(format!(
                "label '{item}' is not KEY=VALUE"
            )));
        };
        let key_ok = !key.is_empty()
            && key.len() <= 63
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !key_ok {
            return Err(EngineError::InvalidArgument(format!(
                "label key '{key}' must be 1-63 letters, digits, '-', '_', '.' or '/'"
            )));
        }
        if value.len() > 256 {
            return Err(EngineError::InvalidArgument(format!(
                "label '{key}' has a value over 256 bytes"
            )));
        }
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

/// Parses a TTL such as `2h`, `30m`, `1d 12h`.
pub fn parse_ttl(text: &str) -> Result<Duration> {
    let ttl = humantime::parse_duration(text).map_err(|e| {
        EngineError::InvalidArgument(format!(
            "TTL '{text}' is not a duration ({e}); write e.g. 30m, 2h, 7d"
        ))
    })?;
    if ttl.is_zero() {
        return Err(EngineError::InvalidArgument(
            "a TTL must be longer than zero".into(),
        ));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        for good in ["shop", "fix-42", "a_b", "x1"] {
            validate(good).unwrap();
        }
        for bad in [
            "",
            "Shop",
            "1abc",
            "a b",
            "a/b",
            "postgres",
            "pg_x",
            "a.b",
            "é",
            &"a".repeat(49),
        ] {
            assert!(validate(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn labels_and_ttls_parse() {
        let l = parse_labels(&["agent=a1".into(), "team=db=x".into()]).unwrap();
        assert_eq!(l["agent"], "a1");
        assert_eq!(l["team"], "db=x");
        assert!(parse_labels(&["novalue".into()]).is_err());
        assert!(parse_labels(&["=x".into()]).is_err());
        assert_eq!(parse_ttl("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("0s").is_err());
    }
}
