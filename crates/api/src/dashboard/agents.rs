//! Agents (`/agents`): each one's policy, budgets, sessions now and last
//! statement; an admin rotates or revokes their credentials here.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use pgfork_engine::agents::AgentInfo;
use pgfork_engine::audit::AuditQuery;
use pgfork_pool::meta::AuditRow;

use super::Web;
use super::page::{self, Nav};
use super::session::{Posted, Viewer};
use crate::error::ApiError;

struct Shown {
    info: AgentInfo,
    sessions: Option<i64>,
    last: Option<AuditRow>,
}

/// `GET /agents`: every agent (an admin), or the viewer itself (an agent).
pub async fn page(State(web): State<Web>, viewer: Viewer) -> Response {
    let me = viewer.actor.agent().map(str::to_string);
    let counts = web.counts.clone();
    let shown = web
        .engine(&viewer, move |e| {
            let agents = match &me {
                Some(name) => vec![e.agent_info(name)?],
                None => e.agent_list()?,
            };
            agents
                .into_iter()
                .map(|info| {
                    let last = e
                        .audit_query(&AuditQuery {
                            agent: Some(info.name.clone()),
                            statements_only: true,
                            limit: Some(1),
                            ..AuditQuery::default()
                        })?
                        .pop();
                    Ok(Shown {
                        // A server that cannot be asked has no count to show.
                        sessions: if info.status == "active" {
                            counts.one(&format!("agent:{}", info.name), || {
                                e.agent_sessions(&info.name).ok().flatten()
                            })
                        } else {
                            None
                        },
                        last,
                        info,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
    let shown = match shown {
        Ok(s) => s,
        Err(e) => return page::error(&viewer, Nav::Agents, e),
    };
    let body = html! {
        h1 { "Agents" }
        div.scroll { table #agents.collapse data-live {
            thead { tr { th { "Agent" } th { "Policy" } th { "Budgets" } th { "Sessions" }
                         th { "Last statement" } th { "Actions" } } }
            tbody {
                @for a in &shown { (row(&viewer, a)) }
                @if shown.is_empty() { tr { td colspan="6" .muted {
                    "No agents: " code { "pgfork agent create NAME --source S --policy branch" } } } }
            }
        } }
    };
    page::render(&viewer, Nav::Agents, "Agents", body)
}

fn budgets(i: &AgentInfo) -> Markup {
    let secs = |s: i64| page::span(std::time::Duration::from_secs(s.max(0) as u64));
    html! {
        @if let Some(n) = i.max_rows { "rows ≤ " (n) br; }
        @if let Some(ms) = i.statement_timeout_ms { "statement ≤ " (ms) " ms" br; }
        @if let Some(b) = i.max_storage { "storage ≤ " (page::bytes(b.max(0) as u64)) br; }
        "sessions ≤ " (i.max_connections) br;
        @if let Some(n) = i.max_branches { "branches ≤ " (n) br; }
        @if let Some(t) = i.ttl_secs { "TTL " (secs(t)) br; }
        "TTL ≤ " (secs(i.max_ttl_secs))
    }
}

fn row(viewer: &Viewer, a: &Shown) -> Markup {
    let i = &a.info;
    let base = format!("/agents/{}", i.name);
    html! {
        tr data-agent=(i.name) {
            td data-label="Agent" { strong { (i.name) } br; span class={ "status " (i.status) } { (i.status) }
                @if let Some(p) = &i.parent { br; span.muted { "made by " (p) } } }
            td data-label="Policy" { (i.policy) " on " (i.source)
                @if let Some(b) = &i.branch { br; span.muted { "branch " }
                    @if b == "per-session" { (b) } @else { a href={ "/branches/" (b) } { (b) } } } }
            td data-label="Budgets" { (budgets(i)) }
            td data-label="Sessions" { (a.sessions.map(|n| n.to_string()).unwrap_or_else(|| "—".into())) }
            td.sql data-label="Last statement" {
                @if let Some(r) = &a.last {
                    (r.statement) br; span.muted { (page::ago(&page::at_ms(r.at_ms))) }
                } @else { span.muted { "none yet" } }
            }
            td data-label="Actions" {
                @if viewer.is_admin() && i.status == "active" {
                    div.actions {
                        (page::button(viewer, &format!("{base}/rotate"), "action-rotate", "Rotate", "/agents"))
                        details { summary { "Revoke…" }
                            (page::button(viewer, &format!("{base}/revoke"), "action-revoke", "Revoke now", "/agents")) }
                    }
                }
            }
        }
    }
}

/// `POST /agents/{name}/{rotate|revoke}`: admin only (the engine refuses
/// anyone else).
pub async fn act(
    State(web): State<Web>,
    Path((name, action)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let viewer = &posted.viewer;
    let what = format!("POST /agents/{name}/{action}");
    let n = name.clone();
    match action.as_str() {
        "rotate" => {
            let rotated = web
                .audited(
                    viewer,
                    what,
                    &name,
                    web.engine(viewer, move |e| e.agent_rotate(&n)),
                )
                .await;
            match rotated {
                // The new credentials are shown once, on this answer, and
                // kept nowhere: not in a redirect, not in the session.
                Ok(s) => page::render(
                    viewer,
                    Nav::Agents,
                    "Rotated",
                    html! {
                        h1 { "New credentials of " (name) }
                        p.flash.ok { "Rotated: the old secret and API token no longer work. Copy these now; they are not shown again." }
                        dl.kv {
                            dt { "Proxy URL" } dd.secret { (s.dsn) }
                            dt { "API token" } dd.secret { (s.api_token) }
                        }
                        p { a href="/agents" { "Back to the agents" } }
                    },
                ),
                Err(e) => page::error(viewer, Nav::Agents, e),
            }
        }
        "revoke" => {
            let result = web
                .audited(viewer, what, &name, async {
                    web.engine(viewer, move |e| e.agent_revoke(&n)).await
                })
                .await
                .map(|_| format!("Agent {name} was revoked: its logins and tokens stop working."));
            web.after(viewer, "/agents", result)
        }
        other => page::error(
            viewer,
            Nav::Agents,
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no agent action '{other}': rotate or revoke"),
            ),
        ),
    }
}
