//! Squawk's static rules over a migration file, beside what the rehearsal
//! measured.

use serde::Serialize;
use squawk_linter::{Linter, Rule};

use super::script::{Position, position};

/// How much a finding weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look (style, portability).
    Warning,
    /// Blocks or rewrites in production, or loses data.
    Error,
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "warning" => Ok(Severity::Warning),
            "error" => Ok(Severity::Error),
            other => Err(format!("unknown severity '{other}': use warning or error")),
        }
    }
}

/// One rule a statement breaks.
#[derive(Debug, Clone, Serialize)]
pub struct LintFinding {
    /// Squawk's rule name (`require-concurrent-index-creation`).
    pub rule: String,
    /// How much it weighs.
    pub severity: Severity,
    /// What the rule says.
    pub message: String,
    /// What to do instead, if squawk says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Where in the file.
    pub at: Position,
}

/// Rules whose finding means locks or rewrites a production table would
/// feel, or lost data; the rest are advice.
fn severity(rule: Rule) -> Severity {
    match rule {
        Rule::RequireConcurrentIndexCreation
        | Rule::RequireConcurrentIndexDeletion
        | Rule::ConstraintMissingNotValid
        | Rule::AddingFieldWithDefault
        | Rule::AddingForeignKeyConstraint
        | Rule::ChangingColumnType
        | Rule::AddingNotNullableField
        | Rule::AddingSerialPrimaryKeyField
        | Rule::DisallowedUniqueConstraint
        | Rule::BanDropDatabase
        | Rule::BanDropColumn
        | Rule::BanDropTable
        | Rule::BanDropNotNull
        | Rule::BanTruncateCascade
        | Rule::BanConcurrentIndexCreationInTransaction => Severity::Error,
        _ => Severity::Warning,
    }
}

/// Squawk's default rules over `text`, for PostgreSQL 15, assuming each
/// statement runs in a transaction of its own unless the file says `BEGIN`.
pub fn lint(text: &str) -> Vec<LintFinding> {
    let file = squawk_syntax::SourceFile::parse(text);
    let mut linter = Linter::with_default_rules();
    let mut found: Vec<LintFinding> = linter
        .lint(&file, text)
        .into_iter()
        .map(|v| LintFinding {
            rule: v.code.to_string(),
            severity: severity(v.code),
            message: v.message,
            help: v.help,
            at: position(text, usize::from(v.text_range.start())),
        })
        .collect();
    found.sort_by_key(|f| (f.at.line, f.at.column));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_without_concurrently_is_an_error_on_its_line() {
        let found = lint("SELECT 1;\nCREATE INDEX i ON t (a);\n");
        let f = found
            .iter()
            .find(|f| f.rule == "require-concurrent-index-creation")
            .unwrap_or_else(|| panic!("{found:?}"));
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(f.at.line, 2);
        assert!(lint("SELECT 1;").is_empty());
    }
}
