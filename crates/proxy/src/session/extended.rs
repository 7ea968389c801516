//! The extended protocol. A Parse is judged when it arrives and must hold
//! at most one statement; Parse, Bind, Describe and Close go to the server
//! as the client sent them; an Execute gets what the policy puts around it
//! (the proxy's transaction, a lock timeout, the budget's counters); the
//! Execute of transaction control is answered by the proxy in read-only
//! and dry-run. Messages stream to the server until a Sync or Flush, except
//! where the proxy must see an outcome first.

use std::sync::Arc;

use bytes::Bytes;

use super::budget::{MEASURE_SQL, reserved, reserved_error};
use super::conductor::{Conductor, Exec, Expect, Known, Own, Portal, Step, Stop, To};
use super::record::Draft;
use super::simple::error_outcome;
use super::txn::Simulated;
use crate::wire::Frame;
use crate::wire::backend::{ErrorFields, ready_for_query};
use crate::wire::frontend::{Bind, Execute, Parse, Target};

impl Conductor {
    /// Parse: one statement at most, judged now.
    pub(super) async fn parse(&mut self, p: Parse, frame: Frame) -> Result<(), Stop> {
        if self.client_skipping {
            return Ok(());
        }
        let text = self.text(&p.sql);
        if self.uses_reserved(&[&p.name]) {
            return self.refuse_reserved(text).await;
        }
        let parsed = self.classified(&p.sql);
        let stmts = match &*parsed {
            Ok(s) => s.clone(),
            Err(m) => return self.fail_batch(text, "42601", m.clone()).await,
        };
        if stmts.len() > 1 {
            return self
                .fail_batch(
                    text,
                    "42601",
                    "cannot insert multiple commands into a prepared statement".into(),
                )
                .await;
        }
        let stmt = stmts.into_iter().next();
        if let Some(s) = &stmt
            && let Some((code, message)) = self.judge(s)
        {
            return self.fail_batch(text, code, message).await;
        }
        let known = Known {
            stmt,
            text: Arc::from(text),
        };
        self.open_own_for_client();
        self.send_parse(&frame.raw, p.name, known);
        self.write_if_idle().await
    }

    /// Bind: passed on; the portal is recorded once the server has it.
    pub(super) async fn bind(&mut self, b: Bind, frame: Frame) -> Result<(), Stop> {
        if self.client_skipping {
            return Ok(());
        }
        if self.uses_reserved(&[&b.portal, &b.statement]) {
            return self.refuse_reserved(String::new()).await;
        }
        let known = self.statements.get(&b.statement).cloned().unwrap_or(Known {
            stmt: None,
            text: Arc::from(format!("EXECUTE {}", b.statement)),
        });
        let params = self.limits.audit_params.then(|| params_json(&b));
        let portal = Portal { known, params };
        self.open_own_for_client();
        self.send_bind(&frame.raw, b.portal, portal);
        self.write_if_idle().await
    }

    /// Describe: passed on.
    pub(super) async fn describe(&mut self, t: Target, frame: Frame) -> Result<(), Stop> {
        if self.client_skipping {
            return Ok(());
        }
        if self.uses_reserved(&[&t.name]) {
            return self.refuse_reserved(String::new()).await;
        }
        let expect = if t.kind == b'S' {
            Expect::DescribeStatement
        } else {
            Expect::DescribePortal
        };
        self.send_raw(&frame.raw, expect, To::Client, None);
        self.write_if_idle().await
    }

    /// Close: passed on; the proxy forgets the name at once.
    pub(super) async fn close(&mut self, t: Target, frame: Frame) -> Result<(), Stop> {
        if self.client_skipping {
            return Ok(());
        }
        if self.uses_reserved(&[&t.name]) {
            return self.refuse_reserved(String::new()).await;
        }
        if t.kind == b'S' {
            self.statements.remove(&t.name);
        } else {
            self.portals.remove(&t.name);
        }
        self.send_raw(&frame.raw, Expect::Close, To::Client, None);
        self.write_if_idle().await
    }

