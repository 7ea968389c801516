//! The audit log (`/audit`): searchable, newest first, with the chain's
//! verification (admins; an agent sees its own records only).

use axum::extract::{RawQuery, State};
use axum::response::Response;
use maud::html;
use pgfork_engine::audit::{AuditQuery, VerifyReport};

use super::Web;
use super::page::{self, Nav};
use super::session::Viewer;
use crate::body::query_pairs;

/// Records shown at most.
const SHOWN: i64 = 200;

/// `GET /audit?q=TEXT&agent=NAME`.
pub async fn page(State(web): State<Web>, viewer: Viewer, RawQuery(q): RawQuery) -> Response {
    let pairs = query_pairs(q.as_deref());
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let (text, agent) = (get("q"), get("agent"));
    let query = AuditQuery {
        agent: agent.clone(),
        contains: text.clone(),
        limit: Some(SHOWN),
        ..AuditQuery::default()
    };
    let admin = viewer.is_admin();
    // Verifying reads and hashes the whole log: once per page load, not on
    // every live refresh (which does not show it).
    let verify = admin && !viewer.live;
    let read = web
        .engine(&viewer, move |e| {
            let rows = e.audit_query(&query)?;
            let chain = if verify {
                Some(e.audit_verify()?)
            } else {
                None
            };
            Ok((rows, chain))
        })
        .await;
    let (rows, chain) = match read {
        Ok(r) => r,
        Err(e) => return page::error(&viewer, Nav::Audit, e),
    };
    let body = html! {
        h1 { "Audit log" }
        p #chain {
            @match &chain {
                Some(VerifyReport { ok: true, records, .. }) => {
                    span.status.verified { "verified" } " — the hash chain of all " (records) " records holds." }
                Some(VerifyReport { broken_at, problem, .. }) => {
                    span.status.broken { "broken" } " at record " (broken_at.unwrap_or(0)) ": " (problem.as_deref().unwrap_or("")) }
                None => { span.muted { "Chain verification is for admins; these are your own records." } }
            }
        }
        form #audit-search method="get" action="/audit" {
            label { "Search " input name="q" value=[text.as_deref()] placeholder="statement, target, error"; }
            @if admin { label { "Agent " input name="agent" value=[agent.as_deref()] placeholder="name"; } }
            button type="submit" { "Search" }
        }
        div.scroll { table #audit.collapse data-live {
            thead { tr { th { "#" } th { "When" } th { "Who" } th { "Via" } th { "Target" } th { "Statement or action" }
                         th { "Result" } th { "ms" } } }
            tbody {
                @for r in rows.iter().rev() {
                    tr.record {
                        td data-label="#" { (r.id) }
                        td data-label="When" { (page::at_ms(r.at_ms)) }
                        td data-label="Who" { (r.agent) }
                        td data-label="Via" { (r.policy) }
                        td data-label="Target" { (r.target) }
                        td.sql data-label="Statement" { (r.statement) }
                        td data-label="Result" class=[r.sqlstate.is_some().then_some("error")] {
                            (r.tag.as_deref().unwrap_or(""))
                            @if let Some(n) = r.rows { " " (n) }
                            @if let Some(code) = &r.sqlstate { " " code { (code) } }
                            @if let Some(m) = &r.message { " " (m) }
                        }
                        td data-label="ms" { (format!("{:.1}", r.duration_us as f64 / 1000.0)) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="8" .muted { "No records match." } } }
            }
        } }
        p.hint { "The newest " (SHOWN) " matching records. " code { "pgfork audit" } " and GET /v1/audit give all of them." }
    };
    page::render(&viewer, Nav::Audit, "Audit", body)
}
