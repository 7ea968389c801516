//! Reading a rules file.

use serde::Serialize;

use crate::Transform;

/// Errors in a rules file or in applying it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// The file is not valid TOML, or not of the expected shape.
    #[error("{file}: {message}")]
    Syntax {
        /// File name, for the message.
        file: String,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A rule names a column the database does not have.
    #[error("mask rule for {column} (line {line}): {reason}")]
    Invalid {
        /// `schema.table.column`.
        column: String,
        /// Line of the rule.
        line: usize,
        /// Why it cannot apply.
        reason: String,
    },
}

/// One column's rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnRule {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// Transform.
    pub transform: Transform,
    /// Line in the rules file (1-based), for messages.
    pub line: usize,
}

impl ColumnRule {
    /// `schema.table.column`.
    pub fn qualified(&self) -> String {
        format!("{}.{}.{}", self.schema, self.table, self.column)
    }
}

/// A parsed rules file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MaskRules {
    /// Rules in file order.
    pub columns: Vec<ColumnRule>,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

impl MaskRules {
    /// Parses rules: `[schema.table]` tables of `column = "transform"`.
    /// Errors carry the line and column.
    pub fn parse(file: &str, text: &str) -> Result<MaskRules, MaskError> {
        let syntax = |message: String| MaskError::Syntax {
            file: file.to_string(),
            message,
        };
        let doc = toml::de::DeTable::parse(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            match e.span().map(|s| line_col(text, s.start)) {
                Some((l, c)) => syntax(format!("line {l}, column {c}: {msg}")),
                None => syntax(msg),
            }
        })?;
        let mut rules = MaskRules::default();
        for (schema, tables) in doc.get_ref() {
            let (l, c) = line_col(text, schema.span().start);
            let toml::de::DeValue::Table(tables) = tables.get_ref() else {
                return Err(syntax(format!(
                    "line {l}, column {c}: '{}' must be a table of tables: [schema.table] then column = \"transform\"",
                    schema.get_ref()
                )));
            };
            for (table, columns) in tables {
                let (l, c) = line_col(text, table.span().start);
                let toml::de::DeValue::Table(columns) = columns.get_ref() else {
                    return Err(syntax(format!(
                        "line {l}, column {c}: '{}.{}' must be a table: [{}.{}] then column = \"transform\"",
                        schema.get_ref(),
                        table.get_ref(),
                        schema.get_ref(),
                        table.get_ref()
                    )));
                };
                for (column, value) in columns {
                    let (l, c) = line_col(text, value.span().start);
                    let toml::de::DeValue::String(spec) = value.get_ref() else {
                        return Err(syntax(format!(
                            "line {l}, column {c}: the transform of {}.{}.{} must be a string",
                            schema.get_ref(),
                            table.get_ref(),
                            column.get_ref()
                        )));
                    };
                    let transform = Transform::parse(spec)
                        .map_err(|m| syntax(format!("line {l}, column {c}: {m}")))?;
                    rules.columns.push(ColumnRule {
                        schema: schema.get_ref().to_string(),
                        table: table.get_ref().to_string(),
                        column: column.get_ref().to_string(),
                        transform,
                        line: l,
                    });
                }
            }
        }
        rules.columns.sort_by_key(|r| r.line);
        Ok(rules)
    }

    /// Whether no rule masks anything.
    pub fn is_empty(&self) -> bool {
        self.columns.iter().all(|r| r.transform == Transform::Keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_with_lines() {
        let text = "# masking\n[public.customers]\nemail = \"email\"\nname = \"name\"\n\n[\"my schema\".\"Order\"]\nnote = \"const:x\"\n";
        let rules = MaskRules::parse("mask.toml", text).unwrap();
        assert_eq!(rules.columns.len(), 3);
        assert_eq!(rules.columns[0].qualified(), "public.customers.email");
        assert_eq!(rules.columns[0].line, 3);
        assert_eq!(rules.columns[2].schema, "my schema");
        assert_eq!(rules.columns[2].table, "Order");
        assert_eq!(rules.columns[2].transform, Transform::Const("x".into()));
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = MaskRules::parse("mask.toml", "[public.customers]\nemail = email\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("mask.toml: line 2, column 9"), "{msg}");

        let err =
            MaskRules::parse("m.toml", "[public.customers]\nemail = \"scramble\"\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("line 2, column 9: unknown transform 'scramble'"),
            "{err}"
        );

        let err = MaskRules::parse("m.toml", "email = \"hash\"\n").unwrap_err();
        assert!(err.to_string().contains("line 1, column 1"), "{err}");

        let err = MaskRules::parse("m.toml", "[public]\nemail = \"hash\"\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
