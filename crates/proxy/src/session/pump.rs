//! Moving bytes: messages queued for the server with what each is owed
//! ([`Slot`]s), the server's answers routed to the client or to the proxy,
//! the client's messages read ahead, and the clocks that end what runs
//! too long. Writing and reading go on together, so that a long pipeline
//! cannot deadlock with a server whose output is full.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::conductor::{
    CancelReason, Conductor, Exec, Expect, Known, Own, Portal, Revert, Slot, Stop, To,
    parameter_status,
};
use super::limits::CANCEL_GRACE;
use super::record::Outcome;
use crate::parser::ClientEncoding;
use crate::wire::Frame;
use crate::wire::backend::{Completion, ErrorFields, ready_status};
use crate::wire::frontend::{Bind, Execute, Frontend, Parse, Target};

/// Client bytes read ahead while the server works, before the proxy stops
/// reading (and the client's own socket buffer holds the rest).
const READ_AHEAD: usize = 1 << 20;
/// Answers held for a budget check before they go to the client anyway.
const HOLD: usize = 16 << 20;
/// Client output buffered before it is written mid-exchange.
const CLIENT_CHUNK: usize = 64 << 10;

/// The name of the proxy's own statement and portal in extended flows.
const OWN: &str = "pgfork_own";

/// What woke the pump.
enum Wake {
    Server(Result<Option<Frame>, crate::wire::WireError>),
    Wrote(std::io::Result<usize>),
    Client(Result<Option<Frame>, crate::wire::WireError>),
    Timer(Timer),
    Kill,
}

/// The clocks.
#[derive(Debug, Clone, Copy)]
pub(super) enum Timer {
    Statement,
    Grace,
    Transaction,
    IdleInTransaction,
}

impl Conductor {
    /// Queues a frame for the server, owed `expect` (none for Flush).
    pub(super) fn send(&mut self, msg: &Frontend, expect: Option<Expect>, to: To) {
        msg.encode(&mut self.to_server);
        if let Some(e) = expect {
            self.push_slot(Slot {
                expect: e,
                to,
                exec: None,
                revert: None,
            });
        }
    }

    /// Queues the client's own frame for the server.
    pub(super) fn send_raw(&mut self, raw: &[u8], expect: Expect, to: To, exec: Option<Box<Exec>>) {
        self.to_server.extend_from_slice(raw);
        self.push_slot(Slot {
            expect,
            to,
            exec,
            revert: None,
        });
    }

    /// Queues a client Parse, recording what its name means now (undone
    /// if the server refuses or skips it).
    pub(super) fn send_parse(&mut self, raw: &[u8], name: String, known: Known) {
        let revert = (!self.server_skipping)
            .then(|| Revert::Statement(name.clone(), self.statements.insert(name, known)));
        self.to_server.extend_from_slice(raw);
        self.push_slot(Slot {
            expect: Expect::Parse,
            to: To::Client,
            exec: None,
            revert,
        });
    }

    /// Queues a client Bind, recording its portal the same way.
    pub(super) fn send_bind(&mut self, raw: &[u8], name: String, portal: Portal) {
        let revert = (!self.server_skipping)
            .then(|| Revert::Portal(name.clone(), self.portals.insert(name, portal)));
        self.to_server.extend_from_slice(raw);
        self.push_slot(Slot {
            expect: Expect::Bind,
            to: To::Client,
            exec: None,
            revert,
        });
    }

    /// Undoes what a refused or skipped message recorded.
    fn revert(&mut self, r: Revert) {
        match r {
            Revert::Statement(name, Some(k)) => {
                self.statements.insert(name, k);
            }
            Revert::Statement(name, None) => {
                self.statements.remove(&name);
            }
            Revert::Portal(name, Some(p)) => {
                self.portals.insert(name, p);
            }
            Revert::Portal(name, None) => {
                self.portals.remove(&name);
            }
        }
    }

