//! Schema diff: read every object from the catalogs, compare, write SQL.
//!
//! - [`read_schema`] reads every user object of a database into a
//!   [`Schema`]: a map from stable identities ([`ObjectId`], such as
//!   `table public.orders` or `function public.f(integer, text)`) to
//!   definitions that compare equal exactly when the objects are the same.
//! - [`diff_schema`] compares two readings into a [`SchemaDiff`]: what
//!   changed, object by object, and the SQL that turns the first database
//!   into the second, ordered by dependencies so that it applies in one
//!   transaction.
//! - [`changed_ids`] and [`conflicts`] serve promote's three-way check.
//!
//! Covered: schemas, extensions, collations, enums, domains, composite types,
//! sequences, tables (partitioned ones and partitions included), columns,
//! constraints, indexes, views, materialized views, functions, procedures,
//! triggers, row-level security and its policies, privileges and comments.
//! Objects of other kinds are listed by description in
//! [`Schema::unsupported`], and a diff warns when those differ.
//!
//! One file per object family holds how it is read, created, dropped and
//! altered; [`diff_schema`] (`diff.rs`) decides each object's fate and
//! `order.rs` sorts the statements.

mod collations;
mod comments;
mod constraints;
mod diff;
mod id;
mod model;
mod namespaces;
mod order;
mod plan;
mod read;
mod routines;
mod security;
mod sequences;
mod sql;
mod tables;
mod three_way;
mod types;
mod views;

pub use diff::{ChangeKind, ObjectChange, SchemaDiff, diff_schema};
pub use id::{BadObjectId, ObjectId, ObjectKind};
pub use model::{
    Aside, Attribute, CollationDef, ColumnDef, CommentDef, CompositeDef, ConstraintDef,
    ConstraintType, Definition, DomainDef, EnumDef, ExtensionDef, GrantDef, IdentityDef, IndexDef,
    MatViewDef, Object, OwnDefault, PartitionOf, PolicyDef, Privilege, RoutineDef, RowSecurityDef,
    Schema, SchemaDef, SequenceDef, TableDef, TriggerDef, ViewDef,
};
pub use read::read_schema;
pub use three_way::{changed_ids, conflicts};
