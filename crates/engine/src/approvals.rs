//! Promotion requests and their approval (issue 15): the only promote an
//! agent may do is ask. The request keeps what the branch changed when it
//! was asked; an admin approves, which runs the promote (its three-way
//! check and gates against the source as it is then), or rejects. An open
//! request keeps its branch from expiring.

use pgfork_pool::meta::PromotionRow;
use serde_json::{Value, json};

use crate::promote::BranchChanges;
use crate::{DiffRequest, Engine, EngineError, PromoteReport, PromoteRequest, Result};

impl Engine {
    /// Asks for branch `branch` to be promoted (its owner, agent or admin).
    /// With `migration` (file name and SQL), pgfork rehearses it on a fresh
    /// branch of the same base snapshot and keeps the report with the
    /// request, so whoever decides sees what the migration did as pgfork
    /// measured it, not as the asker says.
    pub fn promotion_request(
        &mut self,
        branch: &str,
        note: Option<&str>,
        migration: Option<(&str, &str)>,
    ) -> Result<PromotionRow> {
        let row = self.owned_branch(branch, "request a promotion of")?;
        if let Some(open) = PromotionRow::open_for(self.meta.conn(), branch)? {
            return Err(EngineError::WrongState(format!(
                "branch '{branch}' has an open promotion request already (number {}): wait for its \
                 decision (`pgfork approvals show {}`)",
                open.id, open.id
            )));
        }
        let mut summary = self.request_summary(branch)?;
        if let Some((file, sql)) = migration {
            let base = self.branch_info(branch)?.snapshot;
            let report = self.rehearse(&crate::RehearseRequest {
                from: base,
                file: file.to_string(),
                sql: sql.to_string(),
                fresh: false,
                keep: false,
                fail_on: crate::Severity::Error,
                max_lock_ms: None,
            })?;
            summary["rehearsal"] = serde_json::to_value(&report).unwrap_or(Value::Null);
        }
        let by = self.actor.label();
        let id = self
            .meta
            .write(|c| PromotionRow::insert(c, branch, &row.source, &by, note, &summary))?;
        self.promotion_get(id)
    }

    /// What a request shows of the branch: the schema objects changed and
    /// each table's row counts (no row values: a request is read by people
    /// who need not see the data), and a dry run of the promote. The dry
    /// run compares the branch with its base anyway, so its comparison
    /// gives the summary; only a dry run that refuses (a masked base, a
    /// broken gate file) leaves the summary to a diff of its own.
    fn request_summary(&mut self, branch: &str) -> Result<Value> {
        let dry = self.preview_promote(branch);
        let changes = match &dry {
            Ok(r) => r.branch_changes.clone(),
            Err(_) => self.branch_changes(branch)?,
        };
        let preview = match dry {
            Ok(r) => json!({
                "gates": r.gates,
                "conflicts": r.conflicts.len(),
                "statements": r.statements.len(),
                "warnings": r.warnings,
            }),
            Err(e) => json!({ "error": { "code": e.code(), "message": e.to_string() } }),
        };
        let schema: Vec<Value> = changes
            .schema
            .iter()
            .map(|(object, kind)| json!({ "object": object, "kind": kind }))
            .collect();
        let tables: Vec<Value> = changes
            .tables
            .iter()
            .map(|(table, inserted, updated, deleted)| {
                json!({ "table": table, "inserted": inserted, "updated": updated, "deleted": deleted })
            })
            .collect();
        let rows: u64 = changes.tables.iter().map(|(_, i, u, d)| i + u + d).sum();
        Ok(json!({
            "base": changes.base,
            "schema_changes": schema,
            "tables": tables,
            "rows_changed": rows,
            "warnings": changes.warnings,
            "preview": preview,
        }))
    }

