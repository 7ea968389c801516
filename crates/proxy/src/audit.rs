//! The audit writer: sessions hand records to one thread, which appends
//! them to meta.db in batches (one transaction per batch), chained.
//!
//! A session never waits for SQLite: the channel is unbounded, and the
//! writer takes everything waiting at once, so a burst costs one commit.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use pgfork_engine::audit::AuditLog;
use pgfork_pool::Home;
use pgfork_pool::meta::AuditRow;

/// Largest statement text kept in the log; longer ones are cut (and say so).
pub const MAX_STATEMENT: usize = 16 * 1024;

/// Where sessions send records.
#[derive(Clone)]
pub struct AuditSink {
    tx: Sender<Msg>,
}

enum Msg {
    Row(Box<AuditRow>),
    /// Answered once everything sent before it is written.
    Flush(Sender<()>),
}

impl AuditSink {
    /// Queues a record.
    pub fn record(&self, mut row: AuditRow) {
        if row.statement.len() > MAX_STATEMENT {
            let mut cut = MAX_STATEMENT;
            while !row.statement.is_char_boundary(cut) {
                cut -= 1;
            }
            row.statement.truncate(cut);
            row.statement.push_str(" /* cut by pgfork */");
        }
        // The writer only stops when every sink is gone.
        let _ = self.tx.send(Msg::Row(Box::new(row)));
    }

    /// Waits (up to `timeout`) until every record sent so far is written.
    pub fn flush(&self, timeout: Duration) {
        let (tx, rx) = channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(timeout);
        }
    }
}

/// Starts the writer thread for `home`.
pub fn start(home: Home) -> (AuditSink, JoinHandle<()>) {
    let (tx, rx) = channel();
    let handle = std::thread::Builder::new()
        .name("pgfork-audit".into())
        .spawn(move || writer(home, rx))
        .expect("spawn the audit writer");
    (AuditSink { tx }, handle)
}

fn writer(home: Home, rx: Receiver<Msg>) {
    let mut log = None;
    while let Ok(first) = rx.recv() {
        // Let records gather: one commit for many, and senders do not wake
        // this thread for each (it is not waiting in recv while it sleeps).
        if matches!(first, Msg::Row(_)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Row(r) => batch.push(*r),
                Msg::Flush(ack) => flushes.push(ack),
            }
            if batch.len() < 5000 {
                next = rx.try_recv().ok();
            }
        }
        // Retry until written: records are not dropped because meta.db was
        // busy for a moment.
        let mut attempt = 0;
        while !batch.is_empty() {
            if log.is_none() {
                match AuditLog::open(&home) {
                    Ok(l) => log = Some(l),
                    Err(e) => tracing::warn!("audit: cannot open meta.db: {e}"),
                }
            }
            if let Some(l) = log.as_mut() {
                match l.append(&mut batch) {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!("audit: writing {} records failed: {e}", batch.len());
                        log = None;
                    }
                }
            }
            attempt += 1;
            std::thread::sleep(Duration::from_millis(100 * attempt.min(20)));
        }
        for ack in flushes {
            let _ = ack.send(());
        }
    }
}
