//! `pgfork promote`: apply what a branch changed back to its source, in one
//! transaction, after a three-way check of the base snapshot, the branch
//! and the source as it is now.
//!
//! Its parts: [`report`] holds the public types, [`conflicts`] the
//! conflicts outside the rows, [`plan`] the rows the patch writes (and
//! their conflicts), [`enum_values`] the statements that run before the
//! transaction, [`connect`] the connection to the source, and [`apply`]
//! the checked transaction. This file runs them in order.

mod apply;
mod conflicts;
mod connect;
mod enum_values;
mod plan;
mod report;

use pgfork_diff::data::{DataOptions, Side, data_patch, diff_data, fk_order, read_tables};
use pgfork_diff::schema::{SchemaDiff, conflicts as schema_conflicts, diff_schema, read_schema};
use pgfork_pool::meta::{PolicyRow, SnapshotRow};

use crate::diff::Resolved;
use crate::gates::{self, GateCheck};
use crate::{Engine, EngineError, Result, promote_check};

use apply::Expected;
use conflicts::dropped_by;
use enum_values::adds_enum_value;
pub use report::{BranchChanges, Conflict, PromoteReport, PromoteRequest, Strategy};

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
            self.dropped_written(&source, &dropped, &mut b_side, &mut target, &mut conflicts)?;
        }
        let plan = self.plan_rows(
            &dx,
            &b_tables,
            &x_tables,
            &s_tables,
            &mut b_side,
            &mut x_side,
            &mut target,
            req.strategy,
            &mut conflicts,
        )?;

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
            branch_changes: BranchChanges {
                base: format!("snapshot {}", base.label()),
                schema: dsx
                    .changes
                    .iter()
                    .map(|c| (c.id.to_string(), c.kind))
                    .collect(),
                tables: dx
                    .tables
                    .iter()
                    .filter(|t| !t.is_empty())
                    .map(|t| (t.table.clone(), t.inserted, t.updated, t.deleted))
                    .collect(),
                warnings: dsx.warnings.clone(),
            },
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
}
