//! The audit log of the policy proxy: append-only and hash-chained.
//!
//! Each record carries the hash of the record before it and its own hash
//! over its fields and that link, so that changing or removing a record
//! breaks the chain at that point. The newest id and hash are also kept in
//! `settings` (`audit_head`), so that removing the newest records is found
//! too. SQLite triggers refuse UPDATE and DELETE; the chain is for whoever
//! gets around them.

use pgfork_pool::meta::{AuditFilter, AuditRow};
use pgfork_pool::{Home, Meta};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Engine, Result};

/// The link before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HEAD_SETTING: &str = "audit_head";

/// The hash of a record: SHA-256 over the previous hash and the record's
/// fields (not its id, which SQLite assigns) as one JSON array.
pub fn record_hash(prev_hash: &str, r: &AuditRow) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    // Serialized in place (the same bytes as a serde_json array of these
    // values): the proxy's writer hashes thousands of records a second.
    let fields = (
        r.at_ms,
        &r.agent,
        &r.session,
        &r.client,
        &r.target,
        &r.policy,
        &r.statement,
        &r.params,
        r.duration_us,
        &r.tag,
        r.rows,
        &r.sqlstate,
        &r.message,
    );
    let json = match &r.tx_status {
        // Older records have no status: their hashes stay what they were.
        None => serde_json::to_vec(&fields),
        Some(status) => {
            let (a, b, c, d, e, f, g, i, j, k, l, m, n) = fields;
            serde_json::to_vec(&(a, b, c, d, e, f, g, i, j, k, l, m, n, status))
        }
    }
    .expect("plain values serialize");
    h.update(&json);
    hex(&h.finalize())
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// An open audit log for appending (the proxy's writer thread).
pub struct AuditLog {
    meta: Meta,
}

impl AuditLog {
    /// Opens the log of `home`.
    pub fn open(home: &Home) -> Result<AuditLog> {
        Ok(AuditLog {
            meta: Meta::open(&home.meta_db(), false)?,
        })
    }

    /// Appends records in one transaction, chaining each to the one before.
    /// Concurrent writers (two proxies) serialise on the write lock, so the
    /// chain stays one line.
    pub fn append(&mut self, records: &mut [AuditRow]) -> Result<()> {
        self.meta.write(|c| {
            let mut prev = AuditRow::last(c)?
                .map(|(_, h)| h)
                .unwrap_or_else(|| GENESIS.to_string());
            let mut head = None;
            for r in records.iter_mut() {
                r.prev_hash = prev.clone();
                r.hash = record_hash(&prev, r);
                r.id = r.append(c)?;
                prev = r.hash.clone();
                head = Some(format!("{}:{}", r.id, r.hash));
            }
            if let Some(head) = head {
                Meta::set_setting(c, HEAD_SETTING, &head)?;
            }
            Ok::<_, crate::EngineError>(())
        })
    }
}

/// One action through the HTTP API or MCP, for the audit log.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    /// Who asked.
    pub actor: &'a crate::Actor,
    /// `api`, `mcp`, `cli` or `web` (the dashboard).
    pub interface: &'a str,
    /// How the caller came (`http`, `stdio`).
    pub client: &'a str,
    /// The route (`POST /v1/branches/dev/reset`) or tool (`tool run_sql`).
    pub action: &'a str,
    /// The object it was about (`-` for none).
    pub target: &'a str,
    /// The HTTP status, or `ok`/`error` for a tool.
    pub result: &'a str,
    /// The error's code and message, if it failed.
    pub error: Option<(&'a str, &'a str)>,
    /// How long it took.
    pub duration: std::time::Duration,
}

/// Appends an API or MCP action to the audit log, in the same chain as
/// the proxy's statements: `agent` is the agent's name (an admin's is
/// `admin:NAME`), `policy` the interface, `statement` the route or tool,
/// `tag` the result, `sqlstate` and `message` the error.
pub fn record_action(home: &Home, a: &Action) -> Result<()> {
    let who = match a.actor {
        crate::Actor::Agent(name) => name.clone(),
        admin => admin.label(),
    };
    let mut row = AuditRow {
        id: 0,
        at_ms: pgfork_pool::meta::now_ms(),
        agent: who,
        session: a.interface.to_string(),
        client: a.client.to_string(),
        target: a.target.to_string(),
        policy: a.interface.to_string(),
        statement: a.action.to_string(),
        params: None,
        duration_us: a.duration.as_micros().min(i64::MAX as u128) as i64,
        tag: Some(a.result.to_string()),
        rows: None,
        sqlstate: a.error.map(|(code, _)| code.to_string()),
        message: a.error.map(|(_, message)| message.to_string()),
        tx_status: None,
        prev_hash: String::new(),
        hash: String::new(),
    };
    AuditLog::open(home)?.append(std::slice::from_mut(&mut row))
}