    fn push_slot(&mut self, mut slot: Slot) {
        self.unsynced = slot.expect != Expect::Sync;
        if self.server_skipping {
            // The server discards everything up to the next Sync.
            if slot.expect != Expect::Sync {
                return;
            }
            self.server_skipping = false;
        }
        if self.slots.is_empty()
            && let Some(x) = slot.exec.as_mut()
        {
            x.started = Some(Instant::now());
        }
        self.slots.push_back(slot);
        self.info.busy.store(true, Ordering::Release);
    }

    /// Queues Sync.
    pub(super) fn send_sync(&mut self, to: To) {
        self.send(&Frontend::Sync, Some(Expect::Sync), to);
    }

    /// Queues Flush: the server sends what it has without ending anything.
    pub(super) fn send_flush(&mut self) {
        self.send(&Frontend::Flush, None, To::Own(Own::Quiet));
    }

    /// Queues Flush if anything is owed, and waits for all of it.
    pub(super) async fn settle(&mut self) -> Result<(), Stop> {
        if !self.slots.is_empty() || !self.to_server.is_empty() {
            self.send_flush();
        }
        self.drain().await
    }

    /// Queues one of the proxy's own statements. In a simple Query's
    /// exchange the unnamed statement and portal are free (a simple Query
    /// destroys them anyway); otherwise a named pair is used, so that the
    /// client's unnamed statement and portal survive.
    pub(super) fn own_statement_in(&mut self, sql: &str, own: Own, unnamed: bool) {
        let name = if unnamed { "" } else { OWN };
        if !unnamed {
            self.close_own();
        }
        self.send(
            &Frontend::Parse(Parse {
                name: name.into(),
                sql: Bytes::copy_from_slice(sql.as_bytes()),
                param_types: vec![],
            }),
            Some(Expect::Parse),
            To::Own(own),
        );
        self.send(
            &Frontend::Bind(Bind {
                portal: name.into(),
                statement: name.into(),
                param_formats: vec![],
                params: vec![],
                result_formats: vec![],
            }),
            Some(Expect::Bind),
            To::Own(own),
        );
        self.send(
            &Frontend::Execute(Execute {
                portal: name.into(),
                max_rows: 0,
            }),
            Some(Expect::Execute),
            To::Own(own),
        );
        if !unnamed {
            // Gone again at once: the client's pg_prepared_statements shows
            // only its own. (The Close before stays for when an error made
            // the server skip these.)
            self.close_own();
        }
    }

    /// Queues Close of the proxy's named portal and statement.
    fn close_own(&mut self) {
        for kind in [b'P', b'S'] {
            self.send(
                &Frontend::Close(Target {
                    kind,
                    name: OWN.into(),
                }),
                Some(Expect::Close),
                To::Own(Own::Quiet),
            );
        }
    }

    /// Queues an own statement with named objects (safe anywhere).
    pub(super) fn own_statement(&mut self, sql: &str, own: Own) {
        self.own_statement_in(sql, own, false);
    }

    /// Sends everything queued and reads answers until all are in.
    pub(super) async fn drain(&mut self) -> Result<(), Stop> {
        self.pump(true).await
    }

    /// Sends everything queued, reading answers meanwhile.
    pub(super) async fn write_through(&mut self) -> Result<(), Stop> {
        self.pump(false).await
    }

