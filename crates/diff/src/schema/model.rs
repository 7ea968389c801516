//! What one reading of a database holds: objects, their definitions, what
//! they depend on.
//!
//! A [`Definition`] holds only what means something: two objects with the
//! same identity are the same object exactly when their definitions are
//! equal. OIDs, column positions and dependency lists are kept out of it
//! (dependencies live beside it in [`Object`], for ordering SQL only).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::id::ObjectId;

/// Every user object of one database, by identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// The objects.
    pub objects: BTreeMap<ObjectId, Object>,
    /// Objects found that the schema diff does not cover (aggregates,
    /// rules, range types, ...), described by `pg_describe_object`, so that
    /// a diff can say when one differs instead of passing over it.
    pub unsupported: BTreeSet<String>,
    /// Indexes of partitions attached to a partitioned table's index
    /// (which they follow, so they are no objects of their own): qualified
    /// name, and the index they are attached to.
    #[serde(default)]
    pub attached_indexes: BTreeMap<String, String>,
    /// What a partition or child table has only through its parent (its
    /// inherited columns, cloned constraints, attached indexes): no
    /// objects of their own, until the table is detached, which makes
    /// them its own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inherited: BTreeMap<ObjectId, Object>,
}

impl Schema {
    /// The object with this identity.
    pub fn get(&self, id: &ObjectId) -> Option<&Object> {
        self.objects.get(id)
    }

    /// Identities of the objects that depend on `id` (the inverse of
    /// [`Object::deps`]).
    pub fn dependents(&self) -> BTreeMap<ObjectId, BTreeSet<ObjectId>> {
        let mut out: BTreeMap<ObjectId, BTreeSet<ObjectId>> = BTreeMap::new();
        for (id, obj) in &self.objects {
            for dep in obj.deps.iter().chain(obj.parent.iter()) {
                out.entry(dep.clone()).or_default().insert(id.clone());
            }
        }
        out
    }

    /// The children of each object (objects whose [`Object::parent`] it is).
    pub fn children(&self) -> BTreeMap<ObjectId, BTreeSet<ObjectId>> {
        let mut out: BTreeMap<ObjectId, BTreeSet<ObjectId>> = BTreeMap::new();
        for (id, obj) in &self.objects {
            if let Some(parent) = &obj.parent {
                out.entry(parent.clone()).or_default().insert(id.clone());
            }
        }
        out
    }
}

/// One object as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// What it is; compared to tell whether it changed.
    pub def: Definition,
    /// Objects it needs to exist first (from `pg_depend`), not counting its
    /// parent. Not part of the definition: it follows from it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub deps: BTreeSet<ObjectId>,
    /// The object it belongs to and disappears with: a column's table, a
    /// comment's object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ObjectId>,
    /// Position among its siblings (a column's attnum), for ordering only:
    /// columns are added in this order so that the result has them in the
    /// same order as the side it came from.
    #[serde(default)]
    pub position: i32,
}

impl Object {
    /// An object without dependencies yet.
    pub fn new(def: Definition, parent: Option<ObjectId>) -> Object {
        Object {
            def,
            deps: BTreeSet::new(),
            parent,
            position: 0,
        }
    }
}

/// The definition of one object, by family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Definition {
    /// A schema.
    Schema(SchemaDef),
    /// An extension.
    Extension(ExtensionDef),
    /// A collation.
    Collation(CollationDef),
    /// An enum type.
    Enum(EnumDef),
    /// A domain.
    Domain(DomainDef),
    /// A composite type.
    Type(CompositeDef),
    /// A sequence.
    Sequence(SequenceDef),
    /// A table.
    Table(TableDef),
    /// A column of a table.
    Column(ColumnDef),
    /// A table constraint.
    Constraint(ConstraintDef),
    /// An index.
    Index(IndexDef),
    /// A view.
    View(ViewDef),
    /// A materialized view.
    MaterializedView(MatViewDef),
    /// A function or procedure.
    Routine(RoutineDef),
    /// A trigger.
    Trigger(TriggerDef),
    /// A row-level security policy.
    Policy(PolicyDef),
    /// Row-level security switches of a table.
    RowSecurity(RowSecurityDef),
    /// The privileges of one role on one object.
    Grant(GrantDef),
    /// A comment.
    Comment(CommentDef),
}

/// `CREATE SCHEMA`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaDef {
    /// Quoted name.
    pub name: String,
    /// Owning role, quoted.
    pub owner: String,
}

