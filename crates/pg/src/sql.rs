//! SQL quoting and credentials.

use rand::RngExt;

/// Quotes an identifier: `my "x"` becomes `"my ""x"""`.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes a string literal: `it's` becomes `'it''s'`.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A fresh random password: 24 alphanumerics (~143 bits), safe in URLs.
pub fn random_password() -> String {
    random_string(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        24,
    )
}

/// `len` characters drawn from `alphabet` (ASCII) by the OS-seeded
/// generator.
pub fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// The SCRAM-SHA-256 verifier of `password`, so that the plaintext is never
/// sent to the server, where a statement log could record it.
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// `ALTER ROLE ... PASSWORD` with a verifier instead of the plaintext.
pub fn set_password_sql(role: &str, password: &str) -> String {
    format!(
        "ALTER ROLE {} PASSWORD {}",
        quote_ident(role),
        quote_literal(&scram_verifier(password))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn passwords_are_fresh_and_verifiers_hide_them() {
        let a = random_password();
        assert_eq!(a.len(), 24);
        assert_ne!(a, random_password());
        let sql = set_password_sql("shop", &a);
        assert!(sql.contains("SCRAM-SHA-256$4096:"));
        assert!(!sql.contains(&a));
    }
}
