//! The session's one task: it reads a client message, sends the server
//! what the message means under the policy, reads the server's answers
//! ([`super::pump`]) and relays them. Nothing is streamed past a decision:
//! where the proxy must know how something ended (a budget, a transaction
//! the client ends, a refusal in the middle of a pipeline), it waits for
//! the server first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::limits::Limits;
use super::record::{Draft, Outcome};
use super::txn::Txn;
use super::{Ended, SessionInfo};
use crate::classify::Statement;
use crate::parser::{ClientEncoding, check_server_version};
use crate::policy::Rules;
use crate::upstream::{Address, Upstream};
use crate::wire::backend::ErrorFields;
use crate::wire::frontend::Frontend;
use crate::wire::{Frame, FrameReader, Reader};

pub(super) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub(super) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Classifications remembered per session, by exact text.
const CACHE: usize = 512;

/// Why a session stops.
#[derive(Debug)]
pub(super) enum Stop {
    /// The client went away.
    ClientGone,
    /// The client broke the protocol.
    BadInput(String),
    /// The server went away or broke the protocol.
    ServerGone(String),
    /// Revoked or shut down.
    Killed,
    /// The proxy ends the session with this error (a time limit, a server
    /// that did what the policy forbids, a setting the parser cannot follow).
    Fatal {
        /// SQLSTATE.
        code: &'static str,
        /// Message.
        message: String,
    },
}

impl Stop {
    pub(super) fn fatal(code: &'static str, message: impl Into<String>) -> Stop {
        Stop::Fatal {
            code,
            message: message.into(),
        }
    }
}

/// What the server is expected to answer to one message sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    Parse,
    Bind,
    DescribeStatement,
    DescribePortal,
    Execute,
    Close,
    Sync,
    /// A whole simple Query, passed on as it is (branch agents without
    /// budgets): everything up to its ReadyForQuery.
    Query,
}

/// The proxy's own statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Own {
    /// Its error goes to the client (a failed transaction reports here first).
    Step,
    /// An error is the point (the poison that aborts a transaction).
    Quiet,
    /// Returns the rows written so far in the transaction.
    Measure,
}

/// Where the answers to one message go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum To {
    /// To the client as they are (extended protocol).
    Client,
    /// To the client as a simple Query's answers would be.
    Simple,
    /// Held back until a budget is checked (`simple`: translated).
    Held { simple: bool },
    /// The proxy's own.
    Own(Own),
}

impl To {
    pub(super) fn is_client(self) -> bool {
        !matches!(self, To::Own(_))
    }
    pub(super) fn simple(self) -> bool {
        matches!(self, To::Simple | To::Held { simple: true })
    }
}

/// A client statement being executed.
#[derive(Debug)]
pub(super) struct Exec {
    /// What the parser read (`None`: unknown portal or empty statement).
    pub stmt: Option<Arc<Statement>>,
    /// Its audit record.
    pub draft: Draft,
    /// When the server started on it (it reached the head of the queue).
    pub started: Option<Instant>,
}

/// One message sent and owed an answer.
#[derive(Debug)]
pub(super) struct Slot {
    pub expect: Expect,
    pub to: To,
    pub exec: Option<Box<Exec>>,
    /// What a name meant before this message, restored if the server
    /// refuses or skips it: so what the proxy believes a name means is
    /// what the server has.
    pub revert: Option<Revert>,
}

/// The earlier meaning of a prepared statement or portal name.
#[derive(Debug)]
pub(super) enum Revert {
    Statement(String, Option<Known>),
    Portal(String, Option<Portal>),
}

/// A statement the client prepared (or the unnamed one).
#[derive(Debug, Clone)]
pub(super) struct Known {
    /// What the parser read; `None` for an empty statement.
    pub stmt: Option<Arc<Statement>>,
    /// Its text, for the audit log.
    pub text: Arc<str>,
}

/// A portal the client bound.
#[derive(Debug, Clone)]
pub(super) struct Portal {
    pub known: Known,
    /// Parameters as JSON, when audited.
    pub params: Option<String>,
}

