//! What `promote` is asked to do and what it reports: the public types
//! the CLI, the API and the tests use.

use pgfork_diff::data::Key;
use serde::Serialize;
use serde_json::Value;

use crate::gates::{AssertionFile, GateResult};

/// How conflicts are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The branch's version wins.
    Ours,
    /// The source's current version stays.
    Theirs,
}

/// What `promote` was asked to do.
#[derive(Debug, Clone)]
pub struct PromoteRequest {
    /// The branch whose changes are applied.
    pub branch: String,
    /// Only report what would be applied.
    pub dry_run: bool,
    /// Resolve conflicts this way instead of refusing.
    pub strategy: Option<Strategy>,
    /// The user confirmed applying to a remote source.
    pub confirmed: bool,
    /// Apply a patch that cannot carry everything (it has warnings): the
    /// source then differs from the branch where the warnings say.
    pub allow_partial: bool,
    /// Assertion files to pass besides the source's stored gates
    /// (`--assert FILE`; see [`crate::gates`]).
    pub assertions: Vec<AssertionFile>,
}

/// Something changed on both sides since the snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    /// `schema.table` (or object).
    pub object: String,
    /// Primary key of the row, for a row conflict.
    pub key: Option<Key>,
    /// What happened on each side.
    pub reason: String,
    /// The row in the base snapshot.
    pub base: Option<Value>,
    /// The row in the branch.
    pub branch: Option<Value>,
    /// The row in the source now.
    pub source: Option<Value>,
}

/// What `promote` did or would do.
#[derive(Debug, Clone, Serialize)]
pub struct PromoteReport {
    /// The branch.
    pub branch: String,
    /// The source it was applied to.
    pub source: String,
    /// Whether the changes were applied.
    pub applied: bool,
    /// Conflicts found (resolved by `strategy` if it is set).
    pub conflicts: Vec<Conflict>,
    /// How conflicts were resolved.
    pub strategy: Option<Strategy>,
    /// Schema objects the branch changed (added, removed, modified).
    pub schema_changes: usize,
    /// Rows inserted on the source.
    pub inserted: u64,
    /// Rows updated on the source.
    pub updated: u64,
    /// Rows deleted on the source.
    pub deleted: u64,
    /// The statements, in order (one transaction).
    pub statements: Vec<String>,
    /// The snapshot of the source taken after applying.
    pub snapshot: Option<String>,
    /// What the patch does not carry (the diff's warnings), and, with
    /// `--allow-partial`, where the source was left different.
    pub warnings: Vec<String>,
    /// Statements run before the transaction, each committed on its own:
    /// enum values the rest uses (PostgreSQL refuses a new enum value in
    /// the transaction that adds it). They stay if the rest fails.
    pub before_transaction: Vec<String>,
    /// The promotion gates and how each went: the scope bounds and the
    /// assertions on the branch, then (once applied) on the source.
    pub gates: Vec<GateResult>,
    /// What the branch changed against its base, which a promotion
    /// request shows (so it need not diff the branch again). Not in the
    /// report's JSON: the statements and counts above are what the patch
    /// writes.
    #[serde(skip)]
    pub branch_changes: BranchChanges,
}

/// What a branch changed against its base snapshot: schema objects and
/// row counts, no row values.
#[derive(Debug, Clone, Default)]
pub struct BranchChanges {
    /// The base, as a diff names its side (`snapshot shop@3`).
    pub base: String,
    /// Each schema object added, removed, modified or rebuilt.
    pub schema: Vec<(String, pgfork_diff::schema::ChangeKind)>,
    /// Each table whose rows changed: (`schema.table`, inserted, updated,
    /// deleted).
    pub tables: Vec<(String, u64, u64, u64)>,
    /// What the schema diff could not express or check.
    pub warnings: Vec<String>,
}
