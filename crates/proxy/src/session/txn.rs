//! Transactions the proxy owns. In `read-only` and `dry-run` the client's
//! `BEGIN`, `COMMIT` and `ROLLBACK` never reach the server: the proxy
//! opens its own transaction (`BEGIN READ ONLY`, or `BEGIN` for a dry
//! run) before the first statement that needs one, ends it itself
//! (`COMMIT`, or always `ROLLBACK` for a dry run), and tells the client
//! what PostgreSQL would have. A read-only transaction opened by the proxy
//! cannot be turned read-write, so nothing inside it (a `SECURITY DEFINER`
//! function included) can write. In `branch` the transactions are the
//! client's; the proxy only wraps statements in a read-only transaction
//! once the branch is over its storage budget.

use std::time::{Duration, Instant};

use pgfork_engine::agents::Policy;

use super::conductor::{Conductor, Own, Stop, To};
use super::record::Outcome;
use crate::classify::{Statement, Tx, TxMode};
use crate::wire::backend::{ErrorFields, frame};

/// The client's transaction as the proxy simulates it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClientTx {
    Idle,
    Open { mode: TxMode, failed: bool },
}

/// Transaction state of one session.
#[derive(Debug)]
pub(super) struct Txn {
    policy: Policy,
    client: ClientTx,
    /// The proxy's own transaction is open on the server.
    own_open: bool,
    opened_at: Option<Instant>,
    limit: Option<Duration>,
    /// Branch: the client's transaction block, as sent so far.
    branch_block: bool,
}

/// What the proxy did with a transaction-control statement.
pub(super) enum Simulated {
    /// Answered (its CommandComplete or error is written).
    Done { failed: bool },
    /// It goes to the server (a savepoint inside the transaction).
    Forward,
}

impl Txn {
    pub(super) fn new(policy: Policy) -> Txn {
        Txn {
            policy,
            client: ClientTx::Idle,
            own_open: false,
            opened_at: None,
            limit: None,
            branch_block: false,
        }
    }

    /// Whether the proxy owns the transactions (read-only, dry-run).
    pub(super) fn owned(&self) -> bool {
        self.policy != Policy::Branch
    }

    /// The proxy's own transaction is open on the server.
    pub(super) fn own_is_open(&self) -> bool {
        self.own_open
    }

    /// The client's transaction failed (until it rolls back).
    pub(super) fn client_failed(&self) -> bool {
        matches!(self.client, ClientTx::Open { failed: true, .. })
    }

    /// The client believes it is inside a transaction block (simulated).
    pub(super) fn client_open(&self) -> bool {
        matches!(self.client, ClientTx::Open { .. })
    }

    /// When the proxy's open transaction runs out of time.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match (self.own_open, self.opened_at, self.limit) {
            (true, Some(at), Some(limit)) => Some(at + limit),
            _ => None,
        }
    }

    /// The status a simulated client is told.
    fn simulated_status(&self) -> u8 {
        match self.client {
            ClientTx::Idle => b'I',
            ClientTx::Open { failed: false, .. } => b'T',
            ClientTx::Open { failed: true, .. } => b'E',
        }
    }

    /// The proxy's BEGIN, with the modes the client asked for.
    fn begin_sql(&self, storage_guard: bool) -> String {
        let mode = match &self.client {
            ClientTx::Open { mode, .. } => mode.clone(),
            ClientTx::Idle => TxMode::default(),
        };
        let mut sql = String::from("BEGIN");
        if let Some(level) = mode.isolation {
            sql.push_str(" ISOLATION LEVEL ");
            sql.push_str(level);
        }
        let read_only =
            storage_guard || self.policy == Policy::ReadOnly || mode.read_write == Some(false);
        if read_only {
            sql.push_str(" READ ONLY");
        }
        match mode.deferrable {
            Some(true) => sql.push_str(" DEFERRABLE"),
            Some(false) => sql.push_str(" NOT DEFERRABLE"),
            None => {}
        }
        sql
    }

    /// How the proxy ends its own transaction.
    fn end_sql(&self) -> &'static str {
        if self.policy == Policy::DryRun {
            "ROLLBACK"
        } else {
            "COMMIT"
        }
    }
}

