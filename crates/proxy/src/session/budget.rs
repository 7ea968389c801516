//! Judging a statement before it runs (the policy's explanation) and the
//! max-rows budget after: rows counted by the server itself, from the
//! transaction's `n_tup_ins + n_tup_upd + n_tup_del` before and after the
//! statement, so a data-modifying CTE, a trigger or a function that
//! writes counts as what it wrote, not as its command tag says.

use super::conductor::{Conductor, Stop};
use crate::classify::Statement;
use crate::policy::Verdict;
use crate::wire::backend::ErrorFields;

/// Rows the current transaction has written so far, by the server's count.
pub(super) const MEASURE_SQL: &str = "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::int8 \
     FROM pg_catalog.pg_stat_xact_user_tables";

/// Prefix of the names the proxy keeps for its own statements.
const RESERVED: &str = "pgfork_";

impl Conductor {
    /// The policy's refusal of `s`, if any: SQLSTATE and message.
    pub(super) fn judge(&self, s: &Statement) -> Option<(&'static str, String)> {
        if let Verdict::Refuse { code, message } = self.rules.check(s) {
            return Some((code, message));
        }
        if s.prepared_name.as_deref().is_some_and(reserved) {
            return Some(reserved_error());
        }
        None
    }

    /// Whether a client statement's writes are counted: under a max-rows
    /// budget, anything but a plain read (a statement the proxy did not
    /// read counts too).
    pub(super) fn measures(&self, s: Option<&Statement>) -> bool {
        if self.limits.max_rows.is_none() {
            return false;
        }
        let Some(s) = s else { return true };
        let plain_read = s.read_only && s.functions.is_empty();
        !(plain_read
            || s.tx.is_some()
            || s.set_transaction
            || s.no_transaction
            || matches!(s.command.as_str(), "SET" | "RESET" | "SHOW" | "DEALLOCATE"))
    }

    /// After a measured statement (its answers held, the measurements in):
    /// passes the answers on, or, over the budget, drops them, answers
    /// with the budget's error and aborts what the statement did. Returns
    /// whether the statement stands.
    pub(super) fn settle_budget(&mut self, unnamed: bool) -> Result<bool, Stop> {
        let held = self.held_out.split();
        let overflowed = std::mem::take(&mut self.held_overflow);
        if let Some(e) = self.step.held_error.take() {
            // It failed on its own: the server rolls it back.
            self.to_client.extend_from_slice(&held);
            self.to_client.extend_from_slice(&e);
            return Ok(false);
        }
        let written = match self.step.measured.as_slice() {
            [before, after, ..] => (after - before).max(0) as u64,
            _ => 0,
        };
        let limit = self.limits.max_rows.unwrap_or(u64::MAX);
        if let Some((_, outcome)) = self.records.last_mut() {
            outcome.rows = Some(outcome.rows.unwrap_or(0).max(written));
        }
        if written <= limit {
            self.to_client.extend_from_slice(&held);
            return Ok(true);
        }
        let message = format!(
            "pgfork budget max-rows: the statement wrote {written} rows, more than the {limit} allowed for agent \"{}\"; it was rolled back",
            self.info.agent
        );
        if let Some((_, outcome)) = self.records.last_mut() {
            outcome.error = Some(("54000".into(), message.clone()));
        }
        if overflowed {
            // Its rows already went out; the error still ends it.
            tracing::debug!("proxy: answers over the hold went out before the budget check");
        }
        self.to_client
            .extend_from_slice(&ErrorFields::error("54000", message).to_error());
        self.step.failed = true;
        self.poison(unnamed);
        Ok(false)
    }
}

/// Whether a client-chosen name is one the proxy keeps for itself.
pub(super) fn reserved(name: &str) -> bool {
    name.starts_with(RESERVED)
}

/// The refusal of a reserved name.
pub(super) fn reserved_error() -> (&'static str, String) {
    (
        "42501",
        format!("pgfork: names beginning with {RESERVED} are reserved for the proxy"),
    )
}