    async fn pump(&mut self, drain: bool) -> Result<(), Stop> {
        loop {
            if self.to_server.is_empty() && (!drain || self.slots.is_empty()) {
                self.info
                    .busy
                    .store(!self.slots.is_empty(), Ordering::Release);
                return Ok(());
            }
            if self.to_client.len() >= CLIENT_CHUNK
                || (!self.to_client.is_empty() && !self.server.has_buffered_frame())
            {
                self.flush_client().await?;
            }
            let deadline = self.next_deadline(None);
            let read_client = self.copy_in || (!self.client_eof && self.held_bytes < READ_AHEAD);
            let wake = {
                let Conductor {
                    server,
                    server_w,
                    to_server,
                    client,
                    kill,
                    ..
                } = self;
                let sleep = sleep_until(deadline);
                tokio::select! {
                    biased;
                    _ = kill.wait_for(|k| *k) => Wake::Kill,
                    f = server.next() => Wake::Server(f),
                    n = server_w.write(to_server), if !to_server.is_empty() => Wake::Wrote(n),
                    f = client.next(), if read_client => Wake::Client(f),
                    t = sleep => Wake::Timer(t),
                }
            };
            match wake {
                Wake::Kill => {
                    self.send_cancel(CancelReason::Killed);
                    return Err(Stop::Killed);
                }
                Wake::Server(Ok(Some(f))) => self.on_server(f)?,
                Wake::Server(Ok(None)) => return Err(Stop::ServerGone("closed".into())),
                Wake::Server(Err(e)) => return Err(Stop::ServerGone(e.to_string())),
                Wake::Wrote(Ok(n)) if n > 0 => {
                    let _ = self.to_server.split_to(n);
                }
                Wake::Wrote(_) => return Err(Stop::ServerGone("write failed".into())),
                Wake::Client(f) => self.on_client_while_busy(f)?,
                Wake::Timer(t) => self.on_timer(t)?,
            }
        }
    }

    /// A client message that arrived while the server was busy: COPY data
    /// goes on to the server, anything else waits its turn.
    fn on_client_while_busy(
        &mut self,
        f: Result<Option<Frame>, crate::wire::WireError>,
    ) -> Result<(), Stop> {
        match f {
            Ok(Some(f)) if self.copy_in => self.copy_frame(f),
            Ok(Some(f)) => {
                self.held_bytes += f.raw.len();
                self.held.push_back(f);
                Ok(())
            }
            Ok(None) | Err(_) => {
                // Gone mid-statement: have the server stop, then read its
                // answers to the end so the connection is left clean.
                self.client_eof = true;
                self.copy_in = false;
                if !self.slots.is_empty() {
                    self.send_cancel(CancelReason::ClientGone);
                }
                Ok(())
            }
        }
    }

    /// One client message during COPY FROM STDIN.
    fn copy_frame(&mut self, f: Frame) -> Result<(), Stop> {
        match f.tag {
            b'd' => {}
            b'c' | b'f' => self.copy_in = false,
            // Ignored by the server during COPY; passed on all the same.
            b'S' | b'H' => {}
            t => {
                return Err(Stop::BadInput(format!(
                    "unexpected message type 0x{t:02x} during COPY from stdin"
                )));
            }
        }
        self.to_server.extend_from_slice(&f.raw);
        if !self.copy_in {
            // The server ignored the Flush sent with the Execute (it came
            // in copy mode); without another its CommandComplete would sit
            // in its buffer.
            Frontend::Flush.encode(&mut self.to_server);
        }
        Ok(())
    }