/// Sent after the proxy ends a transaction: session-level advisory locks
/// survive a rollback, so an agent's (taken where the parser cannot see,
/// in a DO block or a function) last no longer than its transaction.
const UNLOCK_ALL: &str = "SELECT pg_catalog.pg_advisory_unlock_all()";

/// Statements that need no transaction of the proxy's outside a client
/// transaction: they change nothing a rollback would undo.
fn runs_bare(s: &Statement) -> bool {
    s.no_transaction
        || matches!(
            s.command.as_str(),
            "SET" | "RESET" | "SHOW" | "DEALLOCATE" | "LISTEN" | "UNLISTEN"
        ) && !s.set_transaction
}

impl Conductor {
    /// The transaction status the client is told.
    pub(super) fn client_status(&self) -> u8 {
        if self.txn.owned() {
            self.txn.simulated_status()
        } else {
            self.server_status
        }
    }

    /// Queues what must come before a client statement reaches the server:
    /// the proxy's transaction, the dry-run lock timeout, the storage guard.
    pub(super) fn before_statement(&mut self, s: Option<&Statement>, unnamed: bool) {
        if self.txn.owned() {
            let wrap = self.txn.client_open() || s.is_none_or(|s| !runs_bare(s));
            if !wrap {
                return;
            }
            self.open_own(false, unnamed);
            // Not in a failed transaction (it would fail again, and keep a
            // ROLLBACK TO SAVEPOINT from running) nor before transaction
            // control; the next statement sets it again.
            let failed = self.server_status == b'E' || self.txn.client_failed();
            if let Some(t) = self.limits.lock_timeout
                && !failed
                && s.is_none_or(|s| s.tx.is_none())
            {
                let sql = format!("SET LOCAL lock_timeout = {}", t.as_millis());
                self.own_statement_in(&sql, Own::Step, unnamed);
            }
            return;
        }
        if self.limits.over_storage() {
            if self.txn.branch_block {
                // Allowed at any point; turning it back off is not, once
                // the transaction has run a query.
                self.own_statement_in("SET LOCAL transaction_read_only = on", Own::Step, unnamed);
                self.own_statement_in("SELECT", Own::Step, unnamed);
            } else {
                self.open_own(true, unnamed);
            }
        }
        if let Some(s) = s {
            match s.tx {
                Some(Tx::Begin { .. }) => self.txn.branch_block = true,
                Some(Tx::Commit { chain }) | Some(Tx::Rollback { chain }) => {
                    self.txn.branch_block = chain
                }
                _ => {}
            }
        }
    }

    /// Inside the client's transaction, the proxy's transaction opens
    /// before a Parse or Bind reaches the server: the client's message may
    /// fail (a missing table, a bad parameter), and the server then skips
    /// everything up to Sync; and a Bind with parameters takes a snapshot,
    /// after which BEGIN could no longer set the isolation level.
    pub(super) fn open_own_for_client(&mut self) {
        if self.txn.owned() && self.txn.client_open() && !self.server_skipping {
            self.open_own(false, false);
        }
    }

    fn open_own(&mut self, storage_guard: bool, unnamed: bool) {
        if self.txn.own_open {
            return;
        }
        let sql = self.txn.begin_sql(storage_guard);
        self.own_statement_in(&sql, Own::Step, unnamed);
        self.txn.own_open = true;
        self.txn.opened_at = Some(Instant::now());
        self.txn.limit = self.limits.transaction;
    }

    /// Queues the end of the proxy's transaction if the client is not in
    /// one of its own (before the exchange's Sync).
    pub(super) fn end_own_unless_client_open(&mut self, unnamed: bool) {
        if self.txn.own_open && !self.txn.client_open() && !self.server_skipping {
            let sql = self.txn.end_sql();
            self.own_statement_in(sql, Own::Step, unnamed);
            self.own_statement_in(UNLOCK_ALL, Own::Quiet, unnamed);
            // Still open until the ReadyForQuery says so: an error in the
            // exchange makes the server skip the end, and reconcile then
            // rolls back.
        }
    }

