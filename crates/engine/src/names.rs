//! Names, labels and durations as users type them, and the bounds every
//! stored value keeps: whatever path a value takes in (CLI, API, MCP, the
//! engine's own callers), it is checked here before anything is written,
//! so that no stored row can break a later listing.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{EngineError, Result};

/// Longest name: leaves room in unix socket paths and identifiers.
pub const MAX_NAME: usize = 48;

/// Most labels one branch carries.
pub const MAX_LABELS: usize = 32;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE: usize = 256;
/// Longest label key prefix (a DNS subdomain), before the `/`.
pub const MAX_LABEL_PREFIX: usize = 253;
/// Longest label key name, after the `/` (or the whole key without one).
pub const MAX_LABEL_NAME: usize = 63;

/// One year as humantime counts it (`1y` = 365.25 days).
const YEAR: u64 = 31_557_600;

/// The longest value a duration setting may take, and how to say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The bound itself (inclusive).
    pub max: Duration,
    /// The bound as a user would type and read it.
    pub says: &'static str,
}

/// TTLs of branches (and of an agent's branches): ten years.
pub const TTL: Limit = Limit {
    max: Duration::from_secs(10 * YEAR),
    says: "10y (ten years)",
};
/// How long a branch may sit idle before it is stopped or deleted.
pub const IDLE: Limit = TTL;
/// Intervals of scheduled work (snapshot schedules, logical refreshes).
pub const INTERVAL: Limit = Limit {
    max: Duration::from_secs(YEAR),
    says: "1y (one year)",
};
/// How often the daemon's reaper runs.
pub const REAP_EVERY: Limit = Limit {
    max: Duration::from_secs(86_400),
    says: "1d (one day)",
};
/// Statement timeouts of agents (PostgreSQL's own bound is under 25 days).
pub const STATEMENT_TIMEOUT: Limit = Limit {
    max: Duration::from_secs(86_400),
    says: "1d (one day)",
};

fn invalid(message: String) -> EngineError {
    EngineError::InvalidArgument(message)
}

/// A user's text in a message, cut short: a 100 kB value must not make a
/// 100 kB error.
fn shown(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(MAX).collect::<String>())
    }
}

/// Checks a source or branch name: lowercase letters, digits, `-` and `_`,
/// starting with a letter. Source names become database and role names.
pub fn validate(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(EngineError::InvalidName {
            name: shown(name),
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

/// Whether `part` is one label of a DNS name: lowercase letters, digits
/// and `-`, starting and ending with a letter or digit.
fn dns_label(part: &str) -> bool {
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !part.is_empty()
        && part.len() <= 63
        && part.starts_with(edge)
        && part.ends_with(edge)
        && part.chars().all(|c| edge(c) || c == '-')
}

/// Whether `name` is the name part of a label key: 1-63 letters, digits,
/// `-`, `_` and `.`, starting and ending with a letter or digit.
fn key_name(name: &str) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric();
    !name.is_empty()
        && name.len() <= MAX_LABEL_NAME
        && name.starts_with(edge)
        && name.ends_with(edge)
        && name
            .chars()
            .all(|c| edge(c) || matches!(c, '-' | '_' | '.'))
}

/// Checks a label key the way Kubernetes does: an optional DNS-subdomain
/// prefix and `/`, then a name (`team`, `example.com/team`, `pgfork.agent`).
pub fn validate_label_key(key: &str) -> Result<()> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.len() > MAX_LABEL_PREFIX || !prefix.split('.').all(dns_label))
    {
        return Err(invalid(format!(
            "invalid label key '{}': the part before '/' must be a DNS subdomain of at most 253 characters \
             (lowercase letters, digits, '-' and '.', each part between dots starting and ending with a \
             letter or digit), as in example.com/team",
            shown(key)
        )));
    }
    if !key_name(name) {
        return Err(invalid(format!(
            "invalid label key '{}': its name{} must be 1-63 letters, digits, '-', '_' or '.', starting and \
             ending with a letter or digit, as in team or example.com/team",
            shown(key),
            if prefix.is_some() { " (after '/')" } else { "" }
        )));
    }
    Ok(())
}