    /// One message from the server.
    fn on_server(&mut self, f: Frame) -> Result<(), Stop> {
        tracing::trace!(
            "server 0x{:02x} ({}); head {:?}",
            f.tag,
            f.tag as char,
            self.slots.front().map(|s| (s.expect, s.to))
        );
        match f.tag {
            b'N' => {
                // Notices of the proxy's own statements are its business.
                if self.slots.front().is_none_or(|s| s.to.is_client()) {
                    self.to_client.extend_from_slice(&f.raw);
                }
                return Ok(());
            }
            b'A' => {
                self.to_client.extend_from_slice(&f.raw);
                return Ok(());
            }
            b'S' => return self.parameter_status(f),
            _ => {}
        }
        let Some(head) = self.slots.front_mut() else {
            if f.tag == b'E' {
                // A FATAL between exchanges (the server is shutting down).
                self.to_client.extend_from_slice(&f.raw);
                return Ok(());
            }
            return Err(Stop::ServerGone(format!(
                "unexpected message 0x{:02x} from the server",
                f.tag
            )));
        };
        let (expect, to) = (head.expect, head.to);
        if expect == Expect::Query {
            return self.on_query_answer(f);
        }
        let done = match (expect, f.tag) {
            (_, b'E') => {
                self.on_error(f)?;
                return Ok(());
            }
            (Expect::Parse, b'1') | (Expect::Bind, b'2') | (Expect::Close, b'3') => true,
            (Expect::DescribeStatement, b't') => false,
            (Expect::DescribeStatement | Expect::DescribePortal, b'T' | b'n') => true,
            (Expect::Execute, b'D') => {
                if let To::Own(Own::Measure) = to {
                    self.step.measured.push(measured_value(&f.body));
                }
                false
            }
            (Expect::Execute, b'G') if to.is_client() => {
                self.copy_in = true;
                self.start_copy_in()?;
                false
            }
            (Expect::Execute, b'H' | b'd' | b'c') if to.is_client() => false,
            (Expect::Execute, b'C' | b'I' | b's') => {
                if f.tag == b'C'
                    && let Some(x) = head.exec.take()
                {
                    let c = Completion::decode(&f.body)
                        .map_err(|e| Stop::ServerGone(format!("bad CommandComplete: {e}")))?;
                    self.completed(*x, c)?;
                } else if let Some(x) = head.exec.take() {
                    self.records.push((x.draft, Outcome::default()));
                }
                true
            }
            (Expect::Sync, b'Z') => {
                let status = ready_status(&f.body)
                    .map_err(|e| Stop::ServerGone(format!("bad ReadyForQuery: {e}")))?;
                self.server_status = status;
                self.info.last_status.store(status, Ordering::Release);
                self.slots.pop_front();
                self.next_head();
                return Ok(());
            }
            _ => {
                return Err(Stop::ServerGone(format!(
                    "the server answered {expect:?} with message 0x{:02x}",
                    f.tag
                )));
            }
        };
        self.route(to, &f);
        if done {
            self.slots.pop_front();
            self.next_head();
        }
        Ok(())
    }

    /// An answer to a simple Query passed on whole: relayed; its one
    /// statement's completion checked as any other; a second completion
    /// means the server read more statements than the parser did, and
    /// ends the session.
    fn on_query_answer(&mut self, f: Frame) -> Result<(), Stop> {
        let exec = match f.tag {
            b'C' | b'E' | b'Z' => self.slots.front_mut().and_then(|h| h.exec.take()),
            _ => None,
        };
        match f.tag {
            b'C' => match exec {
                Some(x) => {
                    let c = Completion::decode(&f.body)
                        .map_err(|e| Stop::ServerGone(format!("bad CommandComplete: {e}")))?;
                    self.completed(*x, c)?;
                }
                None => {
                    return Err(Stop::fatal(
                        "42501",
                        "pgfork: the server ran more statements than the proxy read; the session was ended",
                    ));
                }
            },
            b'E' => {
                self.step.failed = true;
                let mut fields = ErrorFields::decode(&f.body).unwrap_or_default();
                let raw = self.rewrite_cancel(&mut fields).unwrap_or(f.raw.clone());
                if let Some(x) = exec {
                    self.cancel = None;
                    self.records.push((
                        x.draft,
                        Outcome {
                            error: Some((fields.code.clone(), fields.message.clone())),
                            ..Outcome::default()
                        },
                    ));
                }
                self.to_client.extend_from_slice(&raw);
                return Ok(());
            }
            b'Z' => {
                let status = ready_status(&f.body)
                    .map_err(|e| Stop::ServerGone(format!("bad ReadyForQuery: {e}")))?;
                if let Some(x) = exec {
                    // An empty answer (EmptyQueryResponse).
                    self.records.push((x.draft, Outcome::default()));
                }
                self.server_status = status;
                self.info.last_status.store(status, Ordering::Release);
                self.slots.pop_front();
                self.next_head();
            }
            b'G' | b'W' => {
                return Err(Stop::ServerGone(
                    "COPY FROM STDIN in a Query the proxy passed on whole".into(),
                ));
            }
            _ => {}
        }
        self.to_client.extend_from_slice(&f.raw);
        Ok(())
    }

