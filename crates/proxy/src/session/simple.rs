//! A simple Query: the string is split with the server's own grammar and
//! every statement goes to the server alone, as an extended-protocol
//! Parse/Bind/Describe/Execute of the unnamed statement. The statements of
//! one string share the server's implicit transaction (they are separated
//! by Flush, not Sync), so a failure rolls back the ones before it, as
//! PostgreSQL does; the answers are translated back to a simple Query's.

use std::sync::Arc;

use bytes::Bytes;

use super::budget::MEASURE_SQL;
use super::conductor::{Conductor, Exec, Expect, Own, Step, Stop, To};
use super::record::{Draft, Outcome};
use super::txn::Simulated;
use crate::classify::Statement;
use crate::wire::backend::{ErrorFields, frame, ready_for_query};
use crate::wire::frontend::{Bind, Execute, Frontend, Parse, Target};

impl Conductor {
    /// Runs one simple Query.
    pub(super) async fn simple_query(&mut self, sql: Bytes) -> Result<(), Stop> {
        if self.unsynced {
            // Inside a pipeline: after an error PostgreSQL skips a Query
            // too, up to the Sync, answering nothing.
            self.settle().await?;
        }
        if self.client_skipping || self.server_skipping {
            let text = self.text(&sql);
            self.record_now(text, None, super::pump::skipped());
            return Ok(());
        }
        // A simple Query destroys the unnamed statement and portal.
        self.statements.remove("");
        self.portals.remove("");
        self.step = Step::default();
        let parsed = self.classified(&sql);
        let stmts = match &*parsed {
            Ok(s) => s.clone(),
            Err(message) => {
                let text = self.text(&sql);
                return self.refuse_query(text, "42601", message.clone()).await;
            }
        };
        if stmts.is_empty() {
            let mut out = bytes::BytesMut::new();
            frame(b'I', &[], &mut out);
            self.to_client.extend_from_slice(&out);
            let status = self.client_status();
            self.to_client.extend_from_slice(&ready_for_query(status));
            return Ok(());
        }
        // Judged whole before anything runs: a string with one refused
        // statement runs none of them.
        for s in &stmts {
            if let Some((code, message)) = self.judge(s) {
                let text = self.text(&sql[s.location..s.location + s.len]);
                return self.refuse_query(text, code, message).await;
            }
        }
        if let [s] = stmts.as_slice()
            && self.passes_whole(s)
        {
            return self.pass_query(&sql, s).await;
        }
        let n = stmts.len();
        for (i, s) in stmts.iter().enumerate() {
            let bytes = sql.slice(s.location..s.location + s.len);
            let text = trimmed(self.text(&bytes));
            if !self
                .run_simple_statement(s, bytes, text, i + 1 == n)
                .await?
            {
                break;
            }
        }
        self.end_exchange(true).await?;
        let status = self.client_status();
        self.write_records(status);
        self.to_client.extend_from_slice(&ready_for_query(status));
        Ok(())
    }

    /// Whether a one-statement Query can go to the server as it is: for a
    /// branch agent with no row budget, its branch within its storage
    /// budget, outside a pipeline, a statement that is neither transaction
    /// control (tracked for the storage guard) nor COPY FROM STDIN. The
    /// server runs the agent's own branch with the agent's own rights, so
    /// nothing depends on the parser's reading but the audit record; if
    /// the server reads more than one statement, the second completion
    /// ends the session.
    fn passes_whole(&self, s: &Statement) -> bool {
        !self.txn.owned()
            && self.limits.max_rows.is_none()
            && !self.limits.over_storage()
            && !self.unsynced
            && !self.txn.own_is_open()
            && s.tx.is_none()
            && !s.set_transaction
            && s.copy_from.is_none()
    }

    /// Sends a simple Query as it is and relays its answers.
    async fn pass_query(&mut self, sql: &Bytes, s: &Arc<Statement>) -> Result<(), Stop> {
        let text = trimmed(self.text(&sql[s.location..s.location + s.len]));
        let mut out = bytes::BytesMut::new();
        Frontend::Query(crate::wire::frontend::Query { sql: sql.clone() }).encode(&mut out);
        let exec = Box::new(Exec {
            stmt: Some(s.clone()),
            draft: Draft::now(text, None),
            started: None,
        });
        self.send_raw(&out, Expect::Query, To::Client, Some(exec));
        self.unsynced = false;
        self.drain().await?;
        self.reconcile().await?;
        let status = self.client_status();
        self.write_records(status);
        Ok(())
    }