    /// After a ReadyForQuery: the server's status must be what the proxy
    /// expects; a failed implicit transaction is rolled back.
    pub(super) async fn reconcile(&mut self) -> Result<(), Stop> {
        if !self.txn.owned() {
            if self.txn.own_open && self.server_status == b'I' {
                self.txn.own_open = false;
            }
            if self.txn.own_open {
                // The storage guard's transaction failed: end it.
                self.own_statement("ROLLBACK", Own::Quiet);
                self.send_sync(To::Own(Own::Quiet));
                self.drain().await?;
                self.txn.own_open = false;
            }
            self.txn.branch_block = self.server_status != b'I';
            return Ok(());
        }
        if !self.txn.client_open() {
            if self.server_status != b'I' {
                self.own_statement("ROLLBACK", Own::Quiet);
                self.send_sync(To::Own(Own::Quiet));
                self.drain().await?;
            }
            self.txn.own_open = false;
            if self.server_status != b'I' {
                return Err(Stop::fatal(
                    "42501",
                    "pgfork: the server kept a transaction open that the proxy ended; the session was ended",
                ));
            }
            return Ok(());
        }
        match self.server_status {
            b'I' if self.txn.own_open => Err(Stop::fatal(
                "42501",
                "pgfork: the server ended the transaction the proxy owns; the session was ended",
            )),
            b'I' => Ok(()),
            status => {
                if let ClientTx::Open { failed, .. } = &mut self.txn.client {
                    *failed = status == b'E';
                }
                Ok(())
            }
        }
    }

    /// A refusal inside a transaction fails it, as an error would: the
    /// server's transaction is made to fail too (a statement that cannot
    /// parse), so a savepoint rollback and everything after behave as in
    /// PostgreSQL. Waits for the server.
    pub(super) async fn fail_client_transaction(&mut self) -> Result<(), Stop> {
        let in_tx = if self.txn.owned() {
            self.txn.client_open()
        } else {
            self.server_status == b'T'
        };
        if !in_tx {
            return Ok(());
        }
        self.poison(true);
        self.send_sync(To::Own(Own::Quiet));
        self.drain().await?;
        self.reconcile().await
    }

    /// Queues a statement that fails, to abort what the server has begun
    /// since the last Sync (and the client's transaction, if open).
    pub(super) fn poison(&mut self, unnamed: bool) {
        if self.txn.owned() && self.txn.client_open() {
            self.open_own(false, unnamed);
        }
        self.own_statement_in("pgfork refused a statement", Own::Quiet, unnamed);
    }

    /// Answers a transaction-control statement of a read-only or dry-run
    /// client: `BEGIN`, `COMMIT`, `ROLLBACK` (and `AND CHAIN`), and
    /// `SET TRANSACTION` before the transaction's first statement. A
    /// savepoint goes to the server inside a transaction.
    pub(super) async fn simulate(
        &mut self,
        s: &Statement,
        text: String,
    ) -> Result<Simulated, Stop> {
        let sim = self.simulate_inner(s).await?;
        let outcome = match &sim {
            Ok(tag) => Outcome {
                tag: Some(tag.clone()),
                ..Outcome::default()
            },
            Err(e) => Outcome {
                error: Some((e.code.clone(), e.message.clone())),
                ..Outcome::default()
            },
        };
        match sim {
            Ok(tag) if tag.is_empty() => return Ok(Simulated::Forward),
            Ok(tag) => {
                let mut body = tag.into_bytes();
                body.push(0);
                let mut out = bytes::BytesMut::new();
                frame(b'C', &body, &mut out);
                self.to_client.extend_from_slice(&out);
            }
            Err(e) => self.to_client.extend_from_slice(&e.to_error()),
        }
        let failed = outcome.error.is_some();
        self.record_now(text, None, outcome);
        Ok(Simulated::Done { failed })
    }