    /// Execute: what the policy wraps around the statement, then it.
    pub(super) async fn execute(&mut self, e: Execute, frame: Frame) -> Result<(), Stop> {
        if self.client_skipping {
            return Ok(());
        }
        if self.uses_reserved(&[&e.portal]) {
            return self.refuse_reserved(String::new()).await;
        }
        let portal = self.portals.get(&e.portal).cloned();
        let (stmt, text, params) = match &portal {
            Some(p) => (
                p.known.stmt.clone(),
                p.known.text.to_string(),
                p.params.clone(),
            ),
            None => (None, format!("EXECUTE portal {:?}", e.portal), None),
        };
        if self.txn.owned()
            && stmt
                .as_ref()
                .is_some_and(|s| s.tx.is_some() || s.set_transaction)
        {
            let s = stmt.clone().expect("a statement");
            self.settle().await?;
            if self.server_skipping {
                // An earlier message failed: the server would skip this one.
                return Ok(());
            }
            match self.simulate(&s, text.clone()).await? {
                Simulated::Done { failed } => {
                    if failed {
                        self.poison(false);
                        self.client_skipping = true;
                    }
                    return Ok(());
                }
                Simulated::Forward => {}
            }
        }
        if self.txn.owned()
            && self.txn.client_open()
            && stmt.as_ref().is_some_and(|s| s.no_transaction)
        {
            let command = stmt.as_ref().map(|s| s.command.clone()).unwrap_or_default();
            let message = format!("{command} cannot run inside a transaction block");
            return self.fail_batch(text, "25001", message).await;
        }
        let measure = self.measures(stmt.as_deref());
        self.before_statement(stmt.as_deref(), false);
        if measure {
            self.own_statement(MEASURE_SQL, Own::Measure);
        }
        let to = if measure {
            To::Held { simple: false }
        } else {
            To::Client
        };
        let copy_in = stmt.as_ref().is_some_and(|s| s.copy_from == Some(true));
        let exec = Box::new(Exec {
            stmt,
            draft: Draft::now(text, params),
            started: None,
        });
        if measure {
            self.step = Step::default();
        }
        self.send_raw(&frame.raw, Expect::Execute, to, Some(exec));
        if measure {
            self.own_statement(MEASURE_SQL, Own::Measure);
            self.settle().await?;
            if !self.settle_budget(false)? {
                self.client_skipping = true;
            }
            return Ok(());
        }
        if copy_in {
            return self.settle().await;
        }
        self.write_if_idle().await
    }

    /// Sync: ends the exchange and reports the status the client is owed.
    pub(super) async fn sync(&mut self) -> Result<(), Stop> {
        self.client_skipping = false;
        self.end_exchange(false).await?;
        let status = self.client_status();
        self.write_records(status);
        self.to_client.extend_from_slice(&ready_for_query(status));
        Ok(())
    }

    /// Flush: everything owed so far goes to the client.
    pub(super) async fn flush(&mut self) -> Result<(), Stop> {
        if self.client_skipping {
            return Ok(());
        }
        self.settle().await
    }

    /// Sends what is queued once the client has nothing more buffered
    /// (so a pipeline goes out in one write), reading answers meanwhile.
    async fn write_if_idle(&mut self) -> Result<(), Stop> {
        if self.held.is_empty() && !self.client.has_buffered_frame() {
            self.write_through().await?;
        }
        Ok(())
    }

    /// Whether a message names one of the proxy's own statements or portals.
    fn uses_reserved(&self, names: &[&String]) -> bool {
        names.iter().any(|n| reserved(n))
    }

    /// Refuses a message that names the proxy's own objects.
    async fn refuse_reserved(&mut self, text: String) -> Result<(), Stop> {
        let (code, message) = reserved_error();
        self.fail_batch(text, code, message).await
    }

    /// The proxy refuses a message of a pipeline: the client gets the error
    /// after the answers owed before it, the server aborts what the
    /// pipeline began, and the rest of it up to Sync is skipped.
    async fn fail_batch(&mut self, text: String, code: &str, message: String) -> Result<(), Stop> {
        self.settle().await?;
        if self.server_skipping {
            // An earlier message of the pipeline failed: PostgreSQL skips
            // this one without a word, and so does the proxy.
            if !text.is_empty() {
                self.record_now(text, None, super::pump::skipped());
            }
            self.client_skipping = true;
            return Ok(());
        }
        let e = ErrorFields::error(code, message);
        self.to_client.extend_from_slice(&e.to_error());
        if !text.is_empty() {
            self.record_now(text, None, error_outcome(&e));
        }
        if !self.server_skipping {
            self.poison(false);
        }
        self.client_skipping = true;
        Ok(())
    }
}

/// Bind parameters as a JSON array of strings (binary ones as `\x` hex).
fn params_json(b: &Bind) -> String {
    let values: Vec<serde_json::Value> = b
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let binary = match b.param_formats.len() {
                0 => false,
                1 => b.param_formats[0] == 1,
                _ => b.param_formats.get(i) == Some(&1),
            };
            match p {
                None => serde_json::Value::Null,
                Some(v) if binary => serde_json::Value::String(hex(v)),
                Some(v) => serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
            }
        })
        .collect();
    serde_json::Value::Array(values).to_string()
}

fn hex(v: &Bytes) -> String {
    let mut s = String::with_capacity(2 + v.len() * 2);
    s.push_str("\\x");
    for b in v.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
