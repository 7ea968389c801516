//! The shape of a statement: its text with every numeric literal written
//! as `0`. Drivers that interpolate values (pgbench, psql scripts, ORMs in
//! simple-protocol mode) send the same statement with other numbers again
//! and again; a statement's classification does not depend on the value
//! of a number in it, so the proxy parses each shape once.
//!
//! Only texts whose tokens cannot hide one another qualify: ASCII without
//! quotes, dollar signs, backslashes or comments, and at most one `;`, at
//! the end. In such text the lexer's only use of a digit run is a number
//! (or part of a name, which a shape keeps as it is), so two texts of one
//! shape are the same statement with other numbers.

use crate::classify::Statement;

/// The shape of `sql`, or None if the text does not qualify.
pub fn of(sql: &[u8]) -> Option<Vec<u8>> {
    let semicolon = sql.iter().position(|&b| b == b';');
    if let Some(at) = semicolon
        && !sql[at + 1..].iter().all(u8::is_ascii_whitespace)
    {
        return None;
    }
    let mut out = Vec::with_capacity(sql.len());
    let mut i = 0;
    while i < sql.len() {
        let b = sql[i];
        match b {
            b'\'' | b'"' | b'$' | b'\\' => return None,
            b'-' if sql.get(i + 1) == Some(&b'-') => return None,
            b'/' if sql.get(i + 1) == Some(&b'*') => return None,
            0 | 0x80..=0xff => return None,
            b'0'..=b'9' if i == 0 || !name_byte(sql[i - 1]) => {
                let end = sql[i..]
                    .iter()
                    .position(|c| !c.is_ascii_digit())
                    .map_or(sql.len(), |n| i + n);
                if sql.get(end).is_some_and(|&c| name_byte(c)) {
                    // `1e5`, `0x1F`, `1FROM`: kept as written.
                    out.extend_from_slice(&sql[i..end]);
                } else {
                    out.push(b'0');
                }
                i = end;
                continue;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

/// Whether a classification may stand for every text of its shape: one
/// plain data statement, none of whose meaning lies in a number (SET
/// values, transaction modes and the like are left to the parser).
pub fn reusable(s: &Statement) -> bool {
    matches!(
        s.command.as_str(),
        "SELECT" | "INSERT" | "UPDATE" | "DELETE"
    ) && s.location == 0
        && s.tx.is_none()
        && s.tx_mode.is_none()
        && !s.set_transaction
        && s.sets.is_empty()
        && s.set_config.is_empty()
        && s.prepared_name.is_none()
        && s.copy_from.is_none()
}

/// `s` for another text of its shape: the statement runs to the `;` or the
/// end of `sql`.
pub fn fit(s: &Statement, sql: &[u8]) -> Statement {
    let len = sql.iter().position(|&b| b == b';').unwrap_or(sql.len());
    Statement { len, ..s.clone() }
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_become_zero_and_names_stay() {
        assert_eq!(
            of(b"SELECT abalance FROM pgbench_accounts WHERE aid = 123456;").unwrap(),
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 0;"
        );
        assert_eq!(
            of(b"SELECT t1.a2 FROM t1").unwrap(),
            b"SELECT t1.a2 FROM t1"
        );
        assert_eq!(
            of(b"SELECT 1e5, 0x1F, 12.5").unwrap(),
            b"SELECT 1e5, 0x1F, 0.0"
        );
        assert_eq!(of(b"SELECT 1FROM t").unwrap(), b"SELECT 1FROM t");
    }

    #[test]
    fn text_that_can_hide_tokens_has_no_shape() {
        for sql in [
            &b"SELECT 'a'"[..],
            b"SELECT \"a\"",
            b"SELECT $1",
            b"SELECT $$x$$",
            b"SELECT 1 -- x",
            b"SELECT 1 /* x */",
            b"SELECT E\\x",
            b"SELECT 1; DELETE FROM t",
            b"SELECT 1;;",
            "SELECT 'é'".as_bytes(),
            b"SELECT \xe9",
        ] {
            assert_eq!(of(sql), None, "{}", String::from_utf8_lossy(sql));
        }
        assert!(of(b"SELECT 1;  \n").is_some());
    }

    #[test]
    fn only_plain_data_statements_are_reused() {
        let one = |sql: &str| crate::classify::classify(sql).unwrap().remove(0);
        assert!(reusable(&one("SELECT a FROM t WHERE id = 5")));
        assert!(reusable(&one("UPDATE t SET a = 1 WHERE id = 5")));
        assert!(!reusable(&one("SET statement_timeout = 0")));
        assert!(!reusable(&one("BEGIN")));
        assert!(!reusable(&one("SET LOCAL transaction_read_only = 0")));
        let s = one("SELECT 1;");
        assert_eq!(fit(&s, b"SELECT 12345;").len, 12);
        assert_eq!(fit(&s, b"SELECT 12345").len, 12);
    }
}