    /// What the branch changed, by a diff of its own (as its owner sees it).
    fn branch_changes(&mut self, branch: &str) -> Result<BranchChanges> {
        let d = self.diff(&DiffRequest {
            target: branch.to_string(),
            against: None,
            schema: true,
            data: true,
            limit: 0,
            full: false,
            sql: false,
        })?;
        Ok(BranchChanges {
            warnings: d.warnings,
            base: d.from,
            schema: d
                .schema
                .map(|s| {
                    s.changes
                        .iter()
                        .map(|c| (c.id.to_string(), c.kind))
                        .collect()
                })
                .unwrap_or_default(),
            tables: d
                .data
                .map(|data| {
                    data.tables
                        .iter()
                        .map(|t| (t.table.clone(), t.inserted, t.updated, t.deleted))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// A dry run of the promote, for the request: the gates' results (the
    /// scope bounds and the assertions on the branch) and how many
    /// conflicts and statements there would be. It runs as the home's
    /// admin, since an agent may not promote, and keeps nothing of the
    /// source's rows: a conflict is counted, not shown.
    fn preview_promote(&mut self, branch: &str) -> Result<PromoteReport> {
        let asker = std::mem::replace(
            &mut self.actor,
            crate::Actor::Admin(crate::identity::FIRST_ADMIN.into()),
        );
        let dry = self.promote(&PromoteRequest {
            branch: branch.to_string(),
            dry_run: true,
            strategy: None,
            confirmed: false,
            allow_partial: false,
            assertions: Vec::new(),
        });
        self.actor = asker;
        dry
    }

    /// The requests the actor may see (an admin all, an agent those it
    /// made), newest first; only `status` ones if given.
    pub fn promotion_list(&self, status: Option<&str>) -> Result<Vec<PromotionRow>> {
        if let Some(s) = status
            && !["open", "approved", "rejected", "withdrawn"].contains(&s)
        {
            return Err(EngineError::InvalidArgument(format!(
                "unknown status '{s}': use open, approved, rejected or withdrawn"
            )));
        }
        let me = self.actor.label();
        Ok(PromotionRow::list(self.meta.conn(), status)?
            .into_iter()
            .filter(|r| self.actor.agent().is_none() || r.requested_by == me)
            .collect())
    }

    /// Request `id`, if the actor may see it.
    pub fn promotion_get(&self, id: i64) -> Result<PromotionRow> {
        let row =
            PromotionRow::get(self.meta.conn(), id)?.ok_or(EngineError::UnknownRequest(id))?;
        if self.actor.agent().is_some() && row.requested_by != self.actor.label() {
            return Err(EngineError::UnknownRequest(id));
        }
        Ok(row)
    }

    /// Approves request `id`: promotes its branch now, with every check a
    /// promote makes against the source as it is. If the promote refuses
    /// (conflicts, a gate, a changed source), the request stays open with
    /// the reason noted, and the error says it.
    pub fn promotion_approve(&mut self, id: i64) -> Result<(PromotionRow, PromoteReport)> {
        self.admin_only("approve promotions")?;
        let row = self.open_request(id)?;
        if self.branch_row(&row.branch).is_err() {
            self.close_request(id, "withdrawn", Some("the branch is gone"), None)?;
            return Err(EngineError::WrongState(format!(
                "branch '{}' of request {id} no longer exists; the request is closed as withdrawn",
                row.branch
            )));
        }
        // Claimed first: of two admins approving at once, one promotes.
        self.close_request(id, "approved", None, None)?;
        let promoted = self.promote(&PromoteRequest {
            branch: row.branch.clone(),
            dry_run: false,
            strategy: None,
            confirmed: true,
            allow_partial: false,
            // The source's stored gates apply to every promote.
            assertions: Vec::new(),
        });
        let report = match promoted {
            Ok(r) if r.applied => r,
            Ok(r) => {
                let why = format!(
                    "{} conflict(s) with the source as it is now: {}",
                    r.conflicts.len(),
                    r.conflicts
                        .iter()
                        .take(3)
                        .map(|c| format!("{} ({})", c.object, c.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                self.meta.write(|c| PromotionRow::reopen(c, id, &why))?;
                return Err(EngineError::WrongState(format!(
                    "request {id} was not applied: {why}. It stays open: resolve them on branch '{}' \
                     and approve again, or reject it",
                    row.branch
                )));
            }
            Err(e) => {
                let why = e.to_string();
                self.meta.write(|c| PromotionRow::reopen(c, id, &why))?;
                return Err(e);
            }
        };
        let result = serde_json::to_value(&report).unwrap_or(Value::Null);
        self.meta
            .write(|c| PromotionRow::set_result(c, id, &result))?;
        Ok((self.promotion_get(id)?, report))
    }

    /// Rejects request `id`, saying why.
    pub fn promotion_reject(&mut self, id: i64, reason: &str) -> Result<PromotionRow> {
        self.admin_only("reject promotions")?;
        if reason.trim().is_empty() {
            return Err(EngineError::InvalidArgument(
                "say why the request is rejected (--reason TEXT): the agent reads it".into(),
            ));
        }
        self.open_request(id)?;
        self.close_request(id, "rejected", Some(reason), None)?;
        self.promotion_get(id)
    }

    /// Closes the open requests of a branch that is being deleted.
    pub(crate) fn withdraw_requests_of(&mut self, branch: &str) -> Result<()> {
        if let Some(open) = PromotionRow::open_for(self.meta.conn(), branch)? {
            self.close_request(open.id, "withdrawn", Some("the branch was deleted"), None)?;
        }
        Ok(())
    }

    /// Whether `branch` has an open request (which keeps it from expiring).
    pub(crate) fn has_open_request(&self, branch: &str) -> Result<bool> {
        Ok(PromotionRow::open_for(self.meta.conn(), branch)?.is_some())
    }

    fn open_request(&self, id: i64) -> Result<PromotionRow> {
        let row = self.promotion_get(id)?;
        if row.status != "open" {
            return Err(EngineError::WrongState(format!(
                "request {id} is {} already{}",
                row.status,
                row.decided_by
                    .as_deref()
                    .map(|by| format!(" (by {by})"))
                    .unwrap_or_default()
            )));
        }
        Ok(row)
    }

    fn close_request(
        &mut self,
        id: i64,
        status: &str,
        reason: Option<&str>,
        result: Option<&Value>,
    ) -> Result<()> {
        let by = self.actor.label();
        let closed = self
            .meta
            .write(|c| PromotionRow::decide(c, id, status, &by, reason, result))?;
        if !closed {
            return Err(EngineError::WrongState(format!(
                "request {id} was decided by someone else meanwhile: `pgfork approvals show {id}`"
            )));
        }
        Ok(())
    }
}
