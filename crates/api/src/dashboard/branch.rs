//! One branch (`/branches/NAME`): its state and actions, its connection
//! string (password hidden until asked for), the statements that ran on
//! it, what it changed, its storage over time and its promotion requests.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use pgfork_engine::audit::AuditQuery;
use pgfork_engine::view::BranchInfo;
use pgfork_engine::{DiffRequest, PromotionRow};
use pgfork_pool::meta::AuditRow;

use super::Web;
use super::branches::{actions, people, unshared};
use super::page::{self, Nav};
use super::session::{Posted, Viewer};

/// Statements shown, newest first.
const STATEMENTS: i64 = 100;
/// Changed rows shown per table.
const DIFF_ROWS: usize = 50;

/// What the page shows of a branch, read in one engine call.
struct Seen {
    info: BranchInfo,
    members: Vec<pgfork_engine::sharing::Member>,
    sessions: Option<i64>,
    statements: Vec<AuditRow>,
    promotions: Vec<PromotionRow>,
}

/// Whether the request wants only a fragment (the page's script asking).
fn fragment(headers: &HeaderMap) -> bool {
    headers.contains_key("x-pgfork-fragment")
}

/// `GET /branches/{name}`.
pub async fn page(State(web): State<Web>, viewer: Viewer, Path(name): Path<String>) -> Response {
    let n = name.clone();
    let counts = web.counts.clone();
    // Reading the extent map is for a page load; a live refresh shows the
    // daemon's last sample.
    let live = viewer.live;
    let seen = web
        .engine(&viewer, move |e| {
            let mut info = e.branch_info(&n)?;
            if !live {
                info.unshared_bytes = e.branch_unshared_bytes(&n).ok();
            }
            let statements = e.audit_query(&AuditQuery {
                target: Some(n.clone()),
                statements_only: true,
                limit: Some(STATEMENTS),
                ..AuditQuery::default()
            })?;
            let promotions = e
                .promotion_list(None)?
                .into_iter()
                .filter(|p| p.branch == n)
                .collect();
            Ok(Seen {
                members: e.branch_members(&n).unwrap_or_default(),
                sessions: counts.of(std::slice::from_ref(&info))[0],
                info,
                statements,
                promotions,
            })
        })
        .await;
    let seen = match seen {
        Ok(s) => s,
        Err(e) => return page::error(&viewer, Nav::Branches, e),
    };
    let i = &seen.info;
    let here = format!("/branches/{}", i.name);
    let body = html! {
        h1 { "Branch " (i.name) }
        section #branch-status.card data-live {
            dl.kv {
                dt { "Status" } dd class={ "status " (i.status) } { (i.status) @if let Some(e) = &i.error { " — " (e) } }
                dt { "From" } dd { (i.source) " @ " (i.snapshot)
                    @if let Some(p) = &i.parent_branch { " (branch of " a href={ "/branches/" (p) } { (p) } ")" } }
                dt { "Agent, members" } dd { (people(i, &seen.members)) }
                dt { "Created" } dd { (page::ago(&i.created_at)) }
                dt { "Last used" } dd { (page::ago(&i.last_active_at)) }
                dt { "TTL left" } dd { (i.expires_at.as_deref().map(page::until).unwrap_or_else(|| "none".into()))
                    @if i.protected { " (protected)" } }
                dt { "Unshared" } dd { (unshared(&web, i)) }
                dt { "Sessions now" } dd { (seen.sessions.map(|n| n.to_string()).unwrap_or_else(|| "—".into())) }
                @if !i.labels.is_empty() {
                    dt { "Labels" } dd { @for (k, v) in &i.labels { code { (k) "=" (v) } " " } }
                }
            }
            (actions(&viewer, i, &here))
        }
        section #dsn.card {
            h2 { "Connection string" }
            p { code #dsn-value { (i.dsn) } }
            form #dsn-form.inline method="post" action={ (here) "/dsn" } {
                (page::csrf(&viewer))
                button #reveal-dsn type="submit" { "Reveal password" }
            }
            " "
            button #copy-dsn type="button" { "Copy" }
        }
        section.card {
            h2 { "Statements" }
            p.hint { "From the audit log: what agents ran on this branch through the proxy, newest first." }
            div.scroll { (statements(&seen.statements)) }
        }
        section #diff.card data-src={ (here) "/diff" } {
            h2 { "Changes" }
            p.loading { "Comparing the branch with its snapshot…" }
            noscript { a href={ (here) "/diff" } { "Show the changes" } }
        }
        section.card {
            h2 { "Storage" }
            (chart(&web.shared.metrics.unshared_history(&i.name), i.unshared_bytes))
        }
        section #promotions.card data-live {
            h2 { "Promotion requests" }
            @if seen.promotions.is_empty() {
                p.muted { "None. An agent asks with the MCP tool request_promotion or POST /v1/promotions." }
            } @else {
                ul { @for p in &seen.promotions {
                    li { a href={ "/promotions/" (p.id) } { "#" (p.id) } " "
                         span class={ "status " (p.status) } { (p.status) } " by " (p.requested_by)
                         " " span.muted { (page::ago(&page::at_secs(p.created_at))) } }
                } }
            }
        }
    };
    page::render(&viewer, Nav::Branches, &format!("Branch {}", i.name), body)
}

