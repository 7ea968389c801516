//! What the client-facing half of a session tells the server-facing half
//! about the responses to come, in order: which statement a completion
//! belongs to, which responses to drop (statements the proxy injected),
//! which error to replace (a refused statement), and what to write to the
//! client on its own.

use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

/// An audit record in the making.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Arrival (Unix milliseconds).
    pub at_ms: i64,
    /// Arrival, for the duration.
    pub started: Instant,
    /// Statement text.
    pub statement: String,
    /// Parameters as JSON, when audited.
    pub params: Option<String>,
}

impl Draft {
    /// A draft of `statement` arriving now.
    pub fn now(statement: String, params: Option<String>) -> Draft {
        Draft {
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            started: Instant::now(),
            statement,
            params,
        }
    }
}

/// How one statement ended, for a half that waits on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StmtOutcome {
    /// Its rows exceeded the max-rows budget.
    pub exceeded: bool,
}

/// How a Query or Sync ended.
#[derive(Debug, Clone, Copy)]
pub struct RfqOutcome {
    /// Transaction status the server reported.
    pub status: u8,
    /// A statement in it exceeded the max-rows budget.
    pub exceeded: bool,
}

/// How an injected statement ended.
#[derive(Debug, Clone, Default)]
pub struct InjectOutcome {
    /// Transaction status after it.
    pub status: u8,
    /// Its error, as a frame to pass on if the client must know.
    pub error: Option<Bytes>,
}

/// One statement whose completion is awaited.
#[derive(Debug)]
pub struct Pending {
    /// Its record.
    pub draft: Draft,
    /// The max-rows budget to check, if any.
    pub max_rows: Option<u64>,
    /// A notice to send before its completion (dry-run COMMIT).
    pub notice: Option<Bytes>,
    /// Whether to hide "there is already a transaction in progress".
    pub quiet_begin: bool,
    /// Told when it completes.
    pub done: Option<oneshot::Sender<StmtOutcome>>,
}

/// An expectation about the server's next responses.
#[derive(Debug)]
pub enum Entry {
    /// A statement's execution: rows, then a completion or error.
    Stmt(Pending),
    /// A refused statement: the proxy sent a statement that fails, and its
    /// error is replaced by `error`.
    Refused {
        /// The error the client gets.
        error: Bytes,
        /// Its record.
        draft: Draft,
        /// SQLSTATE, for the record.
        code: &'static str,
        /// Message, for the record.
        message: String,
    },
    /// A poison statement without Sync: drop its one error.
    Poison,
    /// A ReadyForQuery ending a Query or Sync.
    Rfq {
        /// Pass it on (else the client half writes its own).
        forward: bool,
        /// Told when it arrives.
        done: Option<oneshot::Sender<RfqOutcome>>,
    },
    /// Statements the proxy sent itself: everything through their
    /// ReadyForQuery is dropped.
    Injected {
        /// Told when it ends.
        done: Option<oneshot::Sender<InjectOutcome>>,
    },
    /// Bytes for the client, written when they reach the head.
    Synthetic(Bytes),
}

/// The entries between the halves. Pushing does not wake the server half
/// (the server's response will), except for bytes it must write on its
/// own and for the end: on a busy connection that saves a task wake-up
/// per statement.
#[derive(Default)]
pub struct Queue {
    inner: std::sync::Mutex<QueueState>,
    notify: tokio::sync::Notify,
}

#[derive(Default)]
struct QueueState {
    entries: std::collections::VecDeque<Entry>,
    closed: bool,
    receiver_gone: bool,
}

impl Queue {
    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an entry; false if the server half is gone.
    pub fn push(&self, e: Entry) -> bool {
        let wake = matches!(e, Entry::Synthetic(_));
        {
            let mut s = self.state();
            if s.receiver_gone {
                return false;
            }
            s.entries.push_back(e);
        }
        if wake {
            self.notify.notify_one();
        }
        true
    }

    /// The client half is done: no more entries.
    pub fn close(&self) {
        self.state().closed = true;
        self.notify.notify_one();
    }

    /// The server half is done: pushes fail from now on.
    pub fn receiver_gone(&self) {
        self.state().receiver_gone = true;
    }

    /// Moves every entry into `into`; true once the client half is done.
    pub fn drain(&self, into: &mut std::collections::VecDeque<Entry>) -> bool {
        let mut s = self.state();
        into.extend(s.entries.drain(..));
        s.closed
    }

    /// Waits for a wake-up (bytes to write, or the end).
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}
