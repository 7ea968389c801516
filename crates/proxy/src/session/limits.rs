//! The budgets and time limits of one session.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgfork_engine::agents::Policy;

/// How long a read-only or dry-run transaction may stay open, by default.
pub const TRANSACTION_LIMIT: Duration = Duration::from_secs(30);
/// The statement time limit of a dry-run agent without one of its own.
pub const DRY_RUN_STATEMENT: Duration = Duration::from_secs(30);
/// The lock wait a dry-run statement gets, re-applied before each one.
pub const DRY_RUN_LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may sit idle inside a read-only or dry-run transaction.
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(60);
/// How long a cancelled statement has to stop before the proxy ends the
/// session (closing the server connection stops the backend).
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Budgets and switches of one session.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rows one statement may write (counted by the server).
    pub max_rows: Option<u64>,
    /// Parameters go to the audit log.
    pub audit_params: bool,
    /// Set when the branch outgrew its storage budget: it is read-only.
    pub storage_exceeded: Arc<AtomicBool>,
    /// The storage budget, for the message.
    pub max_storage: Option<u64>,
    /// Time one statement may run, by the proxy's clock.
    pub statement: Option<Duration>,
    /// Time one transaction may stay open, by the proxy's clock.
    pub transaction: Option<Duration>,
    /// Time a client may sit idle inside a transaction the proxy owns.
    pub idle_in_transaction: Option<Duration>,
    /// `lock_timeout` set before every statement.
    pub lock_timeout: Option<Duration>,
}

impl Limits {
    /// The limits of an agent with `policy`: its statement timeout (dry-run
    /// always has one), the transaction limit of read-only and dry-run,
    /// and its budgets.
    pub fn for_agent(
        policy: Policy,
        statement_timeout_ms: Option<i64>,
        transaction_limit: Duration,
        max_rows: Option<i64>,
        audit_params: bool,
        storage_exceeded: Arc<AtomicBool>,
        max_storage: Option<i64>,
    ) -> Limits {
        let statement = statement_timeout_ms
            .map(|ms| Duration::from_millis(ms.max(1) as u64))
            .or((policy == Policy::DryRun).then_some(DRY_RUN_STATEMENT));
        Limits {
            max_rows: max_rows.map(|m| m.max(0) as u64),
            audit_params,
            storage_exceeded,
            max_storage: max_storage.map(|m| m.max(0) as u64),
            statement,
            transaction: (policy != Policy::Branch).then_some(transaction_limit),
            idle_in_transaction: (policy != Policy::Branch).then_some(IDLE_IN_TRANSACTION),
            lock_timeout: (policy == Policy::DryRun).then_some(DRY_RUN_LOCK_TIMEOUT),
        }
    }

    /// Whether the branch is over its storage budget now.
    pub fn over_storage(&self) -> bool {
        self.storage_exceeded.load(Ordering::Relaxed)
    }
}
