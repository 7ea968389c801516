//! The transforms a rule can name.

use serde::Serialize;

/// How one column is masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum Transform {
    /// A keyed hash of the value, in the column's own type (text, integer, uuid).
    Hash,
    /// `user_<hash>@example.invalid`.
    Email,
    /// A made-up "First Last" picked by hash.
    Name,
    /// `+1-555-<7 digits by hash>`.
    Phone,
    /// NULL.
    Null,
    /// A constant, cast to the column's type.
    Const(String),
    /// Any SQL expression over the row's columns.
    Sql(String),
    /// Left as it is (says someone looked at it).
    Keep,
}

impl Transform {
    /// Parses `hash`, `email`, `const:VALUE`, `sql:EXPR`...
    pub fn parse(text: &str) -> Result<Transform, String> {
        if let Some(value) = text.strip_prefix("const:") {
            return Ok(Transform::Const(value.to_string()));
        }
        if let Some(expr) = text.strip_prefix("sql:") {
            if expr.trim().is_empty() {
                return Err("sql: needs an expression, e.g. sql:left(name, 1)".into());
            }
            return Ok(Transform::Sql(expr.to_string()));
        }
        match text {
            "hash" => Ok(Transform::Hash),
            "email" => Ok(Transform::Email),
            "name" => Ok(Transform::Name),
            "phone" => Ok(Transform::Phone),
            "null" => Ok(Transform::Null),
            "keep" => Ok(Transform::Keep),
            other => Err(format!(
                "unknown transform '{other}': use hash, email, name, phone, null, const:VALUE, sql:EXPRESSION or keep"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_parse() {
        assert_eq!(Transform::parse("hash"), Ok(Transform::Hash));
        assert_eq!(
            Transform::parse("const:XX"),
            Ok(Transform::Const("XX".into()))
        );
        assert_eq!(
            Transform::parse("const:"),
            Ok(Transform::Const(String::new()))
        );
        assert_eq!(
            Transform::parse("sql:lower(x)"),
            Ok(Transform::Sql("lower(x)".into()))
        );
        assert!(Transform::parse("sql: ").is_err());
        assert!(
            Transform::parse("scramble")
                .unwrap_err()
                .contains("unknown transform 'scramble'")
        );
    }
}
