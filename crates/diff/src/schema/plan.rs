//! The vocabulary shared by the object families and the planner: phases,
//! fragments of SQL, and how a changed object can be altered.

use super::id::ObjectId;

/// Where a statement that creates or alters something goes, in the order
/// that lets each phase use what the earlier ones made. Dependencies read
/// from `pg_depend` override this order where they must (a column default
/// calling a function, a view over a view).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Phase {
    Schema,
    Extension,
    Type,
    Domain,
    Sequence,
    Table,
    Column,
    /// Primary keys, unique, check and exclusion constraints: foreign keys
    /// need the unique index they reference.
    Constraint,
    ForeignKey,
    Index,
    /// After the indexes it may name (`REPLICA IDENTITY USING INDEX`).
    ReplicaIdentity,
    /// After tables: PL/pgSQL bodies are not checked at creation, and SQL
    /// bodies are not either once `check_function_bodies` is off.
    Function,
    View,
    MaterializedView,
    Trigger,
    Policy,
    RowSecurity,
    Grant,
    /// After table grants, since revoking a table privilege also revokes
    /// it from every column.
    ColumnGrant,
    Comment,
    /// Last: the sequence and the column must both exist, and the column
    /// default that calls the sequence must already be there.
    SequenceOwner,
}

impl Phase {
    /// Rank in the order of creation.
    pub(crate) fn rank(self) -> u8 {
        self as u8
    }
}

/// Statements that do one thing to one object, at one phase, and what
/// they need beyond the object's own dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fragment {
    /// When it runs.
    pub phase: Phase,
    /// The statements.
    pub sql: Vec<String>,
    /// Other objects that must exist (in their new state) first.
    pub needs: Vec<ObjectId>,
}

impl Fragment {
    /// Statements with no extra needs.
    pub(crate) fn new(phase: Phase, sql: Vec<String>) -> Fragment {
        Fragment {
            phase,
            sql,
            needs: Vec::new(),
        }
    }

    /// One statement with no extra needs.
    pub(crate) fn one(phase: Phase, sql: String) -> Fragment {
        Fragment::new(phase, vec![sql])
    }
}

/// How an object that exists on both sides with different definitions is
/// brought from one to the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Alteration {
    /// `ALTER` (or `CREATE OR REPLACE`) statements; `retypes` when they
    /// change a column's type, which PostgreSQL refuses while views,
    /// policies, triggers or routines use the column.
    InPlace {
        fragments: Vec<Fragment>,
        retypes: bool,
    },
    /// Dropped and created again (and so are the objects that need it).
    Recreate,
    /// PostgreSQL has no way to make this change without losing data; the
    /// reason is reported and no SQL is written.
    Unsupported(String),
}

impl Alteration {
    /// In place, without a column type change.
    pub(crate) fn in_place(fragments: Vec<Fragment>) -> Alteration {
        Alteration::InPlace {
            fragments,
            retypes: false,
        }
    }
}

/// Lines of "what differs" for a change's one-line detail.
#[derive(Debug, Default)]
pub(crate) struct Changes(Vec<String>);

impl Changes {
    /// Records `what` if `a` and `b` differ, as `what a → b`.
    pub(crate) fn field<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, a: &T, b: &T) {
        if a != b {
            self.0.push(format!("{what} {} → {}", show(a), show(b)));
        }
    }

    /// Records `what` if `a` and `b` differ, without the values (long text).
    pub(crate) fn changed<T: PartialEq>(&mut self, what: &str, a: &T, b: &T) {
        if a != b {
            self.0.push(format!("{what} changed"));
        }
    }

    /// Records a free-form note.
    pub(crate) fn note(&mut self, text: impl Into<String>) {
        self.0.push(text.into());
    }

    /// The detail line.
    pub(crate) fn finish(self) -> String {
        if self.0.is_empty() {
            "changed".to_string()
        } else {
            self.0.join("; ")
        }
    }
}

/// `Debug` without the quotes around strings and the `Some(...)` around options.
fn show<T: std::fmt::Debug>(v: &T) -> String {
    let text = format!("{v:?}");
    let text = text
        .strip_prefix("Some(")
        .and_then(|t| t.strip_suffix(')'))
        .map(str::to_string)
        .unwrap_or(text);
    if text == "None" {
        return "none".to_string();
    }
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .map(|t| t.replace("\\\"", "\""))
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_details_read_well() {
        let mut c = Changes::default();
        c.field("type", &"integer".to_string(), &"bigint".to_string());
        c.field("default", &None::<String>, &Some("0".to_string()));
        c.field("not null", &false, &false);
        c.changed("body", &"a", &"b");
        assert_eq!(
            c.finish(),
            "type integer → bigint; default none → 0; body changed"
        );
        assert_eq!(Changes::default().finish(), "changed");
    }

    #[test]
    fn phases_put_keys_before_foreign_keys_and_ownership_last() {
        assert!(Phase::Constraint < Phase::ForeignKey);
        assert!(Phase::Table < Phase::Function);
        assert!(Phase::Grant < Phase::ColumnGrant);
        assert_eq!(
            [Phase::SequenceOwner, Phase::Schema]
                .iter()
                .map(|p| p.rank())
                .max(),
            Some(Phase::SequenceOwner.rank())
        );
    }
}