/// `CREATE EXTENSION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionDef {
    /// Quoted name.
    pub name: String,
    /// Schema its objects live in, quoted.
    pub schema: String,
    /// Installed version.
    pub version: String,
}

/// `CREATE COLLATION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollationDef {
    /// Qualified name.
    pub name: String,
    /// Owning role, quoted.
    pub owner: String,
    /// `icu`, `libc` or `default`.
    pub provider: String,
    /// Its locale (ICU), if set.
    pub locale: Option<String>,
    /// `LC_COLLATE` (libc), if set.
    pub lc_collate: Option<String>,
    /// `LC_CTYPE` (libc), if set.
    pub lc_ctype: Option<String>,
    /// Whether equal means byte-equal.
    pub deterministic: bool,
}

/// `CREATE TYPE ... AS ENUM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnumDef {
    /// Qualified name.
    pub name: String,
    /// Owning role.
    pub owner: String,
    /// Labels in sort order.
    pub labels: Vec<String>,
}

/// `CREATE DOMAIN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainDef {
    /// Qualified name.
    pub name: String,
    /// Owning role.
    pub owner: String,
    /// Underlying type, as `format_type` writes it.
    pub base: String,
    /// Collation, when not the base type's.
    pub collation: Option<String>,
    /// Default expression.
    pub default: Option<String>,
    /// `NOT NULL`.
    pub not_null: bool,
    /// Constraints: quoted name to `pg_get_constraintdef`.
    pub constraints: BTreeMap<String, String>,
}

/// `CREATE TYPE ... AS (...)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompositeDef {
    /// Qualified name.
    pub name: String,
    /// Owning role.
    pub owner: String,
    /// Attributes in order.
    pub attributes: Vec<Attribute>,
}

/// One attribute of a composite type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// Quoted name.
    pub name: String,
    /// Type, as `format_type` writes it.
    pub data_type: String,
    /// Collation, when not the type's default.
    pub collation: Option<String>,
}

/// `CREATE SEQUENCE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceDef {
    /// Qualified name.
    pub name: String,
    /// Owning role.
    pub owner: String,
    /// `AS` type.
    pub data_type: String,
    /// `START WITH`.
    pub start: i64,
    /// `INCREMENT BY`.
    pub increment: i64,
    /// `MINVALUE`.
    pub min: i64,
    /// `MAXVALUE`.
    pub max: i64,
    /// `CACHE`.
    pub cache: i64,
    /// `CYCLE`.
    pub cycle: bool,
    /// `UNLOGGED`.
    pub unlogged: bool,
    /// `OWNED BY` this column.
    pub owned_by: Option<ObjectId>,
}

/// `CREATE TABLE` without its columns, constraints and indexes (objects
/// of their own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    /// Qualified name.
    pub name: String,
    /// Owning role.
    pub owner: String,
    /// `UNLOGGED`.
    pub unlogged: bool,
    /// `PARTITION BY` clause (`RANGE (created_at)`).
    pub partition_key: Option<String>,
    /// `PARTITION OF parent FOR VALUES ...`.
    pub partition_of: Option<PartitionOf>,
    /// `INHERITS` parents, qualified, in order.
    pub inherits: Vec<String>,
    /// Storage parameters (`fillfactor=70`).
    pub options: Vec<String>,
    /// `REPLICA IDENTITY` (`DEFAULT`, `FULL`, `NOTHING`, `USING INDEX i`).
    pub replica_identity: String,
    /// The index (or constraint) named by `REPLICA IDENTITY USING INDEX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_index: Option<ObjectId>,
    /// Columns it only inherits that are `NOT NULL` here though not in
    /// any parent (quoted; set on the partition alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub own_not_null: Vec<String>,
    /// Columns it only inherits whose default here is not its (first)
    /// parent's, in column order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub own_defaults: Vec<OwnDefault>,
    /// The first parent's default of every column it only inherits (quoted
    /// name to expression), to set again when an own default goes.
    #[serde(skip)]
    pub parent_defaults: Aside<BTreeMap<String, Option<String>>>,
}

/// A default an inherited column has on this table alone (`ALTER TABLE
/// partition ALTER COLUMN c SET DEFAULT`), unlike its parent's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnDefault {
    /// Quoted column name.
    pub column: String,
    /// Its default here (`None`: none, though the parent has one).
    pub default: Option<String>,
    /// The parent's default. The parent's `SET DEFAULT` reaches its
    /// partitions too, so when it changes, this table's own default is set
    /// again after it.
    pub parent: Option<String>,
}

