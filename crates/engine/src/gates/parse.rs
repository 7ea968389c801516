//! Reading assertion files: split into queries, each refused unless it is
//! a single read-only query, named by file and line.

use super::*;

/// A stored or requested file name: printable, without a directory.
fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "an assertion file's name must have 1 to {MAX_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(|c| c.is_control() || c == '/') || name == "." || name == ".." {
        return Err(format!(
            "assertion file name {name:?} must be a file name: no '/' or control characters"
        ));
    }
    Ok(())
}

/// Where the first token at or after `from` starts (whitespace and
/// comments skipped, as the rehearsal's statement splitter skips them).
fn first_token(text: &str, from: usize) -> usize {
    from + crate::rehearse::script::leading_noise(&text[from..])
}

/// The line (from 1) of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> u32 {
    crate::rehearse::script::position(text, offset).line as u32
}

/// Byte offset of `part`, a slice of `whole`, in it.
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// The first word of a statement, uppercase (`UPDATE`), to name it.
fn command_word(sql: &str) -> String {
    sql.split(|c: char| !c.is_ascii_alphabetic())
        .find(|w| !w.is_empty())
        .unwrap_or("?")
        .to_ascii_uppercase()
}

/// Why a statement cannot be a gate, or `None` when it is a single query
/// that does not write (read with PostgreSQL's parser).
fn refusal_of(sql: &str) -> Option<String> {
    use pg_query::{NodeEnum, NodeRef};
    let parsed = match pg_query::parse(sql) {
        Ok(p) => p,
        Err(e) => return Some(e.to_string()),
    };
    let stmts = &parsed.protobuf.stmts;
    let top = stmts
        .first()
        .and_then(|s| s.stmt.as_ref())
        .and_then(|n| n.node.as_ref());
    if stmts.len() != 1 || !matches!(top, Some(NodeEnum::SelectStmt(_))) {
        return Some(format!(
            "{} is not a query: a gate is a single SELECT, VALUES or WITH ... SELECT, and must not write",
            command_word(sql)
        ));
    }
    for (node, _, _) in parsed.protobuf.nodes() {
        match node {
            NodeRef::InsertStmt(_)
            | NodeRef::UpdateStmt(_)
            | NodeRef::DeleteStmt(_)
            | NodeRef::MergeStmt(_) => {
                return Some(
                    "the query holds a data-modifying statement (INSERT, UPDATE, DELETE or MERGE in WITH): \
                     a gate must not write"
                        .into(),
                );
            }
            NodeRef::SelectStmt(s) if s.into_clause.is_some() => {
                return Some("SELECT ... INTO creates a table: a gate must not write".into());
            }
            NodeRef::SelectStmt(s) if !s.locking_clause.is_empty() => {
                return Some(
                    "FOR UPDATE / FOR SHARE locks rows: a gate only reads, drop the locking clause"
                        .into(),
                );
            }
            _ => {}
        }
    }
    None
}

/// Where the first statement of `text` that does not parse starts: the
/// text is cut at the semicolons PostgreSQL's scanner sees (not those in
/// literals, quoted names or comments), and each piece parsed alone.
fn failing_piece(text: &str) -> Option<usize> {
    let tokens = pg_query::scan(text).ok()?.tokens;
    let mut start = 0usize;
    let cuts = tokens
        .iter()
        .filter(|t| t.token == pg_query::protobuf::Token::Ascii59 as i32)
        .map(|t| t.start.max(0) as usize)
        .chain(std::iter::once(text.len()));
    for cut in cuts {
        let piece = text.get(start..cut)?;
        if pg_query::parse(piece).is_err() {
            return Some(first_token(text, start));
        }
        start = cut + 1;
    }
    None
}

/// The queries of an assertion file, each checked to be a single query
/// that does not write. A file that is empty, does not parse, or holds
/// anything else is refused, naming the file and the line.
pub fn parse_file(file: &AssertionFile, stored: bool) -> Result<Vec<Assertion>> {
    let bad = |why: String| EngineError::InvalidArgument(format!("{why}; nothing was changed"));
    check_name(&file.name).map_err(bad)?;
    let text = file.sql.as_str();
    if text.len() > MAX_FILE_BYTES {
        return Err(bad(format!(
            "assertion file {} is larger than {} KiB, the most an assertion file may hold",
            file.name,
            MAX_FILE_BYTES / 1024
        )));
    }
    if text.contains('\0') {
        return Err(bad(format!(
            "assertion file {} holds a NUL byte",
            file.name
        )));
    }
    let statements = pg_query::split_with_parser(text).map_err(|e| {
        // The parser's message has no place: find the statement that does
        // not parse among the pieces between the scanner's semicolons.
        let line = failing_piece(text).map(|start| line_of(text, start));
        let message = match e {
            pg_query::Error::Split(m) | pg_query::Error::Parse(m) | pg_query::Error::Scan(m) => m,
            other => other.to_string(),
        };
        bad(match line {
            Some(line) => format!(
                "assertion file {} does not parse at line {line}: {message}",
                file.name
            ),
            None => format!("assertion file {} does not parse: {message}", file.name),
        })
    })?;
    let mut out = Vec::new();
    for stmt in statements {
        let start = first_token(text, offset_in(text, stmt));
        let end = offset_in(text, stmt) + stmt.len();
        if start >= end {
            continue;
        }
        let sql = text[start..end].trim_end().to_string();
        let line = line_of(text, start);
        if let Some(why) = refusal_of(&sql) {
            return Err(bad(format!(
                "assertion file {}, line {line}: {why}",
                file.name
            )));
        }
        out.push(Assertion {
            name: format!("{}#{}", file.name, out.len() + 1),
            line,
            sql,
            stored,
        });
    }
    if out.is_empty() {
        return Err(bad(format!(
            "assertion file {} holds no query: write one or more SELECT queries that return no rows \
             when all is well",
            file.name
        )));
    }
    if out.len() > MAX_QUERIES {
        return Err(bad(format!(
            "assertion file {} holds {} queries, more than the {MAX_QUERIES} a file may hold",
            file.name,
            out.len()
        )));
    }
    Ok(out)
}

/// The queries of several files, refused if there are too many files or
/// two share a name.
pub(super) fn parse_files(files: &[AssertionFile], stored: bool) -> Result<Vec<Assertion>> {
    if files.len() > MAX_FILES {
        return Err(EngineError::InvalidArgument(format!(
            "{} assertion files, more than the {MAX_FILES} allowed; nothing was changed",
            files.len()
        )));
    }
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if files[..i].iter().any(|g| g.name == f.name) {
            return Err(EngineError::InvalidArgument(format!(
                "two assertion files are named {}: give each its own name; nothing was changed",
                f.name
            )));
        }
        out.extend(parse_file(f, stored)?);
    }
    Ok(out)
}
