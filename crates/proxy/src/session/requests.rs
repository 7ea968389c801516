//! The client-facing half of a session: reads the client's messages,
//! classifies and judges each statement, rewrites or refuses it, queues
//! what the server half must expect, and writes to the server.
//!
//! Most of the time messages stream through without waiting. The half
//! waits for the server only where a decision needs the outcome: at the
//! end of each dry-run unit (to roll it back), and after a write under a
//! max-rows budget (to roll it back if it affected too many rows).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::SessionInfo;
use super::entries::{Draft, Entry, InjectOutcome, Pending, Queue, RfqOutcome};
use crate::classify::{Statement, Tx, classify};
use crate::policy::{Rules, Verdict, ends_transaction};
use crate::wire::backend::{ErrorFields, ready_for_query};
use crate::wire::frontend::{Bind, Execute, Frontend, Parse, Query};
use crate::wire::{Frame, FrameReader, WireError};

/// A statement that fails to parse in the server: what the proxy sends
/// instead of a refused one, so that the server aborts the transaction and
/// skips to Sync exactly as for a real error.
pub const POISON: &str = "pgfork refused this statement";

/// Most prepared statements one session may hold (the proxy remembers each).
const MAX_PREPARED: usize = 10_000;
/// Classifications remembered per session, by exact text.
const CACHE: usize = 1_000;

/// Why the client half ended.
#[derive(Debug)]
pub enum Closed {
    /// The client sent Terminate or closed the connection.
    Client,
    /// The client sent something invalid.
    BadInput(WireError),
    /// The server half is gone.
    ServerGone,
}

struct Prepared {
    sql: String,
    stmts: Arc<Vec<Statement>>,
    /// COMMIT rewritten to ROLLBACK (dry-run).
    rewritten: bool,
}

struct Portal {
    statement: String,
    params: Option<String>,
}

/// Budgets and switches of one session.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rows one statement may affect.
    pub max_rows: Option<u64>,
    /// Parameters go to the audit log.
    pub audit_params: bool,
    /// Set when the branch outgrew its storage budget: writes are refused.
    pub storage_exceeded: Arc<AtomicBool>,
    /// The storage budget, for the message.
    pub max_storage: Option<u64>,
}

/// The client-facing half's state.
pub struct Requests<R, W> {
    client: FrameReader<R>,
    server: W,
    out: BytesMut,
    tx: Arc<Queue>,
    info: Arc<SessionInfo>,
    rules: Rules,
    limits: Limits,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Portal>,
    cache: HashMap<String, Arc<Result<Vec<Statement>, String>>>,
    held: VecDeque<Frame>,
    last_rfq: Option<oneshot::Receiver<RfqOutcome>>,
    /// Dry-run: the client believes it is in a transaction block.
    client_in_tx: bool,
    /// Dry-run: an extended-protocol unit (up to Sync) is under way.
    unit: Option<Unit>,
}

