//! Stable identities of schema objects.
//!
//! An [`ObjectId`] names an object the same way in every database that has
//! it: by kind and qualified name, never by OID, so that the readings of a
//! base snapshot, a branch and its source can be compared object by object
//! (and promote can tell which objects both sides changed).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What family an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// `CREATE SCHEMA`.
    Schema,
    /// `CREATE EXTENSION` (its member objects are not listed).
    Extension,
    /// A collation.
    Collation,
    /// `CREATE TYPE ... AS ENUM`.
    Enum,
    /// `CREATE DOMAIN`.
    Domain,
    /// `CREATE TYPE ... AS (...)`: a composite type.
    Type,
    /// `CREATE SEQUENCE` (identity sequences belong to their column).
    Sequence,
    /// `CREATE TABLE`, partitioned tables and partitions included.
    Table,
    /// A column of a table, named `schema.table.column`.
    Column,
    /// A table constraint, named `schema.table.constraint`.
    Constraint,
    /// An index that is not the index of a constraint.
    Index,
    /// `CREATE VIEW`.
    View,
    /// `CREATE MATERIALIZED VIEW`.
    MaterializedView,
    /// `CREATE FUNCTION`, named with its input argument types.
    Function,
    /// `CREATE PROCEDURE`, named with its input argument types.
    Procedure,
    /// A trigger, named `schema.table.trigger`.
    Trigger,
    /// A row-level security policy, named `schema.table.policy`.
    Policy,
    /// Row-level security switched on (or forced) for a table.
    RowSecurity,
    /// What one role may do on one object, when it differs from the default.
    Grant,
    /// The comment on one object.
    Comment,
}

impl ObjectKind {
    /// Every kind, in creation order.
    pub const ALL: [ObjectKind; 20] = [
        ObjectKind::Schema,
        ObjectKind::Extension,
        ObjectKind::Collation,
        ObjectKind::Enum,
        ObjectKind::Domain,
        ObjectKind::Type,
        ObjectKind::Sequence,
        ObjectKind::Table,
        ObjectKind::Column,
        ObjectKind::Constraint,
        ObjectKind::Index,
        ObjectKind::View,
        ObjectKind::MaterializedView,
        ObjectKind::Function,
        ObjectKind::Procedure,
        ObjectKind::Trigger,
        ObjectKind::Policy,
        ObjectKind::RowSecurity,
        ObjectKind::Grant,
        ObjectKind::Comment,
    ];

    /// The word used in identities and messages.
    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::Schema => "schema",
            ObjectKind::Extension => "extension",
            ObjectKind::Collation => "collation",
            ObjectKind::Enum => "enum",
            ObjectKind::Domain => "domain",
            ObjectKind::Type => "type",
            ObjectKind::Sequence => "sequence",
            ObjectKind::Table => "table",
            ObjectKind::Column => "column",
            ObjectKind::Constraint => "constraint",
            ObjectKind::Index => "index",
            ObjectKind::View => "view",
            ObjectKind::MaterializedView => "materialized view",
            ObjectKind::Function => "function",
            ObjectKind::Procedure => "procedure",
            ObjectKind::Trigger => "trigger",
            ObjectKind::Policy => "policy",
            ObjectKind::RowSecurity => "row security",
            ObjectKind::Grant => "grant",
            ObjectKind::Comment => "comment",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The identity of one schema object: its kind and its qualified name.
///
/// Names are written as PostgreSQL's `quote_ident` writes them, so they
/// can be pasted into SQL: `table public.orders`, `column
/// public.orders.total`, `constraint public.orders.orders_pkey`, `function
/// public.f(integer, text)` (input argument types only, as PostgreSQL
/// itself tells overloads apart), `grant table public.orders to alice`,
/// `comment column public.orders.total`. Column order is deliberately not
/// part of a column's identity.
///
/// Serialised as that one string (`"table public.orders"`), so that it can
/// be a JSON map key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    /// The family.
    pub kind: ObjectKind,
    /// Qualified name; for grants and comments, the identity of the object
    /// they are on (and the grantee).
    pub name: String,
}

impl ObjectId {
    /// An identity from its parts.
    pub fn new(kind: ObjectKind, name: impl Into<String>) -> ObjectId {
        ObjectId {
            kind,
            name: name.into(),
        }
    }

    /// The grant of `grantee` (a quoted role name, or `PUBLIC`) on `target`.
    pub fn grant(target: &ObjectId, grantee: &str) -> ObjectId {
        ObjectId::new(ObjectKind::Grant, format!("{target} to {grantee}"))
    }

    /// The comment on `target`.
    pub fn comment(target: &ObjectId) -> ObjectId {
        ObjectId::new(ObjectKind::Comment, target.to_string())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// A string that is not `KIND NAME` with a known kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an object identity (KIND NAME): {0:?}")]
pub struct BadObjectId(pub String);

impl FromStr for ObjectId {
    type Err = BadObjectId;

    fn from_str(s: &str) -> Result<ObjectId, BadObjectId> {
        // Longest label first: "materialized view x" must not parse as a
        // "view" named "materialized..." (no label is a prefix of another
        // today, but this keeps it so if one is added).
        let mut kinds = ObjectKind::ALL;
        kinds.sort_by_key(|k| std::cmp::Reverse(k.label().len()));
        for kind in kinds {
            if let Some(rest) = s.strip_prefix(kind.label())
                && let Some(name) = rest.strip_prefix(' ')
                && !name.is_empty()
            {
                return Ok(ObjectId::new(kind, name));
            }
        }
        Err(BadObjectId(s.to_string()))
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ObjectId, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_text_and_json() {
        let ids = [
            ObjectId::new(ObjectKind::Table, "public.orders"),
            ObjectId::new(ObjectKind::MaterializedView, "s.\"My View\""),
            ObjectId::new(ObjectKind::Function, "public.f(integer, text)"),
            ObjectId::new(ObjectKind::RowSecurity, "public.orders"),
            ObjectId::grant(
                &ObjectId::new(ObjectKind::Column, "public.orders.total"),
                "PUBLIC",
            ),
            ObjectId::comment(&ObjectId::new(ObjectKind::View, "public.v")),
        ];
        for id in ids {
            let text = id.to_string();
            assert_eq!(text.parse::<ObjectId>().unwrap(), id, "{text}");
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(serde_json::from_str::<ObjectId>(&json).unwrap(), id);
        }
        assert_eq!(
            ObjectId::grant(&ObjectId::new(ObjectKind::Table, "public.t"), "alice").to_string(),
            "grant table public.t to alice"
        );
        assert!("tabel public.t".parse::<ObjectId>().is_err());
        assert!("table".parse::<ObjectId>().is_err());
    }

    #[test]
    fn identities_work_as_json_map_keys() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(ObjectId::new(ObjectKind::Schema, "app"), 1);
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json, r#"{"schema app":1}"#);
    }
}
