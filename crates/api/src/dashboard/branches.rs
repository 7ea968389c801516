//! The branches page (`/`), and the actions on a branch that both it and
//! the branch page offer: reset, stop or start, extend the TTL, delete.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use maud::{Markup, html};
use pgfork_engine::names;
use pgfork_engine::sharing::Member;
use pgfork_engine::view::BranchInfo;

use super::Web;
use super::page::{self, Nav};
use super::session::{Posted, Viewer};
use crate::body::query_pairs;
use crate::error::ApiError;

/// One branch as the list shows it.
pub struct Listed {
    /// The branch.
    pub info: BranchInfo,
    /// Agents it is shared with.
    pub members: Vec<Member>,
    /// Client sessions now (running branches).
    pub sessions: Option<i64>,
}

/// The list's filters, from the query string.
#[derive(Default)]
struct Filters {
    source: Option<String>,
    agent: Option<String>,
    label: Option<String>,
}

impl Filters {
    fn parse(query: Option<&str>) -> Filters {
        let mut f = Filters::default();
        for (k, v) in query_pairs(query) {
            let v = Some(v.trim().to_string()).filter(|v| !v.is_empty());
            match k.as_str() {
                "source" => f.source = v,
                "agent" => f.agent = v,
                "label" => f.label = v,
                _ => {}
            }
        }
        f
    }
}

/// `GET /`: every branch the viewer may see.
pub async fn page(State(web): State<Web>, viewer: Viewer, RawQuery(q): RawQuery) -> Response {
    let filters = Filters::parse(q.as_deref());
    let labels = match filters
        .label
        .as_deref()
        .map(|l| names::parse_labels(&[l.to_string()]))
    {
        Some(Err(e)) => return page::error(&viewer, Nav::Branches, ApiError::field("label", e)),
        Some(Ok(l)) => l,
        None => BTreeMap::new(),
    };
    let agent = filters.agent.clone();
    let admin = viewer.is_admin();
    let counts = web.counts.clone();
    let listed = web
        .engine(&viewer, move |e| {
            let branches = e.branch_list_by(&labels, agent.as_deref())?;
            let agents = if admin {
                e.agent_list()?.into_iter().map(|a| a.name).collect()
            } else {
                Vec::new()
            };
            let sessions = counts.of(&branches);
            let rows = branches
                .into_iter()
                .zip(sessions)
                .map(|(info, sessions)| Listed {
                    members: e.branch_members(&info.name).unwrap_or_default(),
                    sessions,
                    info,
                })
                .collect::<Vec<_>>();
            Ok((rows, agents))
        })
        .await;
    let (mut rows, agents) = match listed {
        Ok(l) => l,
        Err(e) => return page::error(&viewer, Nav::Branches, e),
    };
    let mut sources: Vec<String> = rows.iter().map(|r| r.info.source.clone()).collect();
    sources.sort();
    sources.dedup();
    if let Some(s) = &filters.source {
        rows.retain(|r| &r.info.source == s);
    }
    let body = html! {
        h1 { "Branches" }
        (filter_form(&filters, &sources, &agents))
        div.scroll {
            table #branches.collapse data-live {
                thead { tr {
                    th { "Name" } th { "Source @ snapshot" } th { "Status" } th { "Agent, members" }
                    th { "Age" } th { "TTL left" } th { "Unshared" } th { "Sessions" } th { "Actions" }
                } }
                tbody {
                    @for r in &rows { (row(&web, &viewer, r)) }
                    @if rows.is_empty() {
                        tr { td colspan="9" .muted { "No branches. Create one with "
                            code { "pgfork branch create NAME --from SOURCE" } " or POST /v1/branches." } }
                    }
                }
            }
        }
    };
    page::render(&viewer, Nav::Branches, "Branches", body)
}

fn filter_form(f: &Filters, sources: &[String], agents: &[String]) -> Markup {
    html! {
        form #filters method="get" action="/" {
            label { "Source "
                select name="source" {
                    option value="" { "all" }
                    @for s in sources { option value=(s) selected[f.source.as_deref() == Some(s.as_str())] { (s) } }
                }
            }
            @if !agents.is_empty() {
                label { "Agent "
                    select name="agent" {
                        option value="" { "all" }
                        @for a in agents { option value=(a) selected[f.agent.as_deref() == Some(a.as_str())] { (a) } }
                    }
                }
            }
            label { "Label "
                input name="label" placeholder="key=value" value=[f.label.as_deref()];
            }
            button type="submit" { "Filter" }
        }
    }
}