#[derive(Debug, Clone, Copy)]
struct Unit {
    wrapped: bool,
    open: bool,
    ended: bool,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Requests<R, W> {
    /// A half reading `client` and writing `server`.
    pub fn new(
        client: FrameReader<R>,
        server: W,
        tx: Arc<Queue>,
        info: Arc<SessionInfo>,
        rules: Rules,
        limits: Limits,
    ) -> Self {
        Requests {
            client,
            server,
            out: BytesMut::with_capacity(16 * 1024),
            tx,
            info,
            rules,
            limits,
            statements: HashMap::new(),
            portals: HashMap::new(),
            cache: HashMap::new(),
            held: VecDeque::new(),
            last_rfq: None,
            client_in_tx: false,
            unit: None,
        }
    }

    fn dry_run(&self) -> bool {
        self.rules.policy == pgfork_engine::agents::Policy::DryRun
    }

    fn push(&self, e: Entry) -> Result<(), Closed> {
        if self.tx.push(e) {
            Ok(())
        } else {
            Err(Closed::ServerGone)
        }
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        if !self.out.is_empty() {
            self.server
                .write_all(&self.out)
                .await
                .map_err(|_| Closed::ServerGone)?;
            self.out.clear();
        }
        Ok(())
    }

    async fn next_frame(&mut self) -> Result<Option<Frame>, Closed> {
        if let Some(f) = self.held.pop_front() {
            return Ok(Some(f));
        }
        if !self.client.has_buffered_frame() {
            self.flush().await?;
        }
        self.client.next().await.map_err(Closed::BadInput)
    }

    /// Waits for `rx` while passing COPY data on (a COPY FROM STDIN must
    /// go on while its outcome is awaited); other messages are held.
    async fn wait<T>(&mut self, mut rx: oneshot::Receiver<T>) -> Result<T, Closed> {
        self.flush().await?;
        loop {
            tokio::select! {
                r = &mut rx => return r.map_err(|_| Closed::ServerGone),
                f = self.client.next() => match f {
                    Ok(Some(f)) if matches!(f.tag, b'd' | b'c' | b'f') => {
                        self.server.write_all(&f.raw).await.map_err(|_| Closed::ServerGone)?;
                    }
                    Ok(Some(f)) => self.held.push_back(f),
                    Ok(None) => return Err(Closed::Client),
                    Err(e) => return Err(Closed::BadInput(e)),
                }
            }
        }
    }

    /// Waits until every Query and Sync sent so far has its ReadyForQuery;
    /// returns the transaction status then.
    async fn settle(&mut self) -> Result<u8, Closed> {
        match self.last_rfq.take() {
            Some(rx) => Ok(self.wait(rx).await.map(|o| o.status).unwrap_or(b'I')),
            None => Ok(self.info.status()),
        }
    }

    /// Sends statements of the proxy's own, through the extended protocol
    /// with named objects so the client's unnamed statement survives.
    fn inject(
        &mut self,
        sql: &str,
        done: Option<oneshot::Sender<InjectOutcome>>,
    ) -> Result<(), Closed> {
        self.push(Entry::Injected { done })?;
        for m in [
            Frontend::Close(crate::wire::frontend::Target {
                kind: b'P',
                name: "pgfork_tx".into(),
            }),
            Frontend::Close(crate::wire::frontend::Target {
                kind: b'S',
                name: "pgfork_tx".into(),
            }),
            Frontend::Parse(Parse {
                name: "pgfork_tx".into(),
                sql: sql.into(),
                param_types: vec![],
            }),
            Frontend::Bind(Bind {
                portal: "pgfork_tx".into(),
                statement: "pgfork_tx".into(),
                param_formats: vec![],
                params: vec![],
                result_formats: vec![],
            }),
            Frontend::Execute(Execute {
                portal: "pgfork_tx".into(),
                max_rows: 0,
            }),
            Frontend::Close(crate::wire::frontend::Target {
                kind: b'P',
                name: "pgfork_tx".into(),
            }),
            Frontend::Close(crate::wire::frontend::Target {
                kind: b'S',
                name: "pgfork_tx".into(),
            }),
            Frontend::Sync,
        ] {
            m.encode(&mut self.out);
        }
        Ok(())
    }

    fn synth(&self, b: Bytes) -> Result<(), Closed> {
        self.push(Entry::Synthetic(b))
    }

    fn classified(&mut self, sql: &str) -> Arc<Result<Vec<Statement>, String>> {
        if let Some(c) = self.cache.get(sql) {
            return c.clone();
        }
        let c = Arc::new(classify(sql));
        if self.cache.len() >= CACHE {
            self.cache.clear();
        }
        self.cache.insert(sql.to_string(), c.clone());
        c
    }

    /// The first refusal among `stmts`, by policy or budget.
    fn judge(&self, stmts: &[Statement]) -> Option<(&'static str, String)> {
        for s in stmts {
            if let Verdict::Refuse { code, message } = self.rules.check(s) {
                return Some((code, message));
            }
            if self.limits.storage_exceeded.load(Ordering::Relaxed)
                && !s.read_only
                && s.tx.is_none()
                && s.sets.is_empty()
            {
                return Some((
                    "53100",
                    format!(
                        "pgfork budget max-storage: the branch uses more than the {} bytes allowed for agent '{}'; only reads are allowed",
                        self.limits.max_storage.unwrap_or(0),
                        self.info.agent
                    ),
                ));
            }
        }
        if self.dry_run() {
            let last = stmts.len().saturating_sub(1);
            if stmts
                .iter()
                .enumerate()
                .any(|(i, s)| ends_transaction(s) && i < last)
            {
                return Some((
                    "25001",
                    "pgfork policy dry-run: COMMIT or ROLLBACK must be the last statement of a query string".into(),
                ));
            }
        }
        None
    }

    fn refusal(&self, code: &'static str, message: String, statement: String) -> Entry {
        Entry::Refused {
            error: ErrorFields::error(code, message.clone()).to_error(),
            draft: Draft::now(statement, None),
            code,
            message,
        }
    }

    fn needs_budget(&self, stmts: &[Statement]) -> bool {
        self.limits.max_rows.is_some()
            && stmts
                .iter()
                .any(|s| !s.read_only && s.tx.is_none() && s.sets.is_empty())
    }

    /// Runs until the client leaves or breaks the protocol.
    pub async fn run(mut self) -> (Closed, W) {
        let closed = loop {
            let frame = match self.next_frame().await {
                Ok(Some(f)) => f,
                Ok(None) => break Closed::Client,
                Err(c) => break c,
            };
            let msg = match Frontend::decode(frame.tag, frame.body.clone()) {
                Ok(m) => m,
                Err(e) => break Closed::BadInput(e),
            };
            let step = match msg {
                Frontend::Query(q) => self.query(q, &frame).await,
                Frontend::Parse(p) => self.parse(p, &frame).await,
                Frontend::Bind(b) => self.bind(b, &frame).await,
                Frontend::Execute(e) => self.execute(e, &frame).await,
                Frontend::Sync => self.sync(&frame).await,
                Frontend::Close(t) => {
                    match t.kind {
                        b'S' => self.statements.remove(&t.name),
                        _ => self.portals.remove(&t.name).map(|_| Prepared {
                            sql: String::new(),
                            stmts: Arc::new(vec![]),
                            rewritten: false,
                        }),
                    };
                    self.start_unit()
                        .await
                        .map(|()| self.out.extend_from_slice(&frame.raw))
                }
                Frontend::Describe(_) => self
                    .start_unit()
                    .await
                    .map(|()| self.out.extend_from_slice(&frame.raw)),
                Frontend::Flush
                | Frontend::CopyData(_)
                | Frontend::CopyDone
                | Frontend::CopyFail(_) => {
                    self.out.extend_from_slice(&frame.raw);
                    Ok(())
                }
                Frontend::FunctionCall(f) => self.function_call(f.oid, &frame).await,
                Frontend::Terminate => {
                    let _ = self.flush().await;
                    break Closed::Client;
                }
                Frontend::Password(_) => {
                    break Closed::BadInput(WireError::Malformed("password message after login"));
                }
            };
            if let Err(c) = step {
                break c;
            }
        };
        let _ = self.flush().await;
        if let Closed::BadInput(e) = &closed {
            let _ = self.push(Entry::Synthetic(
                ErrorFields::fatal("08P01", format!("invalid frontend message: {e}")).to_error(),
            ));
        }
        self.tx.close();
        (closed, self.server)
    }

    /// Whether a query string can skip the parser: only in the branch
    /// policy (the branch is the agent's own), without budgets to check,
    /// and only if it holds one statement and none of the words the branch
    /// rules look for (settings the proxy protects, COPY, unicode escapes
    /// that could spell them). A cheap test that can only err towards parsing.
    fn trivial(&self, sql: &str) -> bool {
        if self.rules.policy != pgfork_engine::agents::Policy::Branch
            || self.limits.max_rows.is_some()
            || self.limits.storage_exceeded.load(Ordering::Relaxed)
        {
            return false;
        }
        let body = sql.trim_end_matches(|c: char| c.is_whitespace() || c == ';');
        if body.contains(';') {
            return false;
        }
        let lower = body.to_ascii_lowercase();
        !["timeout", "set_config", "copy", "u&"]
            .iter()
            .any(|w| lower.contains(w))
    }

    async fn query(&mut self, q: Query, frame: &Frame) -> Result<(), Closed> {
        if self.trivial(&q.sql) {
            self.push(Entry::Stmt(self.pending(q.sql.trim().to_string(), None)))?;
            let (done, rx) = oneshot::channel();
            self.push(Entry::Rfq {
                forward: true,
                done: Some(done),
            })?;
            self.last_rfq = Some(rx);
            self.out.extend_from_slice(&frame.raw);
            return Ok(());
        }
        let classified = self.classified(&q.sql);
        let stmts: Vec<Statement> = match &*classified {
            Ok(s) => s.clone(),
            // The server's parser says the same: let it report the error.
            Err(_) => Vec::new(),
        };
        let text = |s: &Statement| statement_text(&q.sql, s);
        if let Some((code, message)) = self.judge(&stmts) {
            let refused = self.refusal(code, message, q.sql.clone());
            self.push(refused)?;
            let (done, rx) = oneshot::channel();
            self.push(Entry::Rfq {
                forward: true,
                done: Some(done),
            })?;
            self.last_rfq = Some(rx);
            Frontend::Query(Query { sql: POISON.into() }).encode(&mut self.out);
            return Ok(());
        }
        let dry = self.dry_run();
        if !dry && !self.needs_budget(&stmts) {
            if stmts.is_empty() {
                self.push(Entry::Stmt(self.pending(q.sql.clone(), None)))?;
            }
            for s in &stmts {
                self.push(Entry::Stmt(self.pending(text(s), None)))?;
            }
            let (done, rx) = oneshot::channel();
            self.push(Entry::Rfq {
                forward: true,
                done: Some(done),
            })?;
            self.last_rfq = Some(rx);
            self.out.extend_from_slice(&frame.raw);
            return Ok(());
        }
        // A unit that waits for its outcome.
        let status = self.settle().await?;
        if !dry && stmts.iter().any(|s| s.tx.is_some()) {
            let refused = self.refusal(
                "0A000",
                "pgfork budget max-rows: send transaction control and writes in separate query strings, so that a write can be rolled back alone".into(),
                q.sql.clone(),
            );
            self.push(refused)?;
            let (done, rx) = oneshot::channel();
            self.push(Entry::Rfq {
                forward: true,
                done: Some(done),
            })?;
            self.last_rfq = Some(rx);
            Frontend::Query(Query { sql: POISON.into() }).encode(&mut self.out);
            return Ok(());
        }
        let in_tx = if dry {
            self.client_in_tx
        } else {
            status != b'I'
        };
        let starts_with_begin = matches!(stmts.first().and_then(|s| s.tx), Some(Tx::Begin { .. }));
        // Session settings are not wrapped: a rollback would undo them,
        // and they change no data (the protected ones were refused above).
        let settings_only = !stmts.is_empty()
            && stmts.iter().all(|s| {
                matches!(
                    s.command.as_str(),
                    "SET" | "RESET" | "SHOW" | "LISTEN" | "UNLISTEN" | "DEALLOCATE"
                )
            });
        let wrap = !in_tx && !starts_with_begin && !settings_only;
        if wrap {
            self.inject("BEGIN", None)?;
        }
        let (sql, rewritten) = if dry {
            rewrite_commits(&q.sql, &stmts)
        } else {
            (q.sql.clone(), false)
        };
        let mut open = in_tx;
        if stmts.is_empty() {
            self.push(Entry::Stmt(self.pending(q.sql.clone(), None)))?;
        }
        for s in &stmts {
            let mut p = self.pending(text(s), self.limits.max_rows.filter(|_| !s.read_only));
            p.quiet_begin = wrap || in_tx;
            if dry && rewritten && matches!(s.tx, Some(Tx::Commit { .. })) {
                p.notice = Some(commit_notice());
            }
            open = tx_open_after(open, s);
            self.push(Entry::Stmt(p))?;
        }
        let (done, rx) = oneshot::channel();
        self.push(Entry::Rfq {
            forward: false,
            done: Some(done),
        })?;
        Frontend::Query(Query { sql }).encode(&mut self.out);
        let outcome = self.wait(rx).await?;
        self.end_unit(wrap, open, outcome).await
    }

    /// After a unit that was waited for: roll back or commit what the
    /// proxy wrapped, poison a transaction whose statement broke the
    /// budget, and tell the client the status it should see.
    async fn end_unit(
        &mut self,
        wrapped: bool,
        open: bool,
        outcome: RfqOutcome,
    ) -> Result<(), Closed> {
        let dry = self.dry_run();
        let status = if outcome.exceeded && (open || !wrapped) {
            // The client's own transaction: abort it, as an error would.
            self.push(Entry::Injected { done: None })?;
            Frontend::Query(Query { sql: POISON.into() }).encode(&mut self.out);
            b'E'
        } else if outcome.exceeded
            || (wrapped && !open && (dry || outcome.status == b'E'))
            || (dry && !open && outcome.status != b'I')
        {
            self.inject("ROLLBACK", None)?;
            b'I'
        } else if wrapped && !open {
            let (done, rx) = oneshot::channel();
            self.inject("COMMIT", Some(done))?;
            let committed = self.wait(rx).await?;
            if let Some(err) = committed.error {
                self.synth(err)?;
            }
            b'I'
        } else {
            outcome.status
        };
        if dry {
            self.client_in_tx = status != b'I';
        }
        let (done, rx) = oneshot::channel();
        // A ReadyForQuery of the proxy's own, in order with everything else.
        let _ = done.send(RfqOutcome {
            status,
            exceeded: false,
        });
        self.last_rfq = Some(rx);
        self.synth(ready_for_query(status))
    }

    fn pending(&self, statement: String, max_rows: Option<u64>) -> Pending {
        Pending {
            draft: Draft::now(statement, None),
            max_rows,
            notice: None,
            quiet_begin: false,
            done: None,
        }
    }

    /// Dry-run: the first message of an extended-protocol unit wraps it
    /// in a transaction unless the client has one open.
    async fn start_unit(&mut self) -> Result<(), Closed> {
        if !self.dry_run() || self.unit.is_some() {
            return Ok(());
        }
        self.settle().await?;
        let wrapped = !self.client_in_tx;
        if wrapped {
            self.inject("BEGIN", None)?;
        }
        self.unit = Some(Unit {
            wrapped,
            open: self.client_in_tx,
            ended: false,
        });
        Ok(())
    }

    async fn parse(&mut self, p: Parse, frame: &Frame) -> Result<(), Closed> {
        self.start_unit().await?;
        if self.statements.len() >= MAX_PREPARED && !self.statements.contains_key(&p.name) {
            let refused = self.refusal(
                "54000",
                format!("pgfork: more than {MAX_PREPARED} prepared statements in one session"),
                p.sql.clone(),
            );
            return self.poison_parse(refused, &p.name);
        }
        let classified = self.classified(&p.sql);
        let stmts = match &*classified {
            Ok(s) => s.clone(),
            Err(_) => Vec::new(),
        };
        if let Some((code, message)) = self.judge(&stmts) {
            let refused = self.refusal(code, message, p.sql.clone());
            self.statements.remove(&p.name);
            return self.poison_parse(refused, &p.name);
        }
        let (sql, rewritten) = if self.dry_run() {
            rewrite_commits(&p.sql, &stmts)
        } else {
            (p.sql.clone(), false)
        };
        if rewritten {
            Frontend::Parse(Parse { sql, ..p.clone() }).encode(&mut self.out);
        } else {
            self.out.extend_from_slice(&frame.raw);
        }
        self.statements.insert(
            p.name,
            Prepared {
                sql: p.sql,
                stmts: Arc::new(stmts),
                rewritten,
            },
        );
        Ok(())
    }

    fn poison_parse(&mut self, refused: Entry, name: &str) -> Result<(), Closed> {
        self.push(refused)?;
        Frontend::Parse(Parse {
            name: name.into(),
            sql: POISON.into(),
            param_types: vec![],
        })
        .encode(&mut self.out);
        Ok(())
    }

    async fn bind(&mut self, b: Bind, frame: &Frame) -> Result<(), Closed> {
        self.start_unit().await?;
        let params = self.limits.audit_params.then(|| params_json(&b));
        self.portals.insert(
            b.portal.clone(),
            Portal {
                statement: b.statement.clone(),
                params,
            },
        );
        self.out.extend_from_slice(&frame.raw);
        Ok(())
    }

    async fn execute(&mut self, e: Execute, frame: &Frame) -> Result<(), Closed> {
        self.start_unit().await?;
        let (sql, stmts, params, rewritten) = match self.portals.get(&e.portal) {
            Some(portal) => match self.statements.get(&portal.statement) {
                Some(p) => (
                    p.sql.clone(),
                    p.stmts.clone(),
                    portal.params.clone(),
                    p.rewritten,
                ),
                None => (
                    "(unknown statement)".to_string(),
                    Arc::new(vec![]),
                    portal.params.clone(),
                    false,
                ),
            },
            None => (
                "(unknown portal)".to_string(),
                Arc::new(vec![]),
                None,
                false,
            ),
        };
        if let Some(unit) = self.unit.as_mut() {
            if unit.ended && !unit.open {
                let refused = self.refusal(
                    "25001",
                    "pgfork policy dry-run: nothing may run after COMMIT or ROLLBACK before Sync"
                        .into(),
                    sql,
                );
                return self.poison_parse(refused, "pgfork_poison");
            }
            for s in stmts.iter() {
                unit.open = tx_open_after(unit.open, s);
                unit.ended |= ends_transaction(s);
            }
        }
        let budget = self.limits.max_rows.filter(|_| {
            self.needs_budget(&stmts) || (stmts.is_empty() && self.limits.max_rows.is_some())
        });
        let mut p = self.pending(sql, budget);
        p.draft.params = params;
        p.quiet_begin = self.dry_run();
        if rewritten {
            p.notice = Some(commit_notice());
        }
        if budget.is_none() {
            self.push(Entry::Stmt(p))?;
            self.out.extend_from_slice(&frame.raw);
            return Ok(());
        }
        // Wait for this write's row count before anything else reaches the
        // server: its transaction (explicit, or the implicit one up to
        // Sync) must still be open to be aborted.
        let (done, rx) = oneshot::channel();
        p.done = Some(done);
        self.push(Entry::Stmt(p))?;
        self.out.extend_from_slice(&frame.raw);
        Frontend::Flush.encode(&mut self.out);
        let outcome = self.wait(rx).await?;
        if outcome.exceeded {
            self.push(Entry::Poison)?;
            Frontend::Parse(Parse {
                name: "pgfork_poison".into(),
                sql: POISON.into(),
                param_types: vec![],
            })
            .encode(&mut self.out);
        }
        Ok(())
    }

    async fn sync(&mut self, frame: &Frame) -> Result<(), Closed> {
        let Some(unit) = self.unit.take() else {
            let (done, rx) = oneshot::channel();
            self.push(Entry::Rfq {
                forward: true,
                done: Some(done),
            })?;
            self.last_rfq = Some(rx);
            self.out.extend_from_slice(&frame.raw);
            return Ok(());
        };
        let (done, rx) = oneshot::channel();
        self.push(Entry::Rfq {
            forward: false,
            done: Some(done),
        })?;
        self.out.extend_from_slice(&frame.raw);
        let outcome = self.wait(rx).await?;
        self.end_unit(unit.wrapped, unit.open, outcome).await
    }

    async fn function_call(&mut self, oid: u32, frame: &Frame) -> Result<(), Closed> {
        let (done, rx) = oneshot::channel();
        if self.rules.policy == pgfork_engine::agents::Policy::Branch {
            self.push(Entry::Stmt(
                self.pending(format!("(function call, oid {oid})"), None),
            ))?;
            self.push(Entry::Rfq {
                forward: true,
                done: Some(done),
            })?;
            self.out.extend_from_slice(&frame.raw);
        } else {
            let refused = self.refusal(
                "42501",
                format!("pgfork policy {}: the fast-path function call message is not allowed; call functions with SELECT", self.rules.policy.as_str()),
                format!("(function call, oid {oid})"),
            );
            self.push(refused)?;
            self.push(Entry::Rfq {
                forward: true,
                done: Some(done),
            })?;
            Frontend::Query(Query { sql: POISON.into() }).encode(&mut self.out);
        }
        self.last_rfq = Some(rx);
        Ok(())
    }
}

/// Whether a transaction block is open after `s`, if it was `open` before.
fn tx_open_after(open: bool, s: &Statement) -> bool {
    match s.tx {
        Some(Tx::Begin { .. }) => true,
        Some(Tx::Commit { chain }) | Some(Tx::Rollback { chain }) => chain,
        _ => open,
    }
}

fn commit_notice() -> Bytes {
    ErrorFields {
        severity: "NOTICE".into(),
        code: "00000".into(),
        message: "pgfork dry-run: COMMIT rolled the transaction back; nothing was written".into(),
        detail: None,
        hint: None,
    }
    .to_notice()
}

/// The text of one statement of a query string.
fn statement_text(sql: &str, s: &Statement) -> String {
    let end = if s.len == 0 {
        sql.len()
    } else {
        (s.location + s.len).min(sql.len())
    };
    sql.get(s.location.min(end)..end)
        .unwrap_or(sql)
        .trim()
        .to_string()
}

/// Dry-run: every COMMIT becomes ROLLBACK (keeping AND CHAIN).
fn rewrite_commits(sql: &str, stmts: &[Statement]) -> (String, bool) {
    let mut out = sql.to_string();
    let mut changed = false;
    for s in stmts.iter().rev() {
        if let Some(Tx::Commit { chain }) = s.tx {
            let end = if s.len == 0 {
                sql.len()
            } else {
                (s.location + s.len).min(sql.len())
            };
            if out.is_char_boundary(s.location) && out.is_char_boundary(end) {
                out.replace_range(
                    s.location..end,
                    if chain {
                        " ROLLBACK AND CHAIN"
                    } else {
                        " ROLLBACK"
                    },
                );
                changed = true;
            }
        }
    }
    (out, changed)
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
                Some(v) if binary => serde_json::Value::String(format!(
                    "\\x{}",
                    v.iter().map(|b| format!("{b:02x}")).collect::<String>()
                )),
                Some(v) => serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
            }
        })
        .collect();
    serde_json::Value::Array(values).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_become_rollbacks_in_place() {
        let sql = "BEGIN; INSERT INTO t VALUES (1); COMMIT";
        let stmts = classify(sql).unwrap();
        let (out, changed) = rewrite_commits(sql, &stmts);
        assert!(changed);
        assert_eq!(
            classify(&out).unwrap()[2].tx,
            Some(Tx::Rollback { chain: false })
        );
        assert_eq!(statement_text(sql, &stmts[1]), "INSERT INTO t VALUES (1)");
        let (out, _) = rewrite_commits("commit and chain", &classify("commit and chain").unwrap());
        assert_eq!(
            classify(&out).unwrap()[0].tx,
            Some(Tx::Rollback { chain: true })
        );
    }
}
