//! Audit records of a session: one per statement, with what the server
//! said about it (its own tag, rows and error), or why the proxy refused it.

use std::time::Instant;

use pgfork_pool::meta::AuditRow;

use super::SessionInfo;

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

/// How a statement ended, as recorded.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The server's command tag (or the proxy's, for a simulated one).
    pub tag: Option<String>,
    /// Rows: the server's count, or what the budget measured if more.
    pub rows: Option<u64>,
    /// SQLSTATE and message of an error.
    pub error: Option<(String, String)>,
    /// Transaction status the client was told at the end of the exchange.
    pub status: Option<u8>,
}

/// Writes `draft`'s record with `outcome`.
pub fn write(info: &SessionInfo, draft: Draft, outcome: Outcome) {
    let (sqlstate, message) = match outcome.error {
        Some((c, m)) => (Some(c), Some(m)),
        None => (None, None),
    };
    info.audit.record(AuditRow {
        at_ms: draft.at_ms,
        agent: info.agent.clone(),
        session: info.session.clone(),
        client: info.client.clone(),
        target: info.target.clone(),
        policy: info.policy.clone(),
        statement: draft.statement,
        params: draft.params,
        duration_us: draft.started.elapsed().as_micros() as i64,
        tag: outcome.tag,
        tx_status: outcome.status.map(|s| (s as char).to_string()),
        rows: outcome.rows.map(|r| r.min(i64::MAX as u64) as i64),
        sqlstate,
        message,
        ..AuditRow::default()
    });
}