/// Checks a label value: at most 256 characters, no control characters.
pub fn validate_label_value(key: &str, value: &str) -> Result<()> {
    let chars = value.chars().count();
    if chars > MAX_LABEL_VALUE {
        return Err(invalid(format!(
            "label '{}' has a value of {chars} characters; at most {MAX_LABEL_VALUE} are allowed",
            shown(key)
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "label '{}' has a control character (newline, tab, ...) in its value; use printable text",
            shown(key)
        )));
    }
    Ok(())
}

/// Checks the labels of one branch: every key and value, and their count.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(invalid(format!(
            "{} labels given; a branch carries at most {MAX_LABELS}",
            labels.len()
        )));
    }
    for (key, value) in labels {
        validate_label_key(key)?;
        validate_label_value(key, value)?;
    }
    Ok(())
}

/// Parses `key=value` labels (the key ends at the first `=`), each checked.
pub fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            return Err(invalid(format!("label '{}' is not KEY=VALUE", shown(item))));
        };
        validate_label_key(key)?;
        validate_label_value(key, value)?;
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

/// A branch's labels after `branch set`: `add` checked, then merged, then
/// `remove` taken out. Labels stored before these rules are kept as they
/// are (so that a branch carrying one can still be changed), but the set
/// may only grow past [`MAX_LABELS`] if it was already that large.
pub fn merge_labels(
    stored: &BTreeMap<String, String>,
    add: &BTreeMap<String, String>,
    remove: &[String],
) -> Result<BTreeMap<String, String>> {
    for (key, value) in add {
        validate_label_key(key)?;
        validate_label_value(key, value)?;
    }
    let mut labels = stored.clone();
    labels.extend(add.clone());
    for key in remove {
        labels.remove(key);
    }
    if labels.len() > MAX_LABELS && labels.len() > stored.len() {
        return Err(invalid(format!(
            "the branch would carry {} labels; at most {MAX_LABELS} are allowed: remove some with --unlabel KEY",
            labels.len()
        )));
    }
    Ok(labels)
}

/// Parses a duration setting such as `30m`, `2h` or `7d`: longer than
/// zero and at most `limit`. `field` names the setting in messages.
pub fn parse_duration(field: &str, text: &str, limit: Limit) -> Result<Duration> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(format!(
            "{field} '{}' is not a duration ({e}); write e.g. 30m, 2h, 7d (at most {})",
            shown(text),
            limit.says
        ))
    })?;
    if d.is_zero() {
        return Err(invalid(format!("{field} must be longer than zero")));
    }
    if d > limit.max {
        return Err(too_long(&format!("{field} '{}'", shown(text)), limit));
    }
    Ok(d)
}

/// Parses a TTL such as `2h`, `30m`, `1d 12h`: at most ten years.
pub fn parse_ttl(text: &str) -> Result<Duration> {
    parse_duration("ttl", text, TTL)
}

fn too_long(what: &str, limit: Limit) -> EngineError {
    invalid(format!(
        "{what} is too long: at most {} is allowed; choose a shorter one",
        limit.says
    ))
}

/// Refuses a duration over `limit`, naming `field` and the bound.
pub fn check_duration(field: &str, d: Duration, limit: Limit) -> Result<()> {
    if d > limit.max {
        return Err(too_long(field, limit));
    }
    Ok(())
}

/// A duration as the whole seconds meta.db stores (at least 1), once
/// checked against `limit`.
pub fn stored_secs(field: &str, d: Duration, limit: Limit) -> Result<i64> {
    check_duration(field, d, limit)?;
    Ok(d.as_secs().max(1) as i64)
}

/// When a TTL given at `now` (Unix seconds) runs out, checked: a TTL over
/// ten years, or a sum that would overflow, is refused, never wrapped.
pub fn expiry(now: i64, ttl: Duration) -> Result<i64> {
    let secs = stored_secs("ttl", ttl, TTL)?;
    now.checked_add(secs)
        .ok_or_else(|| invalid("ttl runs past the end of time; choose a shorter one".into()))
}

