//! Small SQL text helpers.

/// Quotes a string literal: `it's` becomes `'it''s'`. Backslashes are
/// plain characters with `standard_conforming_strings` on, the default
/// since PostgreSQL 9.1 and the only setting pgfork's servers use.
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `WITH (a=1, b=2)` from storage parameters, or nothing.
pub(crate) fn with_options(options: &[String]) -> String {
    if options.is_empty() {
        String::new()
    } else {
        format!(" WITH ({})", options.join(", "))
    }
}

/// The key of a `key=value` storage parameter.
pub(crate) fn option_key(option: &str) -> &str {
    option.split_once('=').map_or(option, |(k, _)| k)
}

/// `SET (...)` and `RESET (...)` clauses that turn options `from` into `to`.
pub(crate) fn option_changes(from: &[String], to: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let reset: Vec<&str> = from
        .iter()
        .map(|o| option_key(o))
        .filter(|k| !to.iter().any(|t| option_key(t) == *k))
        .collect();
    if !reset.is_empty() {
        out.push(format!("RESET ({})", reset.join(", ")));
    }
    let set: Vec<&str> = to
        .iter()
        .filter(|t| !from.contains(t))
        .map(String::as_str)
        .collect();
    if !set.is_empty() {
        out.push(format!("SET ({})", set.join(", ")));
    }
    out
}

/// A view or function body without trailing whitespace and semicolon.
pub(crate) fn trim_statement(text: &str) -> String {
    text.trim_end().trim_end_matches(';').trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_options() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(with_options(&[]), "");
        assert_eq!(
            with_options(&["fillfactor=70".into()]),
            " WITH (fillfactor=70)"
        );
        assert_eq!(
            option_changes(
                &["fillfactor=70".into(), "autovacuum_enabled=false".into()],
                &["fillfactor=50".into()]
            ),
            vec!["RESET (autovacuum_enabled)", "SET (fillfactor=50)"]
        );
        assert_eq!(trim_statement(" SELECT 1;\n"), " SELECT 1");
    }
}
