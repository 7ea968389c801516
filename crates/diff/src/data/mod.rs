//! Data diff: the rows one side changed relative to the other.
//!
//! Cost follows the change, not the database: a table is compared only
//! where its heap file's blocks are no longer shared between the two sides
//! (see [`pgfork_pool::extents`]). Within a changed table only the tuples of
//! changed pages are read, and each of their keys is looked up on the other
//! side. A table whose file was rewritten (TRUNCATE, VACUUM FULL, ALTER
//! TYPE) is compared whole, by ordered scans.

mod catalog;
mod compare;
pub mod multiset;
mod pages;
mod patch;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

pub use catalog::{SequenceValue, TableInfo, fk_order, read_sequences, read_tables};
pub use compare::{added_values, compare_table, fetch_rows};
pub use pages::{PageSet, changed_heap_pages};
pub use patch::data_patch;

use crate::DiffError;

/// One side of a comparison: connections to its server and its data
/// directory, whose files are compared block by block.
pub struct Side<'a> {
    /// The database being compared, as its application role with pinned
    /// settings ([`pgfork_pg::untrusted::session::as_role`]): every query
    /// on content goes through this one.
    pub client: &'a mut postgres::Client,
    /// The superuser in the maintenance database, for `CHECKPOINT` only
    /// (none for a remote database, whose blocks are not compared).
    pub maintenance: Option<&'a mut postgres::Client>,
    /// The cluster's data directory (files read for extent maps only).
    pub datadir: &'a Path,
}

impl Side<'_> {
    /// Flushes shared buffers, so that the extent maps show every change.
    fn checkpoint(&mut self) -> Result<(), DiffError> {
        if let Some(client) = self.maintenance.as_deref_mut() {
            client
                .batch_execute("CHECKPOINT")
                .map_err(DiffError::sql("checkpoint before diffing"))?;
        }
        Ok(())
    }
}

/// What to compare and how much to show.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// Rows listed per table (counts are always complete).
    pub limit: usize,
    /// Compare every table whole, ignoring extent maps (the baseline).
    pub full: bool,
    /// Only these tables (`schema.table`), if given.
    pub tables: Option<Vec<String>>,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions {
            limit: 20,
            full: false,
            tables: None,
        }
    }
}

/// A row's identity: its key's values as text, in key order (see
/// [`TableInfo::key`]).
pub type Key = Vec<Option<String>>;

/// One changed row.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum RowChange {
    /// A row only the new side has.
    Insert {
        /// Key.
        key: Key,
        /// The row.
        row: Value,
    },
    /// A row both sides have with different values.
    Update {
        /// Key.
        key: Key,
        /// Changed columns: `[old, new]`.
        changes: BTreeMap<String, [Value; 2]>,
    },
    /// A row only the old side has.
    Delete {
        /// Key.
        key: Key,
        /// The row as it was.
        row: Value,
    },
    /// A table without a key gained this row (one more copy).
    Added {
        /// The row.
        row: Value,
    },
    /// A table without a key lost this row (one copy fewer).
    Removed {
        /// The row.
        row: Value,
    },
}

/// How a table was compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Only changed pages were read.
    Pages,
    /// The whole table was read (rewritten, new, or full mode).
    Full,
}

/// What changed in one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableDiff {
    /// `schema.table`.
    pub table: String,
    /// Key columns (primary key, or a unique index over NOT NULL columns), if any.
    pub key: Option<Vec<String>>,
    /// Rows inserted (or added, without a key).
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted (or removed, without a key).
    pub deleted: u64,
    /// How it was compared.
    pub method: Method,
    /// Heap pages read on each side (0 for a full comparison).
    pub pages: u64,
    /// Up to `limit` changed rows.
    pub rows: Vec<RowChange>,
    /// Columns present on one side only (not compared; see the schema diff).
    pub uncompared_columns: Vec<String>,
}

impl TableDiff {
    /// Whether any row changed.
    pub fn is_empty(&self) -> bool {
        self.inserted + self.updated + self.deleted == 0
    }
}

/// A sequence whose value moved.
#[derive(Debug, Clone, Serialize)]
pub struct SequenceChange {
    /// `schema.sequence`.
    pub sequence: String,
    /// Value on the old side (None: never used or absent).
    pub from: Option<i64>,
    /// Value on the new side.
    pub to: Option<i64>,
}

/// Everything the data diff found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataDiff {
    /// Tables with changed rows.
    pub tables: Vec<TableDiff>,
    /// Tables whose blocks are all shared: not read at all.
    pub skipped: Vec<String>,
    /// Tables whose blocks changed but whose rows did not (hint bits,
    /// vacuum): read, nothing to report.
    pub unchanged: Vec<String>,
    /// Sequences whose value moved.
    pub sequences: Vec<SequenceChange>,
}

/// Compares the rows of every table of `from` and `to` (tables that exist
/// on one side only are reported with all their rows).
pub fn diff_data(
    from: &mut Side,
    to: &mut Side,
    opts: &DataOptions,
) -> Result<DataDiff, DiffError> {
    // Changes still in shared buffers are invisible to extent maps.
    from.checkpoint()?;
    to.checkpoint()?;
    let old_tables = read_tables(from.client)?;
    let new_tables = read_tables(to.client)?;
    let mut diff = DataDiff::default();
    let names: std::collections::BTreeSet<&String> =
        old_tables.keys().chain(new_tables.keys()).collect();
    for name in names {
        if opts
            .tables
            .as_ref()
            .is_some_and(|only| !only.contains(name))
        {
            continue;
        }
        let t = match (old_tables.get(name), new_tables.get(name)) {
            (Some(a), Some(b)) => {
                let began = std::time::Instant::now();
                let pages = if opts.full || a.renamed_columns(b) {
                    PageSet::All
                } else {
                    changed_heap_pages(from.datadir, &a.file, to.datadir, &b.file)?
                };
                tracing::debug!(table = %name, pages = pages.len(), elapsed = ?began.elapsed(), "extents compared");
                if pages == PageSet::None {
                    diff.skipped.push(name.clone());
                    continue;
                }
                let began = std::time::Instant::now();
                let t = compare_table(from, to, a, b, &pages, opts)?;
                tracing::debug!(table = %name, elapsed = ?began.elapsed(), "rows compared");
                t
            }
            (Some(a), None) => compare::one_side(from, a, false, opts)?,
            (None, Some(b)) => compare::one_side(to, b, true, opts)?,
            (None, None) => unreachable!("the name came from one of the maps"),
        };
        if t.is_empty() {
            diff.unchanged.push(name.clone());
        } else {
            diff.tables.push(t);
        }
    }
    let old_seq = read_sequences(from.client)?;
    let new_seq = read_sequences(to.client)?;
    let seq_names: std::collections::BTreeSet<&String> =
        old_seq.keys().chain(new_seq.keys()).collect();
    for name in seq_names {
        let (a, b) = (
            old_seq.get(name).copied().flatten(),
            new_seq.get(name).copied().flatten(),
        );
        if a != b {
            diff.sequences.push(SequenceChange {
                sequence: name.clone(),
                from: a,
                to: b,
            });
        }
    }
    Ok(diff)
}
