//! `pgfork promote`: apply what a branch changed back to its source, in one
//! transaction, after a three-way check of the base snapshot, the branch
//! and the source as it is now.

use std::collections::{BTreeMap, HashMap};

use pgfork_diff::data::{
    DataDiff, DataOptions, Key, RowChange, Side, TableDiff, TableInfo, added_values, data_patch,
    diff_data, fetch_rows, fk_order, multiset, read_tables,
};
use pgfork_diff::schema::{
    ChangeKind, ObjectKind, SchemaDiff, conflicts as schema_conflicts, diff_schema, read_schema,
};
use pgfork_pg::remote::RemoteUrl;
use pgfork_pool::meta::{PolicyRow, RemoteRow, SnapshotRow};
use serde::Serialize;
use serde_json::Value;

use crate::diff::Resolved;
use pgfork_pg::untrusted::session::{self, Access};

use crate::gates::{self, AssertionFile, GateCheck, GateResult, GateSide};
use crate::{Engine, EngineError, Result, ServerKind, promote_check};

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
}

/// Whether `sql` is exactly an enum value addition as the schema diff
/// writes it: `ALTER TYPE name ADD VALUE 'label'[ BEFORE|AFTER 'label']`.
/// Read by its structure, not by a substring: names and labels are the
/// branch's, and no other statement may pass for one, since these run
/// outside the promote's transaction and its check.
fn adds_enum_value(sql: &str) -> bool {
    let rest = sql
        .strip_prefix("ALTER TYPE ")
        .and_then(skip_name)
        .and_then(|r| r.strip_prefix(" ADD VALUE "))
        .and_then(skip_literal);
    match rest {
        Some("") => true,
        Some(r) => {
            r.strip_prefix(" BEFORE ")
                .or_else(|| r.strip_prefix(" AFTER "))
                .and_then(skip_literal)
                == Some("")
        }
        None => false,
    }
}

/// What follows a (possibly schema-qualified) identifier at the start of `s`.
fn skip_name(s: &str) -> Option<&str> {
    let rest = skip_ident(s)?;
    match rest.strip_prefix('.') {
        Some(r) => skip_ident(r),
        None => Some(rest),
    }
}

/// What follows one identifier, plain or double-quoted (`""` inside).
fn skip_ident(s: &str) -> Option<&str> {
    if let Some(body) = s.strip_prefix('"') {
        return skip_quoted(body, '"');
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[end..])
}

/// What follows a string literal `'...'` (`''` inside).
fn skip_literal(s: &str) -> Option<&str> {
    skip_quoted(s.strip_prefix('\'')?, '\'')
}

/// What follows the closing `quote` of a quoted token whose opening quote
/// is already taken off; a doubled quote is part of the token.
fn skip_quoted(body: &str, quote: char) -> Option<&str> {
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            if chars.peek().is_some_and(|(_, n)| *n == quote) {
                chars.next();
                continue;
            }
            return Some(&body[i + 1..]);
        }
    }
    None
}

/// For a column type change PostgreSQL has no cast for (the diff writes
/// `USING col::newtype`, which only a cast can run): which column, and
/// the migration to write instead.
fn retype_advice(sql: &str, e: &postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    if db.code() != &postgres::error::SqlState::CANNOT_COERCE
        && db.code() != &postgres::error::SqlState::DATATYPE_MISMATCH
    {
        return None;
    }
    let rest = sql.strip_prefix("ALTER TABLE ")?;
    let (table, rest) = rest.split_once(" ALTER COLUMN ")?;
    let (column, rest) = rest.split_once(" TYPE ")?;
    let new_type = rest.split(" USING ").next()?.split(" COLLATE ").next()?;
    // "cannot cast type bigint to timestamp with time zone"
    let from = db
        .message()
        .strip_prefix("cannot cast type ")
        .and_then(|m| m.split(" to ").next())
        .unwrap_or("its old type");
    let example = if new_type.starts_with("timestamp") && from.contains("int") {
        format!("to_timestamp({column})")
    } else {
        format!("{column}::text::{new_type}")
    };
    Some(format!(
        "column {table}.{column} changes from {from} to {new_type}, and PostgreSQL has no cast between \
         them, so pgfork cannot write the conversion. Convert it with a migration of your own on the \
         source, such as `ALTER TABLE {table} ALTER COLUMN {column} TYPE {new_type} USING {example}` \
         (USING is the expression that turns each old value into a new one), then promote again"
    ))
}