/// What a definition carries for writing its SQL without being part of
/// what it is: never compared (always equal) and never serialized.
#[derive(Debug, Clone, Default)]
pub struct Aside<T>(pub T);

impl<T> PartialEq for Aside<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Aside<T> {}

/// A partition's parent and bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOf {
    /// Parent table, qualified.
    pub parent: String,
    /// `FOR VALUES ...` or `DEFAULT`.
    pub bound: String,
}

/// A column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Qualified table name.
    pub table: String,
    /// Quoted column name.
    pub name: String,
    /// Type, as `format_type` writes it (with its typmod).
    pub data_type: String,
    /// Collation, when not the type's default.
    pub collation: Option<String>,
    /// `NOT NULL`.
    pub not_null: bool,
    /// Default expression (not for generated columns).
    pub default: Option<String>,
    /// `GENERATED ALWAYS AS (expr) STORED`.
    pub generated: Option<String>,
    /// `GENERATED ... AS IDENTITY`.
    pub identity: Option<IdentityDef>,
    /// `SET STATISTICS`, when set.
    pub statistics: Option<i32>,
    /// `SET STORAGE`, when not the type's default.
    pub storage: Option<String>,
    /// The type's default storage, to go back to it.
    pub type_storage: String,
    /// `COMPRESSION`, when set.
    pub compression: Option<String>,
    /// Declared in this table (not only inherited from a parent).
    pub local: bool,
}

/// An identity column's generation and sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityDef {
    /// `ALWAYS` (else `BY DEFAULT`).
    pub always: bool,
    /// The sequence's qualified name.
    pub sequence: String,
    /// `START WITH`.
    pub start: i64,
    /// `INCREMENT BY`.
    pub increment: i64,
    /// `MINVALUE`.
    pub min: i64,
    /// `MAXVALUE`.
    pub max: i64,
    /// `CACHE`.
    pub cache: i64,
    /// `CYCLE`.
    pub cycle: bool,
}

/// Kinds of table constraints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintType {
    /// `PRIMARY KEY`.
    PrimaryKey,
    /// `UNIQUE`.
    Unique,
    /// `CHECK`.
    Check,
    /// `EXCLUDE`.
    Exclusion,
    /// `FOREIGN KEY`.
    ForeignKey,
}

/// A table constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConstraintDef {
    /// Qualified table name.
    pub table: String,
    /// Quoted constraint name.
    pub name: String,
    /// Its kind.
    pub constraint_type: ConstraintType,
    /// `pg_get_constraintdef`.
    pub definition: String,
    /// The table is `CLUSTER`ed on its index.
    pub clustered: bool,
}

/// An index not owned by a constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    /// Qualified table name.
    pub table: String,
    /// Qualified index name.
    pub name: String,
    /// `pg_get_indexdef`, for a partitioned table without `ONLY`.
    pub definition: String,
    /// The table is `CLUSTER`ed on it.
    pub clustered: bool,
}

/// A view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    /// Qualified name.
    pub name: String,
    /// Owning role.
    pub owner: String,
    /// `pg_get_viewdef`, without the final semicolon.
    pub definition: String,
    /// Output columns: quoted name and type, in order.
    pub columns: Vec<(String, String)>,
    /// Options (`security_barrier=true`, `check_option=local`).
    pub options: Vec<String>,
}

/// A materialized view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatViewDef {
    /// Qualified name.
    pub name: String,
    /// Owning role.
    pub owner: String,
    /// `pg_get_viewdef`, without the final semicolon.
    pub definition: String,
    /// Storage parameters.
    pub options: Vec<String>,
    /// Holds data (`WITH DATA`), as opposed to `WITH NO DATA`.
    pub populated: bool,
}

/// A function or procedure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutineDef {
    /// `PROCEDURE` rather than `FUNCTION`.
    pub procedure: bool,
    /// Qualified name with identity arguments, for `DROP` and `ALTER`.
    pub signature: String,
    /// `pg_get_function_arguments`: names, modes, defaults.
    pub arguments: String,
    /// `pg_get_function_result` (none for procedures).
    pub result: Option<String>,
    /// `pg_get_functiondef`: the whole `CREATE OR REPLACE` statement.
    pub definition: String,
    /// Owning role.
    pub owner: String,
}

/// A trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerDef {
    /// Qualified table name.
    pub table: String,
    /// Quoted trigger name.
    pub name: String,
    /// `pg_get_triggerdef`.
    pub definition: String,
    /// `ENABLE`, `DISABLE`, `ENABLE REPLICA` or `ENABLE ALWAYS`.
    pub enabled: String,
}

