//! The check after the fact: what the server says a client statement did
//! (its CommandComplete tag) against what the policy allows and what the
//! parser read. A disagreement ends the session: it means the proxy's
//! reading of the text was wrong, and nothing after it can be trusted.

use pgfork_engine::agents::Policy;

use crate::classify::{Statement, Tx};
use crate::wire::backend::Completion;

/// Tags of transaction control: the client's own never reach the server
/// in read-only and dry-run (the proxy simulates them).
const TRANSACTION_TAGS: &[&str] = &[
    "BEGIN",
    "START TRANSACTION",
    "COMMIT",
    "ROLLBACK",
    "PREPARE TRANSACTION",
    "COMMIT PREPARED",
    "ROLLBACK PREPARED",
    "SAVEPOINT",
    "RELEASE",
];

/// Tags a read-only session may see: reads, settings, cursors, and the
/// savepoints of a transaction the proxy opened.
const READ_ONLY_TAGS: &[&str] = &[
    "SELECT",
    "SHOW",
    "FETCH",
    "MOVE",
    "DECLARE CURSOR",
    "CLOSE CURSOR",
    "CLOSE CURSOR ALL",
    "SET",
    "RESET",
    "SET CONSTRAINTS",
    "EXPLAIN",
    "COPY",
    "PREPARE",
    "DEALLOCATE",
    "DEALLOCATE ALL",
    "DISCARD ALL",
    "DISCARD PLANS",
    "DISCARD SEQUENCES",
    "DISCARD TEMP",
    "LISTEN",
    "UNLISTEN",
    "SAVEPOINT",
    "RELEASE",
    "ROLLBACK",
];

/// Checks the server's completion of `stmt` (`None`: a statement the proxy
/// did not read, such as an unknown portal) under `policy`.
pub fn check_completion(
    policy: Policy,
    stmt: Option<&Statement>,
    c: &Completion,
) -> Result<(), String> {
    let command = c.command.as_str();
    let read = stmt.map(|s| s.command.as_str()).unwrap_or("?");
    let is_tx_tag = TRANSACTION_TAGS.contains(&command);
    let parsed_tx = stmt.and_then(|s| s.tx);
    if is_tx_tag && parsed_tx.is_none() {
        return Err(format!(
            "the server ran {command} where the proxy read {read}"
        ));
    }
    if policy == Policy::Branch {
        return Ok(());
    }
    if is_tx_tag {
        // Only savepoints reach the server; ROLLBACK TO answers "ROLLBACK".
        let savepoint = matches!(parsed_tx, Some(Tx::Savepoint));
        if !(savepoint && matches!(command, "SAVEPOINT" | "RELEASE" | "ROLLBACK")) {
            return Err(format!(
                "the server ran {command}, but the proxy owns the transactions"
            ));
        }
    }
    if policy == Policy::ReadOnly {
        let copy_in = command == "COPY" && stmt.is_some_and(|s| s.copy_from == Some(true));
        if !READ_ONLY_TAGS.contains(&command) || copy_in {
            return Err(format!("the server ran {command}, which writes"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;

    fn tag(t: &str) -> Completion {
        let mut b = t.as_bytes().to_vec();
        b.push(0);
        Completion::decode(&b).unwrap()
    }

    fn check(policy: Policy, sql: &str, t: &str) -> Result<(), String> {
        let s = classify(sql).unwrap().remove(0);
        check_completion(policy, Some(&s), &tag(t))
    }

    #[test]
    fn a_hidden_commit_ends_the_session() {
        for p in [Policy::ReadOnly, Policy::DryRun, Policy::Branch] {
            assert!(check(p, "SELECT 1", "COMMIT").is_err());
            assert!(check(p, "SELECT 1", "SELECT 1").is_ok());
        }
        assert!(check(Policy::DryRun, "COMMIT", "COMMIT").is_err());
        assert!(check(Policy::Branch, "COMMIT", "COMMIT").is_ok());
        assert!(check(Policy::DryRun, "ROLLBACK TO SAVEPOINT a", "ROLLBACK").is_ok());
        assert!(check(Policy::DryRun, "SAVEPOINT a", "SAVEPOINT").is_ok());
    }

    #[test]
    fn read_only_sees_only_reads() {
        assert!(check(Policy::ReadOnly, "SELECT 1", "INSERT 0 1").is_err());
        assert!(check(Policy::ReadOnly, "SELECT 1", "UPDATE 3").is_err());
        assert!(check(Policy::ReadOnly, "COPY t FROM STDIN", "COPY 3").is_err());
        assert!(check(Policy::ReadOnly, "COPY t TO STDOUT", "COPY 3").is_ok());
        assert!(check(Policy::ReadOnly, "SHOW work_mem", "SHOW").is_ok());
        assert!(check(Policy::DryRun, "INSERT INTO t VALUES (1)", "INSERT 0 1").is_ok());
        assert!(check_completion(Policy::ReadOnly, None, &tag("SELECT 1")).is_ok());
        assert!(check_completion(Policy::DryRun, None, &tag("COMMIT")).is_err());
    }
}