/// What the source must hold once the patch is applied.
struct Expected<'a> {
    base: &'a promote_check::Fingerprint,
    branch: &'a promote_check::Fingerprint,
    strategy: Option<Strategy>,
    /// Changed tables, and how many rows each gains (negative: loses).
    deltas: &'a [(String, String, i64)],
    /// `--allow-partial`: catalog differences are reported, not refused.
    partial: bool,
    /// The promotion gates, whose assertions run on the source after the patch.
    gates: GateCheck<'a>,
}

/// Tables the branch dropped (no columns listed) and columns it dropped
/// from tables it kept, by `schema.table`.
fn dropped_by(diff: &SchemaDiff) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in &diff.changes {
        if c.kind != ChangeKind::Removed {
            continue;
        }
        match c.id.kind {
            ObjectKind::Table => {
                out.insert(c.id.name.clone(), Vec::new());
            }
            ObjectKind::Column if c.implied_by.is_none() => {
                if let Some((table, column)) = c.id.name.rsplit_once('.') {
                    out.entry(table.to_string())
                        .or_default()
                        .push(column.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// Keeps the columns all three sides have.
fn project(row: Option<&Value>, columns: &[String]) -> Option<Value> {
    row.map(|r| match r {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| columns.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    })
}

fn keys_of(t: &TableDiff) -> Vec<Key> {
    t.rows
        .iter()
        .filter_map(|r| match r {
            RowChange::Insert { key, .. }
            | RowChange::Update { key, .. }
            | RowChange::Delete { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

/// The change that turns the source's row into the branch's.
fn change_to(key: Key, source: Option<Value>, branch: Option<Value>) -> Option<RowChange> {
    match (source, branch) {
        (None, None) => None,
        (Some(s), None) => Some(RowChange::Delete { key, row: s }),
        (None, Some(b)) => Some(RowChange::Insert { key, row: b }),
        (Some(s), Some(b)) if s == b => None,
        (Some(s), Some(b)) => {
            let mut changes = BTreeMap::new();
            if let (Value::Object(so), Value::Object(bo)) = (&s, &b) {
                for (c, bv) in bo {
                    let sv = so.get(c).cloned().unwrap_or(Value::Null);
                    if &sv != bv {
                        changes.insert(c.clone(), [sv, bv.clone()]);
                    }
                }
            }
            Some(RowChange::Update { key, changes })
        }
    }
}

impl Engine {
    /// Checks a branch's changes against its source and applies them.
    pub fn promote(&mut self, req: &PromoteRequest) -> Result<PromoteReport> {
        self.admin_only("promote a branch")?;
        let branch = self.branch_row(&req.branch)?;
        let source = self.source_row(&branch.source)?;
        let base = SnapshotRow::get(self.meta.conn(), branch.snapshot_id)?.ok_or_else(|| {
            EngineError::UnknownSnapshot(format!("the base of {} (deleted)", branch.name))
        })?;
        // Promotion gates: bad assertion files are refused before any work.
        let gate_set = self.promote_gates(&source.name, &req.assertions)?;
        let remote = source.mode != "local";
        if remote && !req.dry_run && !req.confirmed {
            return Err(EngineError::WrongState(format!(
                "source '{}' is a remote database: promote applies changes to it; pass --yes (or confirm on a terminal)",
                source.name
            )));
        }
        let mut b_side = self.open_side(&Resolved::Snapshot(base.clone()))?;
        let mut x_side = self.open_side(&Resolved::Branch(branch.clone()))?;
        let mut target = self.connect_target(&source)?;

        let read = |client: &mut postgres::Client| {
            read_schema(client).map_err(|e| EngineError::WrongState(e.to_string()))
        };
        // Read independently of the diff engine, for the check before the
        // commit (crate::promote_check).
        let base_fp = promote_check::fingerprint(&mut b_side.client)
            .map_err(EngineError::sql("read the base snapshot's catalog"))?;
        let branch_fp = promote_check::fingerprint(&mut x_side.client)
            .map_err(EngineError::sql("read the branch's catalog"))?;
        let b_schema = read(&mut b_side.client)?;
        let dsx: SchemaDiff = diff_schema(&b_schema, &read(&mut x_side.client)?);
        let dss: SchemaDiff = diff_schema(&b_schema, &read(&mut target)?);
        let object_conflicts = schema_conflicts(&dsx, &dss);
        let dropped = dropped_by(&dsx);

        let all = DataOptions {
            limit: usize::MAX,
            full: false,
            tables: None,
        };
        let dx = {
            let mut a = Side {
                client: &mut b_side.client,
                maintenance: Some(&mut b_side.maintenance),
                datadir: &b_side.datadir,
            };
            let mut x = Side {
                client: &mut x_side.client,
                maintenance: Some(&mut x_side.maintenance),
                datadir: &x_side.datadir,
            };
            diff_data(&mut a, &mut x, &all).map_err(|e| EngineError::WrongState(e.to_string()))?
        };
        if base.masked && (!dx.tables.is_empty() || !dx.sequences.is_empty()) {
            // Schema changes alone could go; rows would carry masked values.
            return Err(EngineError::WrongState(format!(
                "branch '{}' comes from a masked snapshot: its rows hold masked values, which must not be written \
                 to the source; apply its data changes by hand",
                branch.name
            )));
        }
        let b_tables =
            read_tables(&mut b_side.client).map_err(|e| EngineError::WrongState(e.to_string()))?;
        let x_tables =
            read_tables(&mut x_side.client).map_err(|e| EngineError::WrongState(e.to_string()))?;
        let s_tables =
            read_tables(&mut target).map_err(|e| EngineError::WrongState(e.to_string()))?;

        let mut conflicts: Vec<Conflict> = object_conflicts
            .iter()
            .map(|id| Conflict {
                object: id.to_string(),
                key: None,
                reason: "the object changed on the branch and on the source since the snapshot"
                    .into(),
                base: None,
                branch: None,
                source: None,
            })
            .collect();
        if !dropped.is_empty() {
            // The branch dropped these: if the source wrote them since the
            // snapshot, promoting would throw those writes away.
            let tables: Vec<String> = dropped.keys().cloned().collect();
            let opts = DataOptions {
                limit: usize::MAX,
                full: source.mode == "logical",
                tables: Some(tables),
            };
            let source_dir = self.source_dir(&source.name);
            // The local copy's blocks stand for a local or physical source;
            // a logical one is compared whole.
            let mut source_maintenance = if source.mode == "logical" {
                None
            } else {
                Some(
                    session::maintenance(&self.endpoint(
                        ServerKind::Source,
                        &source.name,
                        source.port,
                    ))
                    .map_err(EngineError::sql("connect to the source for a checkpoint"))?,
                )
            };
            let ds = {
                let mut a = Side {
                    client: &mut b_side.client,
                    maintenance: Some(&mut b_side.maintenance),
                    datadir: &b_side.datadir,
                };
                let mut s = Side {
                    client: &mut target,
                    maintenance: source_maintenance.as_mut(),
                    datadir: &source_dir,
                };
                diff_data(&mut a, &mut s, &opts)
                    .map_err(|e| EngineError::WrongState(e.to_string()))?
            };
            for t in &ds.tables {
                let Some(columns) = dropped.get(&t.table) else {
                    continue;
                };
                let whole_table = columns.is_empty();
                let written: Vec<&String> = columns
                    .iter()
                    .filter(|c| {
                        t.rows.iter().any(|r| match r {
                            RowChange::Update { changes, .. } => changes.contains_key(*c),
                            RowChange::Insert { row, .. } => {
                                row.get(*c).is_some_and(|v| !v.is_null())
                            }
                            _ => false,
                        })
                    })
                    .collect();
                if whole_table {
                    conflicts.push(Conflict {
                        object: t.table.clone(),
                        key: None,
                        reason: "the branch dropped this table, and the source changed its rows since the snapshot".into(),
                        base: None,
                        branch: None,
                        source: None,
                    });
                }
                for c in written {
                    conflicts.push(Conflict {
                        object: format!("{}.{c}", t.table),
                        key: None,
                        reason: "the branch dropped this column, and the source wrote it since the snapshot".into(),
                        base: None,
                        branch: None,
                        source: None,
                    });
                }
            }
        }
        let mut plan = DataDiff {
            sequences: dx.sequences.clone(),
            ..DataDiff::default()
        };
        for t in &dx.tables {
            let Some(xt) = x_tables.get(&t.table) else {
                // Dropped on the branch: the schema patch's DROP TABLE takes
                // its rows (a source that changed them is a conflict above).
                continue;
            };
            let Some(bt) = b_tables.get(&t.table) else {
                // New on the branch: the schema patch creates it; its rows
                // are all inserts.
                plan.tables.push(t.clone());
                continue;
            };
            let Some(st) = s_tables.get(&t.table) else {
                conflicts.push(Conflict {
                    object: t.table.clone(),
                    key: None,
                    reason: "the branch changed rows of a table the source has dropped".into(),
                    base: None,
                    branch: None,
                    source: None,
                });
                continue;
            };
            if t.key.is_none() {
                self.check_columns(t, bt, st, &mut conflicts);
                plan.tables
                    .push(self.keyless_removals(&mut target, t, st, &mut conflicts)?);
                continue;
            }
            self.check_columns(t, bt, st, &mut conflicts);
            // Compared: the columns all three have, and those the branch
            // added, which rows elsewhere read as the value they were added
            // with (the schema patch gives them the same).
            let added = added_values(&mut x_side.client, bt, xt)
                .map_err(|e| EngineError::WrongState(e.to_string()))?;
            let columns: Vec<String> = xt
                .columns
                .iter()
                .filter(|c| {
                    (bt.columns.contains(c) && st.columns.contains(c)) || added.contains_key(*c)
                })
                .cloned()
                .collect();
            let fill = |row: Option<Value>| -> Option<Value> {
                row.map(|mut r| {
                    if let Value::Object(m) = &mut r {
                        for (k, v) in &added {
                            m.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                    r
                })
            };
            let keys = keys_of(t);
            let fetch = |client: &mut postgres::Client,
                         info: &TableInfo|
             -> Result<HashMap<Key, Value>> {
                fetch_rows(client, info, &keys).map_err(|e| EngineError::WrongState(e.to_string()))
            };
            let b_rows = fetch(&mut b_side.client, bt)?;
            let x_rows = fetch(&mut x_side.client, xt)?;
            let s_rows = fetch(&mut target, st)?;
            let mut rows = Vec::new();
            for key in keys {
                let b = fill(project(b_rows.get(&key), &columns));
                let x = project(x_rows.get(&key), &columns);
                let s = fill(project(s_rows.get(&key), &columns));
                let conflict = s != b && s != x;
                if conflict {
                    conflicts.push(Conflict {
                        object: t.table.clone(),
                        key: Some(key.clone()),
                        reason:
                            "the row changed on the branch and on the source since the snapshot"
                                .into(),
                        base: b.clone(),
                        branch: x.clone(),
                        source: s.clone(),
                    });
                    if req.strategy != Some(Strategy::Ours) {
                        continue;
                    }
                }
                rows.extend(change_to(key, s, x));
            }
            let mut out = t.clone();
            out.inserted = rows
                .iter()
                .filter(|r| matches!(r, RowChange::Insert { .. }))
                .count() as u64;
            out.updated = rows
                .iter()
                .filter(|r| matches!(r, RowChange::Update { .. }))
                .count() as u64;
            out.deleted = rows
                .iter()
                .filter(|r| matches!(r, RowChange::Delete { .. }))
                .count() as u64;
            out.rows = rows;
            if !out.is_empty() {
                plan.tables.push(out);
            }
        }

        // Schema first. With `theirs`, the statements of conflicting objects
        // are left out; with `ours`, the branch's script runs whole.
        let mut statements: Vec<String> = dsx.sql();
        if req.strategy == Some(Strategy::Theirs) && !object_conflicts.is_empty() {
            let skip: std::collections::BTreeSet<&String> = dsx
                .changes
                .iter()
                .filter(|c| object_conflicts.contains(&c.id))
                .flat_map(|c| c.sql.iter())
                .collect();
            statements.retain(|s| !skip.contains(s));
        }
        let mut report = PromoteReport {
            branch: branch.name.clone(),
            schema_changes: dsx.changes.len(),
            source: source.name.clone(),
            applied: false,
            conflicts,
            strategy: req.strategy,
            inserted: plan.tables.iter().map(|t| t.inserted).sum(),
            updated: plan.tables.iter().map(|t| t.updated).sum(),
            deleted: plan.tables.iter().map(|t| t.deleted).sum(),
            statements: Vec::new(),
            snapshot: None,
            warnings: dsx.warnings.clone(),
            before_transaction: Vec::new(),
            gates: Vec::new(),
        };
        // Rows are written in the branch's shape, which the schema
        // statements give the source first.
        let order = fk_order(&mut x_side.client, &x_tables)
            .map_err(|e| EngineError::WrongState(e.to_string()))?;
        statements.extend(
            data_patch(&plan, &x_tables, &order)
                .map_err(|e| EngineError::WrongState(e.to_string()))?,
        );
        // New enum values go first, each committed alone: the rows of the
        // patch may use them, which PostgreSQL refuses in the transaction
        // that adds them.
        let (early, statements): (Vec<String>, Vec<String>) =
            statements.into_iter().partition(|s| adds_enum_value(s));
        report.before_transaction = early;
        report.statements = statements;
        // Promotion gates (crate::gates), before anything is applied, with
        // --dry-run too: the patch's scope, then the assertions on the branch.
        let gate_check = GateCheck {
            gates: &gate_set,
            branch: &branch.name,
            source: &source.name,
        };
        let scope = gates::scope(&plan, &dx, |t| x_tables.contains_key(t));
        report.gates = gates::check_bounds(&gate_set, &scope);
        report.gates.extend(gates::run_on_branch(
            &mut x_side.client,
            &gate_set.assertions,
        )?);
        if req.dry_run || (!report.conflicts.is_empty() && req.strategy.is_none()) {
            return Ok(report);
        }
        if let Some(refused) = gate_check.refusal(&report.gates) {
            return Err(refused);
        }
        if !report.warnings.is_empty() && !req.allow_partial {
            return Err(EngineError::PartialPatch(format!(
                "the patch cannot carry everything branch '{}' changed, so nothing was applied:\n  {}\n\
                 Apply those changes by hand, or pass --allow-partial to apply the rest (the source then \
                 differs from the branch there)",
                branch.name,
                report.warnings.join("\n  ")
            )));
        }
        drop(b_side);
        drop(x_side);
        // Each changed table must end with this many more rows than it had.
        let deltas: Vec<(String, String, i64)> = plan
            .tables
            .iter()
            .filter_map(|t| {
                let info = x_tables.get(&t.table)?;
                let delta = t.inserted as i64 - t.deleted as i64;
                Some((info.schema.clone(), info.name.clone(), delta))
            })
            .collect();
        for sql in &report.before_transaction {
            target
                .batch_execute(sql)
                .map_err(EngineError::sql(&format!(
                    "add an enum value before the promote ({sql}); nothing else was applied"
                )))?;
        }
        let expected = Expected {
            base: &base_fp,
            branch: &branch_fp,
            strategy: req.strategy,
            deltas: &deltas,
            partial: req.allow_partial,
            gates: gate_check,
        };
        let (left_different, source_gates) =
            self.apply(&mut target, &report.statements, &expected)?;
        report.gates.extend(source_gates);
        report.warnings.extend(
            left_different
                .into_iter()
                .map(|d| format!("left different: {d}")),
        );
        report.applied = true;
        drop(target);
        let policy = PolicyRow::get(self.meta.conn(), &source.name)?;
        match self.take_snapshot_opts(&source.name, policy.unmasked_ok || source.mode == "local") {
            Ok(s) => report.snapshot = Some(s.id),
            Err(e) => self.progress.warn(&format!(
                "the changes were applied, but no new snapshot was taken: {e}"
            )),
        }
        Ok(report)
    }

    /// A table without a key is a multiset: each row the branch removed
    /// takes one copy from the source, and a source that holds fewer copies
    /// than the branch removed is a conflict. The plan removes no more
    /// copies than the source holds (what either strategy leaves).
    fn keyless_removals(
        &self,
        target: &mut postgres::Client,
        t: &TableDiff,
        source: &TableInfo,
        conflicts: &mut Vec<Conflict>,
    ) -> Result<TableDiff> {
        let removed = t.rows.iter().filter_map(|r| match r {
            RowChange::Removed { row } if multiset::fits(source, row) => Some(row),
            _ => None,
        });
        let groups = multiset::copies(removed);
        let rows: Vec<Value> = groups.iter().map(|(row, _)| row.clone()).collect();
        let held = multiset::count_copies(target, source, &rows)
            .map_err(|e| EngineError::WrongState(e.to_string()))?;
        let mut allowed: HashMap<String, u64> = HashMap::new();
        for ((row, n), held) in groups.iter().zip(held) {
            if held < *n {
                conflicts.push(Conflict {
                    object: t.table.clone(),
                    key: None,
                    reason: format!(
                        "the branch removed {n} cop{} of this row from a table without a key, and the source \
                         holds {held} now",
                        if *n == 1 { "y" } else { "ies" }
                    ),
                    base: Some(row.clone()),
                    branch: None,
                    source: None,
                });
                allowed.insert(row.to_string(), held);
            }
        }
        let mut out = t.clone();
        out.rows.retain(|r| match r {
            RowChange::Removed { row } => match allowed.get_mut(&row.to_string()) {
                Some(0) => false,
                Some(left) => {
                    *left -= 1;
                    true
                }
                None => true,
            },
            _ => true,
        });
        out.deleted = out
            .rows
            .iter()
            .filter(|r| matches!(r, RowChange::Removed { .. }))
            .count() as u64;
        Ok(out)
    }

    /// A column the source dropped cannot take the branch's writes.
    fn check_columns(
        &self,
        t: &TableDiff,
        base: &TableInfo,
        source: &TableInfo,
        conflicts: &mut Vec<Conflict>,
    ) {
        for column in base.columns.iter().filter(|c| !source.columns.contains(c)) {
            let written = t.rows.iter().any(|r| match r {
                RowChange::Update { changes, .. } => changes.contains_key(column),
                RowChange::Insert { row, .. } => row.get(column).is_some_and(|v| !v.is_null()),
                _ => false,
            });
            if written {
                conflicts.push(Conflict {
                    object: format!("{}.{column}", t.table),
                    key: None,
                    reason: "the source dropped this column, and the branch wrote it".into(),
                    base: None,
                    branch: None,
                    source: None,
                });
            }
        }
    }

    /// The source's database as its application role (a local source), or
    /// as the URL's role (a remote one, which must not be a superuser):
    /// never with more rights than the changes need, since the patch
    /// carries the agent's values and runs their types' and tables' code.
    fn connect_target(&self, source: &pgfork_pool::meta::SourceRow) -> Result<postgres::Client> {
        if source.mode == "local" {
            if !source.postmaster.is_some_and(|p| p.is_alive()) {
                return Err(EngineError::WrongState(format!(
                    "source '{}' is not running: pgfork source start {}",
                    source.name, source.name
                )));
            }
            return session::as_role(
                &self.endpoint(ServerKind::Source, &source.name, source.port),
                &source.database,
                &source.role,
                Access::ReadWrite,
            )
            .map_err(EngineError::sql("connect to the source"));
        }
        let remote = RemoteRow::get(self.meta.conn(), &source.name)?.ok_or_else(|| {
            EngineError::WrongState(format!("source {} has no remote recorded", source.name))
        })?;
        let url = RemoteUrl::parse(&remote.url).map_err(EngineError::InvalidArgument)?;
        if url.options.iter().any(|(k, v)| {
            k == "sslmode" && matches!(v.as_str(), "require" | "verify-ca" | "verify-full")
        }) {
            return Err(EngineError::WrongState(format!(
                "{} requires TLS, which promote does not speak yet: apply `pgfork diff {} --format sql` with psql",
                url.redacted(),
                source.name
            )));
        }
        let mut config = postgres::Config::new();
        config
            .host(url.host.as_deref().unwrap_or("localhost"))
            .port(url.port.unwrap_or(5432))
            .dbname(&url.database())
            .options(&session::pinned_options(Access::ReadWrite));
        if let Some(u) = &url.user {
            config.user(u);
        }
        if let Some(p) = self.remote_password(&remote) {
            config.password(p);
        }
        let mut client = config
            .connect_timeout(std::time::Duration::from_secs(10))
            .connect(postgres::NoTls)
            .map_err(|e| {
                EngineError::WrongState(format!("cannot reach {} to promote: {e}", url.redacted()))
            })?;
        let superuser: bool = client
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user",
                &[],
            )
            .map_err(EngineError::sql("read the role promote connects as"))?
            .get(0);
        if superuser {
            return Err(EngineError::WrongState(format!(
                "{} connects as a superuser; promote writes an agent's changes, which would then run \
                 the agent's code (triggers, domain checks, casts) as superuser: give the source a URL \
                 whose role owns the application's tables and is not a superuser (pgfork source add)",
                url.redacted()
            )));
        }
        Ok(client)
    }

    /// Runs `statements` in one transaction; on failure nothing stays and
    /// the error names the statement. Before committing, checks that the
    /// source holds what it should (see [`crate::promote_check`]) and
    /// passes the promotion gates' assertions (see [`crate::gates`]); if
    /// not, rolls back and says what differs or failed.
    fn apply(
        &self,
        client: &mut postgres::Client,
        statements: &[String],
        expected: &Expected,
    ) -> Result<(Vec<String>, Vec<GateResult>)> {
        let mut tx = client
            .transaction()
            .map_err(EngineError::sql("begin the promote"))?;
        let before = promote_check::fingerprint(&mut tx)
            .map_err(EngineError::sql("read the source's catalog"))?;
        let mut counts = Vec::new();
        for (schema, name, delta) in expected.deltas {
            let n = promote_check::count_rows(&mut tx, schema, name)
                .map_err(EngineError::sql("count the source's rows"))?;
            counts.push((schema, name, n.unwrap_or(0) + delta));
        }
        for (i, sql) in statements.iter().enumerate() {
            if let Err(e) = tx.batch_execute(sql) {
                let shown: String = sql.chars().take(300).collect();
                let detail = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string());
                if let Some(advice) = retype_advice(sql, &e) {
                    return Err(EngineError::WrongState(format!(
                        "promote failed, and nothing was applied (rolled back): {advice} ({detail})"
                    )));
                }
                return Err(EngineError::WrongState(format!(
                    "promote failed at statement {} of {}, and nothing was applied (rolled back): {detail}\n  {shown}{}",
                    i + 1,
                    statements.len(),
                    if sql.len() > shown.len() { " ..." } else { "" }
                )));
            }
        }
        // The assertions again, on the source as the patch left it, in this
        // transaction: a failure rolls the whole promote back.
        let gate_results =
            gates::run_assertions(&mut tx, &expected.gates.gates.assertions, GateSide::Source)?;
        if let Some(refused) = expected.gates.refusal(&gate_results) {
            drop(tx); // rolls back
            return Err(refused);
        }
        let after = promote_check::fingerprint(&mut tx).map_err(EngineError::sql(
            "read the source's catalog after the patch",
        ))?;
        let catalog = promote_check::catalog_differences(
            expected.base,
            expected.branch,
            &before,
            &after,
            expected.strategy,
            20,
        );
        // Announced and accepted with --allow-partial: reported, not refused.
        let (mut wrong, left_different) = if expected.partial {
            (Vec::new(), catalog)
        } else {
            (catalog, Vec::new())
        };
        for (schema, name, want) in counts {
            let got = promote_check::count_rows(&mut tx, schema, name)
                .map_err(EngineError::sql("count the source's rows after the patch"))?;
            if got.is_some_and(|n| n != want) {
                wrong.push(format!(
                    "table {schema}.{name}: should have {want} rows, has {}",
                    got.unwrap_or(0)
                ));
            }
        }
        if !wrong.is_empty() {
            drop(tx); // rolls back
            return Err(EngineError::Unverified(format!(
                "promote rolled back: after its patch the source would not hold what the branch does, so nothing \
                 was applied. Differences:\n  {}\nThis is a change pgfork cannot carry yet: apply it by hand, or \
                 report it with `pgfork diff` of the branch",
                wrong.join("\n  ")
            )));
        }
        tx.commit()
            .map_err(EngineError::sql("commit the promote"))?;
        Ok((left_different, gate_results))
    }
}

#[cfg(test)]
mod tests {
    use super::adds_enum_value;

    #[test]
    fn enum_additions_are_read_by_their_structure() {
        assert!(adds_enum_value(
            "ALTER TYPE public.mood ADD VALUE 'ecstatic'"
        ));
        assert!(adds_enum_value(
            "ALTER TYPE \"my schema\".\"Mood\"\"s\" ADD VALUE 'it''s' AFTER 'happy'"
        ));
        // Names and labels are the branch's: a statement that merely holds
        // the words must not run outside the transaction.
        assert!(!adds_enum_value(
            "ALTER TYPE public.t ADD ATTRIBUTE \"x ADD VALUE y\" integer"
        ));
        assert!(!adds_enum_value(
            "ALTER TYPE public.mood ADD VALUE 'a'; DROP TABLE public.customers"
        ));
        assert!(!adds_enum_value(
            "ALTER TYPE public.mood ADD VALUE 'a' AFTER 'b' CASCADE"
        ));
        assert!(!adds_enum_value(
            "ALTER TYPE public.mood RENAME VALUE 'a' TO 'b'"
        ));
    }
}
