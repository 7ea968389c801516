//! The server-facing half of a session: reads the server's messages,
//! matches them against the entries the client half queued, passes them
//! on to the client (in batches), and writes the audit records.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::BytesMut;
use pgfork_pool::meta::AuditRow;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::SessionInfo;
use super::entries::{Draft, Entry, InjectOutcome, Pending, Queue, RfqOutcome, StmtOutcome};
use crate::wire::backend::{Completion, ErrorFields, ready_status};
use crate::wire::{Frame, FrameReader, WireError};

/// Why the server half ended.
#[derive(Debug)]
pub enum End {
    /// The server closed the connection (or it failed).
    ServerGone(Option<WireError>),
    /// The client went away (a write failed).
    ClientGone,
    /// The client half finished and the queue is done.
    Done,
    /// pgfork ended the session (the agent was revoked).
    Killed,
}

/// The server-facing half's state.
pub struct Responses<W> {
    client: W,
    out: BytesMut,
    queue: VecDeque<Entry>,
    rx: Arc<Queue>,
    info: Arc<SessionInfo>,
    /// After a statement exceeded its budget: drop everything until ReadyForQuery.
    discard: bool,
    exceeded: bool,
    /// Last transaction status seen.
    pub status: Arc<AtomicU8>,
    /// Error of an injected statement being dropped.
    injected_error: Option<bytes::Bytes>,
    rows: u64,
}

impl<W: AsyncWrite + Unpin> Responses<W> {
    /// A half writing to `client`, reading entries from `rx`.
    pub fn new(client: W, rx: Arc<Queue>, info: Arc<SessionInfo>, status: Arc<AtomicU8>) -> Self {
        Responses {
            client,
            out: BytesMut::with_capacity(16 * 1024),
            queue: VecDeque::new(),
            rx,
            info,
            discard: false,
            exceeded: false,
            status,
            injected_error: None,
            rows: 0,
        }
    }

    /// Runs until the server or client goes away, or the client half is done.
    pub async fn run<R: AsyncRead + Unpin>(
        mut self,
        mut server: FrameReader<R>,
        mut kill: tokio::sync::watch::Receiver<bool>,
    ) -> (End, W) {
        let end = self.serve(&mut server, &mut kill).await;
        self.rx.receiver_gone();
        (end, self.client)
    }

    async fn serve<R: AsyncRead + Unpin>(
        &mut self,
        server: &mut FrameReader<R>,
        kill: &mut tokio::sync::watch::Receiver<bool>,
    ) -> End {
        loop {
            let closed = self.rx.drain(&mut self.queue);
            self.emit_synthetic();
            self.info
                .busy
                .store(!self.queue.is_empty(), Ordering::Release);
            if *kill.borrow() {
                self.out.extend_from_slice(
                    &ErrorFields::fatal(
                        "57P01",
                        "terminating connection: pgfork revoked this agent or is shutting down",
                    )
                    .to_error(),
                );
                let _ = self.client.write_all(&self.out).await;
                return End::Killed;
            }
            if !self.out.is_empty() && !server.has_buffered_frame() {
                if self.client.write_all(&self.out).await.is_err() {
                    return End::ClientGone;
                }
                self.out.clear();
            }
            if closed && self.queue.is_empty() {
                return End::Done;
            }
            tokio::select! {
                biased;
                _ = kill.changed() => {}
                _ = self.rx.notified() => {}
                frame = server.next() => match frame {
                    Ok(Some(f)) => {
                        self.rx.drain(&mut self.queue);
                        self.handle(f);
                        if self.out.len() > 64 * 1024 {
                            if self.client.write_all(&self.out).await.is_err() {
                                return End::ClientGone;
                            }
                            self.out.clear();
                        }
                    }
                    Ok(None) => {
                        self.server_gone().await;
                        return End::ServerGone(None);
                    }
                    Err(e) => {
                        self.server_gone().await;
                        return End::ServerGone(Some(e));
                    }
                },
            }
        }
    }

    /// The server went away: the client gets an error, not a bare close.
    async fn server_gone(&mut self) {
        self.out.extend_from_slice(
            &ErrorFields::fatal("57P01", "terminating connection: the database server closed the connection (pgfork goes on)").to_error(),
        );
        let _ = self.client.write_all(&self.out).await;
        let _ = self.client.flush().await;
    }