/// What `audit` is asked for.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this agent.
    pub agent: Option<String>,
    /// Only records about this branch or source.
    pub target: Option<String>,
    /// Only records whose agent, target, statement or error contain this.
    pub contains: Option<String>,
    /// Only statements through the proxy, not actions.
    pub statements_only: bool,
    /// Only records from this time on (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// At most this many (the newest).
    pub limit: Option<i64>,
}

/// What `audit --verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Whether the whole chain holds.
    pub ok: bool,
    /// The first record whose link or hash is wrong.
    pub broken_at: Option<i64>,
    /// What is wrong there.
    pub problem: Option<String>,
}

impl Engine {
    /// Audit records, oldest first.
    pub fn audit_query(&self, q: &AuditQuery) -> Result<Vec<AuditRow>> {
        // An agent reads its own records only, whatever it asked for.
        let agent = match self.acting_agent()? {
            Some(a) => Some(a.name),
            None => q.agent.clone(),
        };
        let filter = AuditFilter {
            agent: agent.as_deref(),
            target: q.target.as_deref(),
            contains: q.contains.as_deref(),
            statements_only: q.statements_only,
            since_ms: q.since_ms,
            limit: q.limit,
        };
        Ok(AuditRow::query(self.meta.conn(), &filter)?)
    }

    /// Recomputes the whole chain and reports the first broken link.
    pub fn audit_verify(&self) -> Result<VerifyReport> {
        self.admin_only("verify the whole audit log")?;
        let mut report = VerifyReport {
            records: 0,
            ok: true,
            broken_at: None,
            problem: None,
        };
        let mut prev = GENESIS.to_string();
        let mut last_id = 0;
        AuditRow::for_each(self.meta.conn(), |r| {
            report.records += 1;
            let problem = if r.prev_hash != prev {
                Some(if last_id == 0 {
                    "the first record does not start the chain: records before it were removed"
                        .to_string()
                } else {
                    format!(
                        "it does not link to record {last_id}: a record between them was removed, or record {last_id} was changed"
                    )
                })
            } else if record_hash(&r.prev_hash, &r) != r.hash {
                Some("its contents do not match its hash: the record was changed".to_string())
            } else {
                None
            };
            if let Some(p) = problem {
                report.ok = false;
                report.broken_at = Some(r.id);
                report.problem = Some(p);
                return false;
            }
            prev = r.hash.clone();
            last_id = r.id;
            true
        })?;
        if report.ok {
            let head = self.meta.setting(HEAD_SETTING)?;
            let expected = (last_id > 0).then(|| format!("{last_id}:{prev}"));
            if let Some(head) = head
                && Some(&head) != expected.as_ref()
            {
                report.ok = false;
                report.broken_at = head.split(':').next().and_then(|i| i.parse().ok());
                report.problem = Some(format!(
                    "the log ends at record {last_id}, but its recorded head is record {}: the newest records were removed",
                    head.split(':').next().unwrap_or("?")
                ));
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_fields_and_link() {
        let r = AuditRow {
            statement: "SELECT 1".into(),
            ..AuditRow::default()
        };
        let h = record_hash(GENESIS, &r);
        assert_eq!(h.len(), 64);
        let mut changed = r.clone();
        changed.statement = "SELECT 2".into();
        assert_ne!(h, record_hash(GENESIS, &changed));
        assert_ne!(h, record_hash(&h, &r));
    }

    /// The hash is the one of the first format (a serde_json array), so
    /// logs written before verify.
    #[test]
    fn hash_is_stable() {
        let mut r = AuditRow {
            at_ms: 1,
            agent: "a\"b".into(),
            statement: "SELECT 'é'\n".into(),
            rows: Some(3),
            ..AuditRow::default()
        };
        let old = |r: &AuditRow| {
            let mut fields = serde_json::json!([
                r.at_ms,
                r.agent,
                r.session,
                r.client,
                r.target,
                r.policy,
                r.statement,
                r.params,
                r.duration_us,
                r.tag,
                r.rows,
                r.sqlstate,
                r.message,
            ]);
            if let (Some(status), Some(list)) = (&r.tx_status, fields.as_array_mut()) {
                list.push(serde_json::json!(status));
            }
            let mut h = Sha256::new();
            h.update(GENESIS.as_bytes());
            h.update(b"\n");
            h.update(fields.to_string().as_bytes());
            h.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert_eq!(record_hash(GENESIS, &r), old(&r));
        r.tx_status = Some("T".into());
        assert_eq!(record_hash(GENESIS, &r), old(&r));
    }
}
