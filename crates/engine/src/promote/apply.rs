//! Applying the patch: one transaction, checked before it commits (the
//! source's catalog and row counts, the gates' assertions), rolled back
//! with the reason otherwise.

use crate::gates::{self, GateCheck, GateResult, GateSide};
use crate::{Engine, EngineError, Result, Strategy, promote_check};

/// What the source must hold once the patch is applied.
pub(super) struct Expected<'a> {
    pub(super) base: &'a promote_check::Fingerprint,
    pub(super) branch: &'a promote_check::Fingerprint,
    pub(super) strategy: Option<Strategy>,
    /// Changed tables, and how many rows each gains (negative: loses).
    pub(super) deltas: &'a [(String, String, i64)],
    /// `--allow-partial`: catalog differences are reported, not refused.
    pub(super) partial: bool,
    /// The promotion gates, whose assertions run on the source after the patch.
    pub(super) gates: GateCheck<'a>,
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

impl Engine {
    /// Runs `statements` in one transaction; on failure nothing stays and
    /// the error names the statement. Before committing, checks that the
    /// source holds what it should (see [`crate::promote_check`]) and
    /// passes the promotion gates' assertions (see [`crate::gates`]); if
    /// not, rolls back and says what differs or failed.
    pub(super) fn apply(
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
