//! The enum pre-step: which of the patch's statements add an enum value,
//! and so run before the promote's transaction, each committed alone.

/// Whether `sql` is exactly an enum value addition as the schema diff
/// writes it: `ALTER TYPE name ADD VALUE 'label'[ BEFORE|AFTER 'label']`.
/// Read by its structure, not by a substring: names and labels are the
/// branch's, and no other statement may pass for one, since these run
/// outside the promote's transaction and its check.
pub(super) fn adds_enum_value(sql: &str) -> bool {
    let rest = sql
        .strip_prefix("ALTER TYPE ")
        .and_then(skip_name)
        .and_then(|r| r.strip_prefix(" ADD VALUE "))
        .and_then(skip_literal);
    match rest {
        Some("") => true,
        Some(r) => {
            r.strip_prefix(" BEFORE ")
                .or_else(|| r.strip_prefix(" AFTER "))
                .and_then(skip_literal)
                == Some("")
        }
        None => false,
    }
}

/// What follows a (possibly schema-qualified) identifier at the start of `s`.
fn skip_name(s: &str) -> Option<&str> {
    let rest = skip_ident(s)?;
    match rest.strip_prefix('.') {
        Some(r) => skip_ident(r),
        None => Some(rest),
    }
}

/// What follows one identifier, plain or double-quoted (`""` inside).
fn skip_ident(s: &str) -> Option<&str> {
    if let Some(body) = s.strip_prefix('"') {
        return skip_quoted(body, '"');
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[end..])
}

/// What follows a string literal `'...'` (`''` inside).
fn skip_literal(s: &str) -> Option<&str> {
    skip_quoted(s.strip_prefix('\'')?, '\'')
}

/// What follows the closing `quote` of a quoted token whose opening quote
/// is already taken off; a doubled quote is part of the token.
fn skip_quoted(body: &str, quote: char) -> Option<&str> {
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            if chars.peek().is_some_and(|(_, n)| *n == quote) {
                chars.next();
                continue;
            }
            return Some(&body[i + 1..]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::adds_enum_value;

    #[test]
    fn enum_additions_are_read_by_their_structure() {
        assert!(adds_enum_value(
            "ALTER TYPE public.mood ADD VALUE 'ecstatic'"
        ));
        assert!(adds_enum_value(
            "ALTER TYPE \"my schema\".\"Mood\"\"s\" ADD VALUE 'it''s' AFTER 'happy'"
        ));
        // Names and labels are the branch's: a statement that merely holds
        // the words must not run outside the transaction.
        assert!(!adds_enum_value(
            "ALTER TYPE public.t ADD ATTRIBUTE \"x ADD VALUE y\" integer"
        ));
        assert!(!adds_enum_value(
            "ALTER TYPE public.mood ADD VALUE 'a'; DROP TABLE public.customers"
        ));
        assert!(!adds_enum_value(
            "ALTER TYPE public.mood ADD VALUE 'a' AFTER 'b' CASCADE"
        ));
        assert!(!adds_enum_value(
            "ALTER TYPE public.mood RENAME VALUE 'a' TO 'b'"
        ));
    }
}