    /// Where an answer to a client message goes.
    fn route(&mut self, to: To, f: &Frame) {
        let relay = match to {
            To::Own(_) => false,
            // A simple Query's client never asked for these.
            _ if to.simple() => !matches!(f.tag, b'1' | b'2' | b'3' | b'n' | b't'),
            _ => true,
        };
        if !relay {
            return;
        }
        if matches!(to, To::Held { .. }) && !self.held_overflow {
            self.held_out.extend_from_slice(&f.raw);
            if self.held_out.len() > HOLD {
                self.held_overflow = true;
                let held = self.held_out.split();
                self.to_client.extend_from_slice(&held);
            }
        } else {
            self.to_client.extend_from_slice(&f.raw);
        }
    }

    /// The head slot changed: the server starts on the next message.
    fn next_head(&mut self) {
        if let Some(x) = self.slots.front_mut().and_then(|s| s.exec.as_mut())
            && x.started.is_none()
        {
            x.started = Some(Instant::now());
        }
        if self.slots.is_empty() {
            self.info.busy.store(false, Ordering::Release);
        }
    }

    /// An ErrorResponse: for the head message, which the server answered
    /// with it and skipped to the next Sync after.
    fn on_error(&mut self, f: Frame) -> Result<(), Stop> {
        let head = self.slots.pop_front().expect("a head slot");
        if head.expect == Expect::Sync {
            // An error at the end of the implicit transaction (a deferred
            // constraint): the Sync's ReadyForQuery still follows.
            self.slots.push_front(head);
            self.step.failed = true;
            self.to_client.extend_from_slice(&f.raw);
            return Ok(());
        }
        self.step.failed = true;
        let mut fields = ErrorFields::decode(&f.body).unwrap_or_default();
        let raw = self.rewrite_cancel(&mut fields).unwrap_or(f.raw.clone());
        if let Some(x) = head.exec {
            self.cancel = None;
            self.records.push((
                x.draft,
                Outcome {
                    error: Some((fields.code.clone(), fields.message.clone())),
                    ..Outcome::default()
                },
            ));
        }
        if head.to != To::Own(Own::Quiet) {
            self.step.error = Some((fields.code.clone(), fields.message.clone()));
        }
        match head.to {
            To::Own(Own::Quiet) => {}
            To::Held { .. } if !self.held_overflow => self.step.held_error = Some(raw),
            _ => self.to_client.extend_from_slice(&raw),
        }
        self.copy_in = false;
        // Everything up to the next Sync is skipped by the server; what
        // those messages recorded is undone, newest first.
        let mut reverts: Vec<Revert> = head.revert.into_iter().collect();
        while let Some(s) = self.slots.front() {
            if s.expect == Expect::Sync {
                break;
            }
            let s = self.slots.pop_front().expect("a slot");
            if let Some(x) = s.exec {
                self.records.push((x.draft, skipped()));
            }
            reverts.extend(s.revert);
        }
        for r in reverts.into_iter().rev() {
            self.revert(r);
        }
        if self.slots.is_empty() {
            self.server_skipping = true;
        }
        self.next_head();
        Ok(())
    }

    /// A statement the proxy cancelled gets an error that says why.
    fn rewrite_cancel(&self, fields: &mut ErrorFields) -> Option<Bytes> {
        let (_, reason) = self.cancel?;
        if fields.code != "57014" {
            return None;
        }
        fields.message = match reason {
            CancelReason::Statement => format!(
                "canceling statement due to statement timeout (pgfork ends statements of agent \"{}\" after {} ms)",
                self.info.agent,
                self.limits.statement.map(|d| d.as_millis()).unwrap_or(0)
            ),
            CancelReason::Transaction => format!(
                "canceling statement: the transaction ran past the {} s pgfork allows a {} transaction",
                self.limits.transaction.map(|d| d.as_secs()).unwrap_or(0),
                self.rules.policy.as_str()
            ),
            CancelReason::ClientGone | CancelReason::Killed => return None,
        };
        Some(fields.to_error())
    }