    fn emit_synthetic(&mut self) {
        while let Some(Entry::Synthetic(_)) = self.queue.front() {
            if let Some(Entry::Synthetic(b)) = self.queue.pop_front() {
                self.out.extend_from_slice(&b);
            }
        }
    }

    fn record(
        &self,
        draft: &Draft,
        tag: Option<String>,
        rows: Option<i64>,
        error: Option<(&str, &str)>,
    ) {
        let info = &self.info;
        info.audit.record(AuditRow {
            at_ms: draft.at_ms,
            agent: info.agent.clone(),
            session: info.session.clone(),
            client: info.client.clone(),
            target: info.target.clone(),
            policy: info.policy.clone(),
            statement: draft.statement.clone(),
            params: draft.params.clone(),
            duration_us: draft.started.elapsed().as_micros() as i64,
            tag,
            rows,
            sqlstate: error.map(|e| e.0.to_string()),
            message: error.map(|e| e.1.to_string()),
            ..AuditRow::default()
        });
    }

    fn handle(&mut self, f: Frame) {
        match f.tag {
            // Asynchronous messages: notifications always reach the client.
            b'A' => {
                self.out.extend_from_slice(&f.raw);
                return;
            }
            b'S' => {
                if !matches!(self.queue.front(), Some(Entry::Injected { .. })) {
                    self.out.extend_from_slice(&f.raw);
                }
                return;
            }
            b'N' => {
                let hide = match self.queue.front() {
                    Some(Entry::Injected { .. } | Entry::Poison) => true,
                    Some(Entry::Stmt(p)) if p.quiet_begin => {
                        ErrorFields::decode(&f.body).is_ok_and(|e| e.code == "25001")
                    }
                    _ => self.discard,
                };
                if !hide {
                    self.out.extend_from_slice(&f.raw);
                }
                return;
            }
            _ => {}
        }
        loop {
            self.emit_synthetic();
            let Some(head) = self.queue.front_mut() else {
                // Responses to Parse/Bind/Describe before any Execute or Sync.
                if f.tag == b'E' {
                    self.standalone_error(&f);
                }
                self.out.extend_from_slice(&f.raw);
                return;
            };
            match head {
                Entry::Synthetic(_) => unreachable!("emitted above"),
                Entry::Injected { .. } => {
                    if f.tag == b'E' {
                        self.injected_error = Some(f.raw.clone());
                    }
                    if f.tag == b'Z'
                        && let Some(Entry::Injected { done }) = self.queue.pop_front()
                    {
                        let status = ready_status(&f.body).unwrap_or(b'I');
                        self.status.store(status, Ordering::Release);
                        if let Some(done) = done {
                            let _ = done.send(InjectOutcome {
                                status,
                                error: self.injected_error.take(),
                            });
                        }
                        self.injected_error = None;
                    }
                    return;
                }
                Entry::Poison => {
                    if f.tag == b'E' {
                        self.queue.pop_front();
                        return;
                    }
                    if f.tag == b'Z' {
                        self.queue.pop_front();
                        continue;
                    }
                    return;
                }
                Entry::Refused { .. } => {
                    if f.tag == b'E' || f.tag == b'Z' {
                        if let Some(Entry::Refused {
                            error,
                            draft,
                            code,
                            message,
                        }) = self.queue.pop_front()
                        {
                            self.record(&draft, None, None, Some((code, &message)));
                            if f.tag == b'E' {
                                self.out.extend_from_slice(&error);
                                return;
                            }
                        }
                        continue;
                    }
                    self.out.extend_from_slice(&f.raw);
                    return;
                }
                Entry::Stmt(p) => {
                    match f.tag {
                        b'D' => {
                            self.rows += 1;
                            if !self.discard {
                                self.out.extend_from_slice(&f.raw);
                            }
                            return;
                        }
                        b'C' => {
                            let c = Completion::decode(&f.body).ok();
                            let limit = p.max_rows;
                            let over = match (&c, limit) {
                                (Some(c), Some(max)) => c.is_write() && c.rows.unwrap_or(0) > max,
                                _ => false,
                            };
                            let Some(Entry::Stmt(p)) = self.queue.pop_front() else {
                                unreachable!()
                            };
                            self.rows = 0;
                            if self.discard {
                                self.record(&p.draft, c.as_ref().map(|c| c.tag.clone()), None, Some(("54000", "discarded: an earlier statement exceeded the max-rows budget")));
                                finish(p, false);
                                return;
                            }
                            if over {
                                let c = c.expect("checked");
                                let message = format!(
                                    "pgfork budget max-rows: {} affected {} rows, more than the {} allowed for agent '{}'; the statement was rolled back",
                                    c.command,
                                    c.rows.unwrap_or(0),
                                    limit.unwrap_or(0),
                                    self.info.agent
                                );
                                self.out.extend_from_slice(
                                    &ErrorFields::error("54000", message.clone()).to_error(),
                                );
                                self.record(
                                    &p.draft,
                                    Some(c.tag.clone()),
                                    c.rows.map(|r| r as i64),
                                    Some(("54000", &message)),
                                );
                                self.discard = true;
                                self.exceeded = true;
                                finish(p, true);
                                return;
                            }
                            if let Some(n) = &p.notice {
                                self.out.extend_from_slice(n);
                            }
                            self.out.extend_from_slice(&f.raw);
                            self.record(
                                &p.draft,
                                c.as_ref().map(|c| c.tag.clone()),
                                c.and_then(|c| c.rows).map(|r| r as i64),
                                None,
                            );
                            finish(p, false);
                            return;
                        }
                        b'I' | b's' | b'V' => {
                            let Some(Entry::Stmt(p)) = self.queue.pop_front() else {
                                unreachable!()
                            };
                            let rows = std::mem::take(&mut self.rows);
                            if !self.discard {
                                self.out.extend_from_slice(&f.raw);
                            }
                            let tag = match f.tag {
                                b'I' => "EMPTY",
                                b's' => "SUSPENDED",
                                _ => "FUNCTION CALL",
                            };
                            self.record(&p.draft, Some(tag.into()), Some(rows as i64), None);
                            finish(p, false);
                            return;
                        }
                        b'E' => {
                            let Some(Entry::Stmt(p)) = self.queue.pop_front() else {
                                unreachable!()
                            };
                            self.rows = 0;
                            let e = ErrorFields::decode(&f.body).unwrap_or_default();
                            if !self.discard {
                                self.out.extend_from_slice(&f.raw);
                            }
                            self.record(&p.draft, None, None, Some((&e.code, &e.message)));
                            finish(p, false);
                            return;
                        }
                        b'Z' => {
                            // It never ran: an earlier message of its Query or
                            // Sync failed.
                            let Some(Entry::Stmt(p)) = self.queue.pop_front() else {
                                unreachable!()
                            };
                            self.record(
                                &p.draft,
                                None,
                                None,
                                Some(("00000", "not run: an earlier statement failed")),
                            );
                            finish(p, false);
                            continue;
                        }
                        _ => {
                            if !self.discard {
                                self.out.extend_from_slice(&f.raw);
                            }
                            return;
                        }
                    }
                }
                Entry::Rfq { .. } => match f.tag {
                    b'Z' => {
                        let Some(Entry::Rfq { forward, done }) = self.queue.pop_front() else {
                            unreachable!()
                        };
                        let status = ready_status(&f.body).unwrap_or(b'I');
                        self.status.store(status, Ordering::Release);
                        if forward {
                            self.out.extend_from_slice(&f.raw);
                        }
                        if let Some(done) = done {
                            let _ = done.send(RfqOutcome {
                                status,
                                exceeded: self.exceeded,
                            });
                        }
                        self.discard = false;
                        self.exceeded = false;
                        return;
                    }
                    b'E' => {
                        if !self.discard {
                            self.standalone_error(&f);
                            self.out.extend_from_slice(&f.raw);
                        }
                        return;
                    }
                    _ => {
                        if !self.discard {
                            self.out.extend_from_slice(&f.raw);
                        }
                        return;
                    }
                },
            }
        }
    }

    /// An error of a Parse, Bind or Describe (no statement ran).
    fn standalone_error(&self, f: &Frame) {
        let e = ErrorFields::decode(&f.body).unwrap_or_default();
        self.record(
            &Draft::now("(extended protocol message)".into(), None),
            None,
            None,
            Some((&e.code, &e.message)),
        );
    }
}

fn finish(p: Pending, exceeded: bool) {
    if let Some(done) = p.done {
        let _ = done.send(StmtOutcome { exceeded });
    }
}