    /// The tag to answer with (empty: forward it), or the error.
    async fn simulate_inner(&mut self, s: &Statement) -> Result<Result<String, ErrorFields>, Stop> {
        let open = self.txn.client_open();
        let warn = |code: &str, message: &str| {
            let mut n = ErrorFields::error(code, message);
            n.severity = "WARNING".into();
            n.to_notice()
        };
        if s.set_transaction {
            if open && !self.txn.own_open {
                if let (ClientTx::Open { mode, .. }, Some(set)) = (&mut self.txn.client, &s.tx_mode)
                {
                    mode.isolation = set.isolation.or(mode.isolation);
                    mode.read_write = set.read_write.or(mode.read_write);
                    mode.deferrable = set.deferrable.or(mode.deferrable);
                }
                return Ok(Ok("SET".into()));
            }
            return Ok(Ok(String::new()));
        }
        let Some(tx) = s.tx else {
            return Ok(Ok(String::new()));
        };
        match tx {
            Tx::Begin { .. } => {
                if open {
                    self.to_client.extend_from_slice(&warn(
                        "25001",
                        "there is already a transaction in progress",
                    ));
                } else {
                    self.txn.client = ClientTx::Open {
                        mode: s.tx_mode.clone().unwrap_or_default(),
                        failed: false,
                    };
                }
                Ok(Ok(s.command.clone()))
            }
            Tx::Commit { chain } | Tx::Rollback { chain } => {
                let commit = matches!(tx, Tx::Commit { .. });
                let word = if commit { "COMMIT" } else { "ROLLBACK" };
                if !open {
                    if chain {
                        return Ok(Err(ErrorFields::error(
                            "25P01",
                            format!("{word} AND CHAIN can only be used in transaction blocks"),
                        )));
                    }
                    if !self.txn.own_open {
                        self.to_client.extend_from_slice(&warn(
                            "25P01",
                            "there is no transaction in progress",
                        ));
                    }
                }
                let (mode, failed) = match &self.txn.client {
                    ClientTx::Open { mode, failed } => (mode.clone(), *failed),
                    ClientTx::Idle => (TxMode::default(), false),
                };
                self.txn.client = ClientTx::Idle;
                let ended = self.end_own_now().await?;
                if chain {
                    self.txn.client = ClientTx::Open {
                        mode,
                        failed: false,
                    };
                }
                if let Err(e) = ended {
                    return Ok(Err(e));
                }
                if commit && self.txn.policy == Policy::DryRun && open && !failed {
                    // Answered as PostgreSQL answers a COMMIT that could
                    // not commit, so no client takes it for a commit.
                    let mut n = ErrorFields::error(
                        "00000",
                        "pgfork dry-run: COMMIT rolled the transaction back (every dry-run transaction is rolled back)",
                    );
                    n.severity = "NOTICE".into();
                    self.to_client.extend_from_slice(&n.to_notice());
                    return Ok(Ok("ROLLBACK".into()));
                }
                Ok(Ok(if commit && failed { "ROLLBACK" } else { word }.into()))
            }
            Tx::Savepoint if open => Ok(Ok(String::new())),
            Tx::Savepoint => Ok(Err(ErrorFields::error(
                "25P01",
                format!("{} can only be used in transaction blocks", s.command),
            ))),
            Tx::Prepare | Tx::Prepared => Ok(Err(ErrorFields::error(
                "25001",
                format!(
                    "pgfork policy {}: {} would keep the transaction past the proxy's end of it",
                    self.txn.policy.as_str(),
                    s.command
                ),
            ))),
        }
    }

    /// Ends the proxy's transaction now (one round trip), returning the
    /// error of a COMMIT that failed.
    async fn end_own_now(&mut self) -> Result<Result<(), ErrorFields>, Stop> {
        if !self.txn.own_open {
            return Ok(Ok(()));
        }
        // The client sees COMMIT's error as its own; a failed transaction
        // is rolled back instead.
        let sql = if self.server_status == b'E' {
            "ROLLBACK"
        } else {
            self.txn.end_sql()
        };
        self.step = Default::default();
        let before = self.to_client.len();
        self.own_statement(sql, Own::Step);
        self.own_statement(UNLOCK_ALL, Own::Quiet);
        self.txn.own_open = false;
        self.send_sync(To::Own(Own::Quiet));
        self.drain().await?;
        let failed = self.step.failed;
        if failed {
            // The error is already written; report it as the statement's.
            let e = self.to_client.split_off(before);
            let fields = crate::wire::backend::ErrorFields::decode(e.get(5..).unwrap_or_default())
                .unwrap_or_default();
            self.reconcile().await?;
            return Ok(Err(fields));
        }
        self.reconcile().await?;
        Ok(Ok(()))
    }
}