    /// A client statement completed: check the server's tag against the
    /// policy, and record it.
    fn completed(&mut self, x: Exec, c: Completion) -> Result<(), Stop> {
        self.cancel = None;
        if let Err(why) = super::guard::check_completion(self.rules.policy, x.stmt.as_deref(), &c) {
            self.records.push((
                x.draft,
                Outcome {
                    tag: Some(c.tag.clone()),
                    rows: c.rows,
                    error: Some(("42501".into(), why.clone())),
                    status: None,
                },
            ));
            return Err(Stop::fatal(
                "42501",
                format!(
                    "pgfork policy {}: {why}; the session was ended",
                    self.rules.policy.as_str()
                ),
            ));
        }
        self.records.push((
            x.draft,
            Outcome {
                tag: Some(c.tag),
                rows: c.rows,
                ..Outcome::default()
            },
        ));
        Ok(())
    }

    /// COPY FROM STDIN started: Syncs already sent are ignored by the
    /// server in this mode, and the client's messages read ahead go first.
    fn start_copy_in(&mut self) -> Result<(), Stop> {
        let head = self.slots.pop_front();
        self.slots.retain(|s| s.expect != Expect::Sync);
        if let Some(h) = head {
            self.slots.push_front(h);
        }
        while self.copy_in
            && let Some(f) = self.held.pop_front()
        {
            self.held_bytes -= f.raw.len();
            self.copy_frame(f)?;
        }
        Ok(())
    }

    /// ParameterStatus: passed on, after checking the settings the
    /// parser's reading depends on.
    fn parameter_status(&mut self, f: Frame) -> Result<(), Stop> {
        if let Some((name, value)) = parameter_status(&f.body) {
            match name.as_str() {
                "client_encoding" => match ClientEncoding::from_name(&value) {
                    Ok(e) => self.encoding = e,
                    Err(m) => return Err(Stop::fatal("0A000", m)),
                },
                "standard_conforming_strings" if value != "on" => {
                    return Err(Stop::fatal(
                        "0A000",
                        "pgfork: standard_conforming_strings must stay on (the proxy reads strings as the server does only then)",
                    ));
                }
                _ => {}
            }
        }
        self.to_client.extend_from_slice(&f.raw);
        Ok(())
    }

    /// Writes what is buffered for the client.
    pub(super) async fn flush_client(&mut self) -> Result<(), Stop> {
        if self.to_client.is_empty() || self.client_eof {
            self.to_client.clear();
            return Ok(());
        }
        let buf = self.to_client.split();
        if self.client_w.write_all(&buf).await.is_err() {
            self.client_eof = true;
            return Err(Stop::ClientGone);
        }
        Ok(())
    }

    /// The next client message: read ahead earlier, or from the socket;
    /// meanwhile the server may speak (notifications) and the clocks run.
    pub(super) async fn next_client_frame(&mut self) -> Result<Frame, Stop> {
        if let Some(f) = self.held.pop_front() {
            self.held_bytes -= f.raw.len();
            return Ok(f);
        }
        if self.client_eof {
            return Err(Stop::ClientGone);
        }
        self.flush_client().await?;
        let idle_since = Instant::now();
        loop {
            let deadline = self.next_deadline(Some(idle_since));
            let wake = {
                let Conductor {
                    server,
                    client,
                    kill,
                    ..
                } = self;
                let sleep = sleep_until(deadline);
                tokio::select! {
                    biased;
                    _ = kill.wait_for(|k| *k) => Wake::Kill,
                    f = client.next() => Wake::Client(f),
                    f = server.next() => Wake::Server(f),
                    t = sleep => Wake::Timer(t),
                }
            };
            match wake {
                Wake::Client(Ok(Some(f))) => return Ok(f),
                Wake::Client(Ok(None)) => {
                    self.client_eof = true;
                    return Err(Stop::ClientGone);
                }
                Wake::Client(Err(e)) => {
                    return Err(match e {
                        crate::wire::WireError::Io(_) => {
                            self.client_eof = true;
                            Stop::ClientGone
                        }
                        e => Stop::BadInput(format!("invalid frontend message: {e}")),
                    });
                }
                Wake::Server(Ok(Some(f))) => {
                    self.on_server(f)?;
                    self.flush_client().await?;
                }
                Wake::Server(Ok(None)) => return Err(Stop::ServerGone("closed".into())),
                Wake::Server(Err(e)) => return Err(Stop::ServerGone(e.to_string())),
                Wake::Kill => return Err(Stop::Killed),
                Wake::Timer(t) => self.on_timer(t)?,
                Wake::Wrote(_) => unreachable!("no write while idle"),
            }
        }
    }