    /// Runs one statement of a simple Query; false if it failed (the rest
    /// of the string is not run).
    async fn run_simple_statement(
        &mut self,
        s: &Arc<Statement>,
        bytes: Bytes,
        text: String,
        last: bool,
    ) -> Result<bool, Stop> {
        if self.txn.owned() && (s.tx.is_some() || s.set_transaction) {
            match self.simulate(s, text.clone()).await? {
                Simulated::Done { failed } => {
                    if failed {
                        self.fail_client_transaction().await?;
                    }
                    return Ok(!failed);
                }
                Simulated::Forward => {}
            }
        }
        if self.txn.owned() && self.txn.client_open() && s.no_transaction {
            let e = ErrorFields::error(
                "25001",
                format!("{} cannot run inside a transaction block", s.command),
            );
            self.to_client.extend_from_slice(&e.to_error());
            self.record_now(text, None, error_outcome(&e));
            self.fail_client_transaction().await?;
            return Ok(false);
        }
        let measure = self.measures(Some(s));
        self.before_statement(Some(s), true);
        if measure {
            self.own_statement_in(MEASURE_SQL, Own::Measure, true);
        }
        let to = if measure {
            To::Held { simple: true }
        } else {
            To::Simple
        };
        self.step = Step::default();
        self.send_statement(bytes, Some(s.clone()), text, to);
        if measure {
            self.own_statement_in(MEASURE_SQL, Own::Measure, true);
        }
        let copy_in = s.copy_from == Some(true);
        if last && !measure && !copy_in {
            // The common case: one round trip, ended by end_exchange.
            return Ok(true);
        }
        self.settle().await?;
        if measure {
            return self.settle_budget(true);
        }
        Ok(!self.step.failed)
    }

    /// Queues a client statement as Parse/Bind/Describe/Execute of the
    /// unnamed statement and portal.
    fn send_statement(&mut self, sql: Bytes, stmt: Option<Arc<Statement>>, text: String, to: To) {
        let unnamed = String::new;
        self.send(
            &Frontend::Parse(Parse {
                name: unnamed(),
                sql,
                param_types: vec![],
            }),
            Some(Expect::Parse),
            to,
        );
        self.send(
            &Frontend::Bind(Bind {
                portal: unnamed(),
                statement: unnamed(),
                param_formats: vec![],
                params: vec![],
                result_formats: vec![],
            }),
            Some(Expect::Bind),
            to,
        );
        self.send(
            &Frontend::Describe(Target {
                kind: b'P',
                name: unnamed(),
            }),
            Some(Expect::DescribePortal),
            to,
        );
        let mut out = bytes::BytesMut::new();
        Frontend::Execute(Execute {
            portal: unnamed(),
            max_rows: 0,
        })
        .encode(&mut out);
        let exec = Box::new(Exec {
            stmt,
            draft: Draft::now(text, None),
            started: None,
        });
        self.send_raw(&out, Expect::Execute, to, Some(exec));
    }

    /// Ends an exchange: the proxy's transaction (unless the client is
    /// inside one), Sync, and the check of the server's status. Nothing
    /// goes to the server if nothing was sent.
    pub(super) async fn end_exchange(&mut self, unnamed: bool) -> Result<(), Stop> {
        self.end_own_unless_client_open(unnamed);
        if self.unsynced {
            self.send_sync(To::Own(Own::Quiet));
            self.drain().await?;
            self.reconcile().await?;
        }
        Ok(())
    }

    /// Refuses a whole query string.
    async fn refuse_query(
        &mut self,
        text: String,
        code: &str,
        message: String,
    ) -> Result<(), Stop> {
        let e = ErrorFields::error(code, message);
        self.to_client.extend_from_slice(&e.to_error());
        self.record_now(text, None, error_outcome(&e));
        self.fail_client_transaction().await?;
        let status = self.client_status();
        self.write_records(status);
        self.to_client.extend_from_slice(&ready_for_query(status));
        Ok(())
    }
}

/// The record of a statement the proxy answered with `e`.
pub(super) fn error_outcome(e: &ErrorFields) -> Outcome {
    Outcome {
        error: Some((e.code.clone(), e.message.clone())),
        ..Outcome::default()
    }
}

/// A statement's text without the whitespace around it (after a `;`).
fn trimmed(text: String) -> String {
    let t = text.trim();
    if t.len() == text.len() {
        text
    } else {
        t.to_string()
    }
}