/// A row-level security policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDef {
    /// Qualified table name.
    pub table: String,
    /// Quoted policy name.
    pub name: String,
    /// `PERMISSIVE` (else `RESTRICTIVE`).
    pub permissive: bool,
    /// `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
    pub command: String,
    /// Roles it applies to, quoted, or `PUBLIC`.
    pub roles: Vec<String>,
    /// `USING` expression.
    pub using: Option<String>,
    /// `WITH CHECK` expression.
    pub with_check: Option<String>,
}

/// `ENABLE` / `FORCE ROW LEVEL SECURITY` of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowSecurityDef {
    /// Qualified table name.
    pub table: String,
    /// `ENABLE ROW LEVEL SECURITY`.
    pub enabled: bool,
    /// `FORCE ROW LEVEL SECURITY`.
    pub forced: bool,
}

/// One privilege as granted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Privilege {
    /// `SELECT`, `USAGE`, ...
    pub name: String,
    /// `WITH GRANT OPTION`.
    pub grantable: bool,
}

/// The privileges of one role on one object, listed only when they differ
/// from PostgreSQL's built-in default for that object (so a fresh object
/// has no grants, and a `REVOKE EXECUTE ... FROM PUBLIC` is one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantDef {
    /// The object in `GRANT ... ON` syntax (`TABLE public.t`).
    pub on: String,
    /// For column privileges, the quoted column.
    pub column: Option<String>,
    /// Quoted role name, or `PUBLIC`.
    pub grantee: String,
    /// What the role holds.
    pub privileges: Vec<Privilege>,
    /// What it would hold by default (what removing this grant restores).
    pub defaults: Vec<Privilege>,
}

/// `COMMENT ON`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentDef {
    /// The object in `COMMENT ON` syntax (`COLUMN public.t.c`).
    pub on: String,
    /// The text.
    pub text: String,
}

impl Definition {
    /// How `GRANT ... ON` names this object, and the column for column
    /// privileges; `None` for objects that take no privileges.
    pub(crate) fn grant_target(&self) -> Option<(String, Option<String>)> {
        Some(match self {
            Definition::Schema(d) => (format!("SCHEMA {}", d.name), None),
            Definition::Enum(d) => (format!("TYPE {}", d.name), None),
            Definition::Type(d) => (format!("TYPE {}", d.name), None),
            Definition::Domain(d) => (format!("DOMAIN {}", d.name), None),
            Definition::Sequence(d) => (format!("SEQUENCE {}", d.name), None),
            Definition::Table(d) => (format!("TABLE {}", d.name), None),
            Definition::View(d) => (format!("TABLE {}", d.name), None),
            Definition::MaterializedView(d) => (format!("TABLE {}", d.name), None),
            Definition::Column(d) => (format!("TABLE {}", d.table), Some(d.name.clone())),
            Definition::Routine(d) => (format!("{} {}", d.keyword(), d.signature), None),
            _ => return None,
        })
    }

    /// How `COMMENT ON` names this object; `None` for what takes no comment.
    pub(crate) fn comment_target(&self) -> Option<String> {
        Some(match self {
            Definition::Schema(d) => format!("SCHEMA {}", d.name),
            Definition::Extension(d) => format!("EXTENSION {}", d.name),
            Definition::Collation(d) => format!("COLLATION {}", d.name),
            Definition::Enum(d) => format!("TYPE {}", d.name),
            Definition::Type(d) => format!("TYPE {}", d.name),
            Definition::Domain(d) => format!("DOMAIN {}", d.name),
            Definition::Sequence(d) => format!("SEQUENCE {}", d.name),
            Definition::Table(d) => format!("TABLE {}", d.name),
            Definition::Column(d) => format!("COLUMN {}.{}", d.table, d.name),
            Definition::Constraint(d) => format!("CONSTRAINT {} ON {}", d.name, d.table),
            Definition::Index(d) => format!("INDEX {}", d.name),
            Definition::View(d) => format!("VIEW {}", d.name),
            Definition::MaterializedView(d) => format!("MATERIALIZED VIEW {}", d.name),
            Definition::Routine(d) => format!("{} {}", d.keyword(), d.signature),
            Definition::Trigger(d) => format!("TRIGGER {} ON {}", d.name, d.table),
            Definition::Policy(d) => format!("POLICY {} ON {}", d.name, d.table),
            _ => return None,
        })
    }
}