fn statements(rows: &[AuditRow]) -> Markup {
    html! {
        table #statements.collapse data-live {
            thead { tr { th { "When" } th { "Agent" } th { "Statement" } th { "Duration" } th { "Rows" } th { "Error" } } }
            tbody {
                @for r in rows.iter().rev() {
                    tr.statement {
                        td data-label="When" { (page::ago(&page::at_ms(r.at_ms))) }
                        td data-label="Agent" { (r.agent) }
                        td.sql data-label="Statement" { (r.statement) }
                        td.duration data-label="Duration" { (format!("{:.1} ms", r.duration_us as f64 / 1000.0)) }
                        td.rows data-label="Rows" { (r.rows.map(|n| n.to_string()).unwrap_or_default()) }
                        td.error data-label="Error" {
                            @if let Some(code) = &r.sqlstate { code { (code) } " " }
                            (r.message.as_deref().unwrap_or(""))
                        }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan="6" .muted { "No statements yet." } }
                }
            }
        }
    }
}

/// A small line chart of unshared bytes over time, drawn on the server
/// (no script, no chart library): the samples the daemon took, and now.
fn chart(samples: &[(i64, u64)], now: Option<u64>) -> Markup {
    let mut points = samples.to_vec();
    if let Some(bytes) = now {
        points.push((pgfork_pool::meta::now(), bytes));
    }
    let (w, h, pad) = (520.0, 120.0, 16.0);
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    let (t0, t1) = (
        points.first().map_or(0, |p| p.0),
        points.last().map_or(0, |p| p.0),
    );
    let span = (t1 - t0).max(1) as f64;
    let xy: Vec<String> = points
        .iter()
        .map(|(t, b)| {
            let x = pad + (w - 2.0 * pad) * ((t - t0) as f64 / span);
            let y = h - pad - (h - 2.0 * pad) * (*b as f64 / max);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    html! {
        svg #storage-chart viewBox="0 0 520 120" role="img" aria-label="Unshared bytes over time" {
            @if points.len() > 1 {
                polyline points=(xy.join(" ")) {}
            } @else if let Some(p) = xy.first() {
                @let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                circle cx=(x) cy=(y) r="3" fill="#2456a6" {}
            }
            text x="4" y="12" { "max " (page::bytes(max as u64)) }
            text x="4" y="116" {
                @if points.len() > 1 { "over " (page::span(std::time::Duration::from_secs((t1 - t0) as u64))) }
                @else { "no history yet: sampled every 30 s while pgfork serve runs" }
            }
        }
    }
}

/// `GET /branches/{name}/diff`: what the branch changed against its
/// snapshot, as a fragment for the page's script or as a page.
pub async fn diff(
    State(web): State<Web>,
    viewer: Viewer,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let req = DiffRequest {
        target: name.clone(),
        against: None,
        schema: true,
        data: true,
        limit: DIFF_ROWS,
        full: false,
        sql: false,
    };
    let report = web.engine(&viewer, move |e| e.diff(&req)).await;
    let here = format!("/branches/{name}");
    let inner = html! {
        h2 { "Changes " button type="button" data-reload { "Refresh" } }
        @match &report {
            Ok(r) => (super::diff_view::report(r)),
            Err(e) => p.flash.error { (e.message) },
        }
    };
    if fragment(&headers) {
        return Html(inner.into_string()).into_response();
    }
    page::render(
        &viewer,
        Nav::Branches,
        &format!("Changes of {name}"),
        html! { p { a href=(here) { "← " (name) } } section #diff.card { (inner) } },
    )
}

/// `POST /branches/{name}/dsn`: the connection string with its password,
/// as text for the page's script (or as a page without it).
pub async fn dsn(
    State(web): State<Web>,
    Path(name): Path<String>,
    headers: HeaderMap,
    posted: Posted,
) -> Response {
    let viewer = &posted.viewer;
    let n = name.clone();
    let dsn = web
        .audited(viewer, format!("POST /branches/{name}/dsn"), &name, async {
            web.engine(viewer, move |e| e.branch_info(&n))
                .await
                .map(|info| info.dsn_with_password().unwrap_or(info.dsn))
        })
        .await;
    match (dsn, fragment(&headers)) {
        (Ok(dsn), true) => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], dsn).into_response()
        }
        (Err(e), true) => (e.status, e.message).into_response(),
        (Ok(dsn), false) => page::render(
            viewer,
            Nav::Branches,
            &format!("Connection string of {name}"),
            html! { h1 { (name) } p { code #dsn-value { (dsn) } } },
        ),
        (Err(e), false) => page::error(viewer, Nav::Branches, e),
    }
}

#[cfg(test)]
mod tests {
    use super::chart;

    #[test]
    fn the_chart_draws_a_line_through_every_sample() {
        let svg = chart(&[(100, 0), (160, 1024)], Some(2048)).into_string();
        assert!(svg.contains("<polyline"), "{svg}");
        assert_eq!(svg.matches(',').count(), 3, "{svg}");
        let one = chart(&[], Some(10)).into_string();
        assert!(
            one.contains("<circle") && one.contains("no history yet"),
            "{one}"
        );
    }
}