/// Who made a branch, and who else may use it.
pub fn people(info: &BranchInfo, members: &[Member]) -> Markup {
    html! {
        (info.created_by.as_deref().unwrap_or("—"))
        @for m in members {
            br; span.muted { "+ " (m.agent) @if m.read_only { " (read-only)" } }
        }
    }
}

/// Unshared bytes as last sampled, or `—` before the first sample.
pub fn unshared(web: &Web, info: &BranchInfo) -> String {
    info.unshared_bytes
        .or_else(|| web.shared.metrics.unshared_of(&info.name))
        .map(page::bytes)
        .unwrap_or_else(|| "—".into())
}

fn row(web: &Web, viewer: &Viewer, r: &Listed) -> Markup {
    let i = &r.info;
    html! {
        tr data-branch=(i.name) {
            td data-label="Name" { a.branch-link href={ "/branches/" (i.name) } { (i.name) } }
            td data-label="Source" { (i.source) " @ " (i.snapshot) }
            td class={ "status " (i.status) } data-label="Status" { (i.status) }
            td data-label="Agent" { (people(i, &r.members)) }
            td data-label="Age" { (page::ago(&i.created_at)) }
            td data-label="TTL left" { (i.expires_at.as_deref().map(page::until).unwrap_or_else(|| "none".into())) }
            td data-label="Unshared" { (unshared(web, i)) }
            td data-label="Sessions" { (r.sessions.map(|n| n.to_string()).unwrap_or_else(|| "—".into())) }
            td data-label="Actions" { (actions(viewer, i, "/")) }
        }
    }
}

/// The actions on a branch, as forms that post to
/// `/branches/NAME/ACTION`; `back` is the page to return to.
pub fn actions(viewer: &Viewer, i: &BranchInfo, back: &str) -> Markup {
    let base = format!("/branches/{}", i.name);
    html! {
        div.actions {
            (page::button(viewer, &format!("{base}/reset"), "action-reset", "Reset", back))
            @if i.status == "running" {
                (page::button(viewer, &format!("{base}/stop"), "action-stop", "Stop", back))
            } @else {
                (page::button(viewer, &format!("{base}/start"), "action-start", "Start", back))
            }
            form.inline.action-ttl method="post" action={ (base) "/ttl" } {
                (page::csrf(viewer))
                input type="hidden" name="back" value=(back);
                input name="ttl" size="4" placeholder="24h" aria-label="TTL from now" required;
                button type="submit" { "Set TTL" }
            }
            details.delete-branch {
                summary { "Delete…" }
                form.inline.action-delete method="post" action={ (base) "/delete" } {
                    (page::csrf(viewer))
                    input type="hidden" name="back" value=(back);
                    span { "Delete " (i.name) " and its data? " }
                    button.danger type="submit" { "Delete" }
                }
            }
        }
    }
}

/// `POST /branches/{name}/{action}`: reset, stop, start, ttl or delete.
pub async fn act(
    State(web): State<Web>,
    Path((name, action)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let viewer = &posted.viewer;
    let scoped = web.scoped(viewer);
    let mut back = posted.back("/");
    let what = format!("POST /branches/{name}/{action}");
    let result = web
        .audited(viewer, what, &name, async {
            let n = name.clone();
            match action.as_str() {
                "reset" => scoped
                    .engine(move |e| e.branch_reset(&n))
                    .await
                    .map(|_| format!("Branch {name} was reset to its snapshot.")),
                "stop" => scoped
                    .engine(move |e| e.branch_stop(&n))
                    .await
                    .map(|_| format!("Branch {name} was stopped.")),
                "start" => scoped
                    .start_branch(n)
                    .await
                    .map(|_| format!("Branch {name} was started.")),
                "ttl" => {
                    let text = posted.field("ttl").unwrap_or("").to_string();
                    let ttl = names::parse_ttl(&text).map_err(|e| ApiError::field("ttl", e))?;
                    scoped
                        .engine(move |e| {
                            e.branch_set(&n, Some(Some(ttl)), None, &BTreeMap::new(), &[])
                        })
                        .await
                        .map(|_| format!("Branch {name} now expires {text} from now."))
                }
                "delete" => {
                    back = "/".into();
                    scoped
                        .engine(move |e| e.branch_delete(&n, false))
                        .await
                        .map(|_| format!("Branch {name} was deleted."))
                }
                other => Err(ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no branch action '{other}': reset, stop, start, ttl or delete"),
                )),
            }
        })
        .await;
    web.after(viewer, &back, result)
}
