//! A migration file as the statements a rehearsal runs, each with where it
//! is in the file.

use serde::Serialize;

/// Where something is in the file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
}

/// The position of byte `offset` of `text`.
pub fn position(text: &str, offset: usize) -> Position {
    let offset = offset.min(text.len());
    let before = &text[..floor_char(text, offset)];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line,
        column: before[start..].chars().count() + 1,
    }
}

fn floor_char(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// How a statement bears on transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`, `ROLLBACK`, `ABORT` (and `PREPARE TRANSACTION`):
    /// the transaction ends.
    End,
    /// Anything else (savepoints included).
    Other,
}

/// One statement of the file.
#[derive(Debug, Clone)]
pub struct Statement {
    /// Its text, without the leading blank lines and comments.
    pub sql: String,
    /// Byte offset of that text in the file.
    pub offset: usize,
    /// Where it starts.
    pub at: Position,
    /// How it bears on transactions.
    pub control: Control,
}

/// Splits `text` into statements with PostgreSQL's own lexer (so quoting,
/// dollar quotes and comments are read as the server reads them; a syntax
/// error is left for the server to report where it is).
pub fn statements(text: &str) -> Result<Vec<Statement>, String> {
    let parts = pg_query::split_with_scanner(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for part in parts {
        let start = part.as_ptr() as usize - text.as_ptr() as usize;
        let skipped = leading_noise(part);
        let sql = part[skipped..].trim_end().trim_end_matches(';').trim_end();
        if sql.is_empty() {
            continue;
        }
        let offset = start + skipped;
        out.push(Statement {
            sql: sql.to_string(),
            offset,
            at: position(text, offset),
            control: control(sql),
        });
    }
    Ok(out)
}

/// Bytes of whitespace and comments (`--` lines, `/* */` nested as
/// PostgreSQL nests them) before a statement's first token.
pub(crate) fn leading_noise(s: &str) -> usize {
    let mut i = 0;
    let b = s.as_bytes();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b[i..].starts_with(b"--") {
            i = s[i..].find('\n').map_or(s.len(), |n| i + n + 1);
        } else if b[i..].starts_with(b"/*") {
            // Block comments nest in PostgreSQL.
            let mut depth = 0usize;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else {
            return i;
        }
    }
}

fn control(sql: &str) -> Control {
    use pg_query::NodeEnum;
    use pg_query::protobuf::TransactionStmtKind as Kind;
    let Ok(parsed) = pg_query::parse(sql) else {
        return Control::Other;
    };
    let node = parsed
        .protobuf
        .stmts
        .first()
        .and_then(|s| s.stmt.as_ref())
        .and_then(|n| n.node.as_ref());
    match node {
        Some(NodeEnum::TransactionStmt(t)) => match t.kind() {
            Kind::TransStmtBegin | Kind::TransStmtStart => Control::Begin,
            Kind::TransStmtCommit | Kind::TransStmtRollback | Kind::TransStmtPrepare => {
                Control::End
            }
            _ => Control::Other,
        },
        _ => Control::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_know_their_lines_and_transactions() {
        let text = "-- a migration\nBEGIN;\nCREATE TABLE t (s text DEFAULT 'a;b');\n\n/* x /* nested */ */ \
                    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\nCOMMIT;\nSELECT é, 1 +;";
        let s = statements(text).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].control, Control::Begin);
        assert_eq!(s[0].at, Position { line: 2, column: 1 });
        assert_eq!(s[1].sql, "CREATE TABLE t (s text DEFAULT 'a;b')");
        assert!(s[2].sql.starts_with("CREATE FUNCTION"), "{:?}", s[2].sql);
        assert_eq!(
            s[2].at,
            Position {
                line: 5,
                column: 22
            }
        );
        assert_eq!(s[3].control, Control::End);
        assert_eq!(s[4].at.line, 7);
        assert_eq!(&text[s[4].offset..s[4].offset + 6], "SELECT");
        // Columns count characters: "é" is two bytes, one column.
        assert_eq!(
            position(text, s[4].offset + 9),
            Position { line: 7, column: 9 }
        );
    }
}