/// What the answers of one step said, for the flow that waits on them.
#[derive(Debug, Default)]
pub(super) struct Step {
    /// An error came back (relayed, or the expected one of a poison).
    pub failed: bool,
    /// What the proxy's measuring statements returned, in order.
    pub measured: Vec<i64>,
    /// The error of a held statement (its answers were dropped).
    pub held_error: Option<Bytes>,
    /// The last error relayed: SQLSTATE and message.
    pub error: Option<(String, String)>,
}

/// Why the proxy cancelled the running statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CancelReason {
    Statement,
    Transaction,
    ClientGone,
    Killed,
}

/// One session's state.
pub(super) struct Conductor {
    // The client.
    pub(super) client: FrameReader<BoxRead>,
    pub(super) client_w: BoxWrite,
    pub(super) to_client: BytesMut,
    /// Client messages read while the server was busy, in order.
    pub(super) held: VecDeque<Frame>,
    pub(super) held_bytes: usize,
    pub(super) client_eof: bool,
    /// The server is in COPY FROM STDIN and the client still sending.
    pub(super) copy_in: bool,
    /// Answers of a statement whose budget is being checked.
    pub(super) held_out: BytesMut,
    /// Held answers outgrew the hold and went to the client.
    pub(super) held_overflow: bool,

    // The server.
    pub(super) server: FrameReader<BoxRead>,
    pub(super) server_w: BoxWrite,
    pub(super) to_server: BytesMut,
    pub(super) slots: VecDeque<Slot>,
    /// The server discards messages until the next Sync (an error).
    pub(super) server_skipping: bool,
    pub(super) server_status: u8,
    pub(super) server_addr: Address,
    pub(super) key: (i32, Vec<u8>),

    // Who and what.
    pub(super) info: Arc<SessionInfo>,
    pub(super) rules: Rules,
    pub(super) limits: Limits,
    pub(super) encoding: ClientEncoding,
    pub(super) kill: watch::Receiver<bool>,

    // Protocol state.
    pub(super) statements: HashMap<String, Known>,
    pub(super) portals: HashMap<String, Portal>,
    /// Extended protocol: the proxy reported an error; skip to Sync.
    pub(super) client_skipping: bool,
    pub(super) step: Step,
    /// Records of the exchange, written with the status the client is told.
    pub(super) records: Vec<(Draft, Outcome)>,
    pub(super) txn: Txn,
    pub(super) cancel: Option<(Instant, CancelReason)>,
    /// A time limit ended the transaction: the session ends after the exchange.
    pub(super) expired: Option<Stop>,
    /// Something was sent to the server since the last Sync.
    pub(super) unsynced: bool,
    cache: HashMap<Bytes, Parsed>,
    /// Classifications by shape (numbers written as 0): see `shape`.
    shapes: HashMap<Vec<u8>, Arc<Statement>>,
}

/// A query string's statements, or the parser's error.
pub(super) type Parsed = Arc<Result<Vec<Arc<Statement>>, String>>;