    /// The earliest clock that runs now; `idle_since`: waiting for the
    /// client since then.
    fn next_deadline(&self, idle_since: Option<Instant>) -> Option<(Instant, Timer)> {
        let mut best: Option<(Instant, Timer)> = None;
        let mut consider = |at: Instant, t: Timer| {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, t));
            }
        };
        if let Some((at, _)) = self.cancel {
            consider(at + CANCEL_GRACE, Timer::Grace);
        } else if let (Some(limit), Some(started)) = (
            self.limits.statement,
            self.slots
                .front()
                .and_then(|s| s.exec.as_ref())
                .and_then(|x| x.started),
        ) {
            consider(started + limit, Timer::Statement);
        }
        if let Some(at) = self.txn.deadline()
            && self.expired.is_none()
        {
            consider(at, Timer::Transaction);
        }
        if let (Some(since), Some(limit)) = (idle_since, self.limits.idle_in_transaction)
            && self.txn.client_open()
        {
            consider(since + limit, Timer::IdleInTransaction);
        }
        best
    }

    fn on_timer(&mut self, t: Timer) -> Result<(), Stop> {
        match t {
            Timer::Statement => {
                self.send_cancel(CancelReason::Statement);
                Ok(())
            }
            Timer::Grace => Err(Stop::fatal(
                "57014",
                "pgfork: the statement did not stop when cancelled; the session was ended",
            )),
            Timer::Transaction => {
                let stop = Stop::fatal(
                    "25P03",
                    format!(
                        "terminating connection: the {} transaction ran past the {} s pgfork allows and was rolled back",
                        self.rules.policy.as_str(),
                        self.limits.transaction.map(|d| d.as_secs()).unwrap_or(0)
                    ),
                );
                if self.slots.is_empty() {
                    return Err(stop);
                }
                self.send_cancel(CancelReason::Transaction);
                self.expired = Some(stop);
                Ok(())
            }
            Timer::IdleInTransaction => Err(Stop::fatal(
                "25P03",
                format!(
                    "terminating connection due to idle-in-transaction timeout ({} s; pgfork rolled the transaction back)",
                    self.limits
                        .idle_in_transaction
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                ),
            )),
        }
    }

    /// Asks the server to cancel what it runs (once per statement).
    pub(super) fn send_cancel(&mut self, reason: CancelReason) {
        if self.cancel.is_some() {
            return;
        }
        self.cancel = Some((Instant::now(), reason));
        let (addr, key) = (self.server_addr.clone(), self.key.clone());
        tokio::spawn(async move {
            let _ = crate::upstream::cancel(&addr, key.0, &key.1).await;
        });
    }
}

/// Sleeps until the deadline, then names its timer (forever without one).
async fn sleep_until(deadline: Option<(Instant, Timer)>) -> Timer {
    match deadline {
        Some((at, t)) => {
            tokio::time::sleep_until(at.into()).await;
            t
        }
        None => std::future::pending().await,
    }
}

/// The number a measuring statement returned (one int8 column, text).
fn measured_value(body: &[u8]) -> i64 {
    // DataRow: column count (2), length (4), value.
    if body.len() < 6 {
        return 0;
    }
    let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
    if len < 0 {
        return 0;
    }
    let end = (6 + len as usize).min(body.len());
    std::str::from_utf8(&body[6..end])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The record of a statement the server skipped after an earlier error.
pub(super) fn skipped() -> Outcome {
    Outcome {
        error: Some((
            "25P02".into(),
            "not run: an earlier message of the pipeline failed".into(),
        )),
        ..Outcome::default()
    }
}