/// `now_ms` minus `d`, saturating: a `--since` of any length is "from the
/// beginning", never an overflow.
pub fn since_ms(now_ms: i64, d: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Six random lowercase letters and digits, for names pgfork makes up
/// (a rehearsal's branch).
pub fn random_suffix() -> String {
    pgfork_pg::sql::random_string(b"abcdefghijklmnopqrstuvwxyz0123456789", 6)
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
    fn labels_parse() {
        let l = parse_labels(&["agent=a1".into(), "team=db=x".into()]).unwrap();
        assert_eq!(l["agent"], "a1");
        assert_eq!(l["team"], "db=x");
        assert!(parse_labels(&["novalue".into()]).is_err());
        assert!(parse_labels(&["=x".into()]).is_err());
    }

    #[test]
    fn label_keys_follow_kubernetes() {
        let long_prefix = format!("{}.com/x", "a.".repeat(126));
        for good in [
            "team",
            "example.com/team",
            "pgfork.agent",
            "pgfork.session",
            "a",
            "A_b-c.D",
            &"k".repeat(63),
            &format!("{}/n", "p".repeat(63)),
        ] {
            validate_label_key(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "",
            "a=b",
            "../x",
            "x/../y",
            "/x",
            "x/",
            "a/b/c",
            "-a",
            "a-",
            ".a",
            "a b",
            "Example.com/x",
            "ex_ample.com/x",
            "a..b/x",
            "é",
            &"k".repeat(64),
            &long_prefix,
        ] {
            assert!(validate_label_key(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn label_values_and_counts_are_bounded() {
        validate_label_value("k", "").unwrap();
        validate_label_value("k", &"é".repeat(256)).unwrap();
        let e = validate_label_value("k", &"v".repeat(100_000)).unwrap_err();
        assert!(
            e.to_string().len() < 200,
            "the message echoes the value: {e}"
        );
        assert!(validate_label_value("k", "a\nb").is_err());
        assert!(validate_label_value("k", "a\u{7f}").is_err());
        let many: BTreeMap<String, String> =
            (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(validate_labels(&many).is_err());
        let fine: BTreeMap<String, String> =
            (0..32).map(|i| (format!("k{i}"), "v".into())).collect();
        validate_labels(&fine).unwrap();
    }

    #[test]
    fn merged_labels_keep_the_bounds() {
        let stored: BTreeMap<String, String> =
            (0..31).map(|i| (format!("k{i}"), "v".into())).collect();
        let one = BTreeMap::from([("new".to_string(), "v".to_string())]);
        assert_eq!(merge_labels(&stored, &one, &[]).unwrap().len(), 32);
        let two = BTreeMap::from([
            ("new".to_string(), "v".to_string()),
            ("other".to_string(), "v".to_string()),
        ]);
        assert!(merge_labels(&stored, &two, &[]).is_err());
        assert_eq!(
            merge_labels(&stored, &two, &["k0".into()]).unwrap().len(),
            32
        );
        let bad = BTreeMap::from([("../x".to_string(), "v".to_string())]);
        assert!(merge_labels(&stored, &bad, &[]).is_err());
        // A label stored before the rules can still be removed.
        let old = BTreeMap::from([("bad key".to_string(), "v".to_string())]);
        assert!(
            merge_labels(&old, &BTreeMap::new(), &["bad key".into()])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_ttl("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_ttl("10y").is_ok());
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("0s").is_err());
        for huge in [
            "300000y",
            "9223372036854775807s",
            "10y 1s",
            "99999999999999999999999s",
        ] {
            let e = parse_ttl(huge).unwrap_err();
            assert_eq!(e.code(), "invalid_argument");
            assert!(e.to_string().contains("ttl"), "{e}");
            assert!(e.to_string().contains("10y"), "{e}");
        }
        assert!(parse_duration("--every", "2y", INTERVAL).is_err());
        assert!(stored_secs("ttl", Duration::from_secs(u64::MAX), TTL).is_err());
        assert_eq!(
            stored_secs("ttl", Duration::from_millis(10), TTL).unwrap(),
            1
        );
    }

    #[test]
    fn expiry_is_checked_arithmetic() {
        assert_eq!(expiry(100, Duration::from_secs(60)).unwrap(), 160);
        assert!(expiry(100, Duration::from_secs(i64::MAX as u64)).is_err());
        assert!(expiry(i64::MAX - 1, Duration::from_secs(60)).is_err());
        assert_eq!(
            since_ms(1000, Duration::from_secs(u64::MAX)),
            1000 - i64::MAX
        );
        assert_eq!(since_ms(1000, Duration::from_millis(1)), 999);
    }
}