impl Conductor {
    /// A session over the logged-in `upstream`; refuses a server whose
    /// major version or settings the parser cannot follow.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new<CR, CW>(
        client: FrameReader<CR>,
        client_w: CW,
        upstream: Upstream,
        server_addr: Address,
        info: Arc<SessionInfo>,
        rules: Rules,
        limits: Limits,
        kill: watch::Receiver<bool>,
        max_message: usize,
    ) -> Result<Conductor, String>
    where
        CR: AsyncRead + Unpin + Send + 'static,
        CW: AsyncWrite + Unpin + Send + 'static,
    {
        let mut encoding = ClientEncoding::Utf8;
        for p in &upstream.parameters {
            let Some((name, value)) = parameter_status(&p[5..]) else {
                continue;
            };
            match name.as_str() {
                "server_version" => check_server_version(&value)?,
                "client_encoding" => encoding = ClientEncoding::from_name(&value)?,
                "standard_conforming_strings" if value != "on" => {
                    return Err("the server has standard_conforming_strings off".into());
                }
                _ => {}
            }
        }
        let (client_r, client_buf) = client.into_parts();
        let client =
            FrameReader::with_buffer(Box::new(client_r) as BoxRead, client_buf, max_message);
        let key = upstream.key.clone();
        let (stream, buffered) = upstream.reader.into_parts();
        let (r, w) = stream.split();
        let server = FrameReader::with_buffer(r, buffered, max_message);
        let txn = Txn::new(rules.policy);
        Ok(Conductor {
            client,
            client_w: Box::new(client_w),
            to_client: BytesMut::with_capacity(16 * 1024),
            held: VecDeque::new(),
            held_bytes: 0,
            client_eof: false,
            copy_in: false,
            held_out: BytesMut::new(),
            held_overflow: false,
            server,
            server_w: w,
            to_server: BytesMut::with_capacity(16 * 1024),
            slots: VecDeque::new(),
            server_skipping: false,
            server_status: b'I',
            server_addr,
            key,
            info,
            rules,
            limits,
            encoding,
            kill,
            statements: HashMap::new(),
            portals: HashMap::new(),
            client_skipping: false,
            step: Step::default(),
            records: Vec::new(),
            txn,
            cancel: None,
            expired: None,
            unsynced: false,
            cache: HashMap::new(),
            shapes: HashMap::new(),
        })
    }

    /// Runs until the session ends, then leaves the server clean.
    pub(super) async fn run(mut self) -> Ended {
        let stop = loop {
            if let Err(stop) = self.serve_one().await {
                break stop;
            }
        };
        self.end(stop).await
    }

    /// Waits for one client message and handles it.
    async fn serve_one(&mut self) -> Result<(), Stop> {
        let frame = self.next_client_frame().await?;
        tracing::trace!("client 0x{:02x} ({})", frame.tag, frame.tag as char);
        let msg = Frontend::decode(frame.tag, frame.body.clone())
            .map_err(|e| Stop::BadInput(format!("invalid frontend message: {e}")))?;
        match msg {
            Frontend::Query(q) => self.simple_query(q.sql).await?,
            Frontend::Parse(p) => self.parse(p, frame).await?,
            Frontend::Bind(b) => self.bind(b, frame).await?,
            Frontend::Describe(t) => self.describe(t, frame).await?,
            Frontend::Execute(e) => self.execute(e, frame).await?,
            Frontend::Close(t) => self.close(t, frame).await?,
            Frontend::Sync => self.sync().await?,
            Frontend::Flush => self.flush().await?,
            // Left over from a COPY that failed: the server drops them too.
            Frontend::CopyData(_) | Frontend::CopyDone | Frontend::CopyFail(_) => {
                self.copy_in = false;
            }
            Frontend::FunctionCall(_) => {
                self.refuse_function_call().await?;
            }
            Frontend::Terminate => return Err(Stop::ClientGone),
            Frontend::Password(_) => {
                return Err(Stop::BadInput("a password message after login".into()));
            }
        }
        if let Some(stop) = self.expired.take() {
            return Err(stop);
        }
        self.flush_client().await
    }

    /// The fastpath function call protocol reaches functions without any
    /// statement to judge: refused, like PostgreSQL refuses an unknown one.
    async fn refuse_function_call(&mut self) -> Result<(), Stop> {
        if self.unsynced {
            self.settle().await?;
        }
        if self.client_skipping || self.server_skipping {
            // Skipped up to Sync, as PostgreSQL skips it after an error.
            return Ok(());
        }
        let e = ErrorFields::error(
            "0A000",
            "pgfork: the fastpath function call protocol is not available through the proxy",
        )
        .hint("call the function in a SELECT");
        self.to_client.extend_from_slice(&e.to_error());
        self.fail_client_transaction().await?;
        let status = self.client_status();
        self.to_client
            .extend_from_slice(&crate::wire::backend::ready_for_query(status));
        Ok(())
    }

    /// The parse of `sql`, from the cache when the same text came before.
    pub(super) fn classified(&mut self, sql: &Bytes) -> Parsed {
        if let Some(c) = self.cache.get(sql) {
            return c.clone();
        }
        let shape = crate::shape::of(sql);
        if let Some(s) = shape.as_ref().and_then(|k| self.shapes.get(k)) {
            return Arc::new(Ok(vec![Arc::new(crate::shape::fit(s, sql))]));
        }
        let c = Arc::new(
            crate::classify::classify_bytes(sql, self.encoding)
                .map(|v| v.into_iter().map(Arc::new).collect::<Vec<_>>()),
        );
        if let (Some(k), Ok(v)) = (shape, &*c)
            && let [s] = v.as_slice()
            && crate::shape::reusable(s)
        {
            if self.shapes.len() >= CACHE {
                self.shapes.clear();
            }
            self.shapes.insert(k, s.clone());
        }
        if sql.len() <= 4096 {
            if self.cache.len() >= CACHE {
                self.cache.clear();
            }
            self.cache.insert(sql.clone(), c.clone());
        }
        c
    }

    /// Text for the audit log and messages (the client's bytes, decoded
    /// as its encoding allows).
    pub(super) fn text(&self, bytes: &[u8]) -> String {
        match self.encoding {
            ClientEncoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            ClientEncoding::AsciiSafe => bytes.iter().map(|&b| b as char).collect(),
        }
    }

    /// Ends the session: tells the client why, stops what runs on the
    /// server, ends the proxy's transaction, and says goodbye to the server.
    async fn end(mut self, stop: Stop) -> Ended {
        let ended = match &stop {
            Stop::ClientGone => Ended::Client,
            Stop::BadInput(m) => Ended::BadInput(m.clone()),
            Stop::ServerGone(m) => Ended::Server(m.clone()),
            Stop::Killed => Ended::Killed,
            Stop::Fatal { message, .. } => Ended::Policy(message.clone()),
        };
        let fatal = match &stop {
            Stop::BadInput(m) => Some(ErrorFields::fatal("08P01", m.clone())),
            Stop::Killed => Some(ErrorFields::fatal(
                "57P01",
                "terminating connection: pgfork ended this agent's sessions (revoked, or the proxy is stopping)",
            )),
            Stop::Fatal { code, message } => Some(ErrorFields::fatal(code, message.clone())),
            Stop::ServerGone(m) => Some(ErrorFields::fatal(
                "08006",
                format!("pgfork: the server connection was lost: {m}"),
            )),
            Stop::ClientGone => None,
        };
        self.write_records(b'I');
        if let Some(f) = fatal
            && !self.client_eof
        {
            self.to_client.extend_from_slice(&f.to_error());
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), self.flush_client()).await;
        }
        if !matches!(stop, Stop::ServerGone(_)) {
            let grace = super::limits::CANCEL_GRACE;
            let _ = tokio::time::timeout(grace, self.leave_server()).await;
        }
        ended
    }

    /// Stops what the server runs for this session and ends the proxy's
    /// transaction, so the server connection closes idle.
    async fn leave_server(&mut self) {
        if !self.slots.is_empty() {
            self.send_cancel(CancelReason::ClientGone);
            self.client_eof = true;
            if self.drain().await.is_err() {
                return;
            }
        }
        if self.server_status != b'I' {
            self.own_statement("ROLLBACK", Own::Quiet);
            self.send_sync(To::Own(Own::Quiet));
            let _ = self.drain().await;
        }
        let mut out = BytesMut::new();
        Frontend::Terminate.encode(&mut out);
        let _ = self.server_w.write_all(&out).await;
        let _ = self.server_w.shutdown().await;
    }

    /// Writes the exchange's audit records with the status the client is told.
    pub(super) fn write_records(&mut self, status: u8) {
        for (draft, mut outcome) in self.records.drain(..) {
            outcome.status.get_or_insert(status);
            super::record::write(&self.info, draft, outcome);
        }
    }

    /// Records a statement the proxy answered itself (refused or simulated).
    pub(super) fn record_now(
        &mut self,
        statement: String,
        params: Option<String>,
        outcome: Outcome,
    ) {
        self.records.push((Draft::now(statement, params), outcome));
    }
}

/// The name and value of a ParameterStatus body.
pub(super) fn parameter_status(body: &[u8]) -> Option<(String, String)> {
    let mut r = Reader::new(body);
    let name = r.cstr().ok()?;
    let value = r.cstr().ok()?;
    Some((name, value))
}
