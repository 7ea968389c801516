//! Promotion requests (`/promotions`): the queue, each request with what
//! its branch changes, the dry run's gates and conflicts, and the
//! rehearsal of its migration; an admin approves or rejects it with a
//! reason.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use pgfork_engine::PromotionRow;
use serde_json::Value;

use super::Web;
use super::page::{self, Nav};
use super::session::{Posted, Viewer};
use crate::error::ApiError;

/// `GET /promotions`.
pub async fn list(State(web): State<Web>, viewer: Viewer) -> Response {
    let rows = match web.engine(&viewer, |e| e.promotion_list(None)).await {
        Ok(r) => r,
        Err(e) => return page::error(&viewer, Nav::Promotions, e),
    };
    let body = html! {
        h1 { "Promotion requests" }
        p.hint { "Agents ask to apply their branch's changes to its source; an admin decides. "
                 "Approving promotes with every check against the source as it is now." }
        div.scroll {
            table #promotions.collapse data-live {
                thead { tr { th { "#" } th { "Branch" } th { "Source" } th { "By" } th { "Asked" }
                             th { "Status" } th { "Changes" } th { "Note" } } }
                tbody {
                    @for p in &rows {
                        tr data-promotion=(p.id) {
                            td data-label="#" { a href={ "/promotions/" (p.id) } { "#" (p.id) } }
                            td data-label="Branch" { a href={ "/branches/" (p.branch) } { (p.branch) } }
                            td data-label="Source" { (p.source) }
                            td data-label="By" { (p.requested_by) }
                            td data-label="Asked" { (page::ago(&page::at_secs(p.created_at))) }
                            td class={ "status " (p.status) } data-label="Status" { (p.status) }
                            td data-label="Changes" { (short_summary(&p.summary)) }
                            td data-label="Note" { (p.note.as_deref().unwrap_or("")) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="8" .muted { "No requests." } } }
                }
            }
        }
    };
    page::render(&viewer, Nav::Promotions, "Promotions", body)
}

fn short_summary(s: &Value) -> String {
    let objects = s["schema_changes"].as_array().map_or(0, Vec::len);
    let rows = s["rows_changed"].as_u64().unwrap_or(0);
    format!("{objects} schema objects, {rows} rows")
}

/// `GET /promotions/{id}`.
pub async fn page(State(web): State<Web>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return page::error(&viewer, Nav::Promotions, unknown(&id));
    };
    let row = match web.engine(&viewer, move |e| e.promotion_get(id)).await {
        Ok(r) => r,
        Err(e) => return page::error(&viewer, Nav::Promotions, e),
    };
    let body = html! {
        h1 { "Promotion request #" (row.id) }
        section #request.card data-live {
            dl.kv {
                dt { "Status" } dd class={ "status " (row.status) } { (row.status) }
                dt { "Branch" } dd { a href={ "/branches/" (row.branch) } { (row.branch) } " → " (row.source) }
                dt { "Asked by" } dd { (row.requested_by) ", " (page::ago(&page::at_secs(row.created_at))) }
                @if let Some(n) = &row.note { dt { "Note" } dd { (n) } }
                @if let Some(by) = &row.decided_by {
                    dt { "Decided by" } dd { (by)
                        @if let Some(at) = row.decided_at { ", " (page::ago(&page::at_secs(at))) } }
                }
                @if let Some(r) = &row.reason { dt { "Reason" } dd { (r) } }
            }
            @if let Some(result) = &row.result { details { summary { "Result" } pre { (pretty(result)) } } }
            @if row.status == "open" && viewer.is_admin() { (decide_forms(&viewer, &row)) }
        }
        section.card { h2 { "What it changes" } (summary(&row.summary)) }
        section.card { h2 { "Dry run: gates and conflicts" } (preview(&row.summary["preview"])) }
        @if !row.summary["rehearsal"].is_null() {
            section.card { h2 { "Rehearsal of its migration" } (rehearsal(&row.summary["rehearsal"])) }
        }
        @if row.status == "open" {
            section #diff.card data-src={ "/branches/" (row.branch) "/diff" } {
                h2 { "Changes" }
                p.loading { "Comparing the branch with its snapshot…" }
            }
        }
    };
    page::render(
        &viewer,
        Nav::Promotions,
        &format!("Promotion #{}", row.id),
        body,
    )
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_request",
        format!("no promotion request '{id}': the promotions page lists them"),
    )
}

fn decide_forms(viewer: &Viewer, row: &PromotionRow) -> Markup {
    let base = format!("/promotions/{}", row.id);
    html! {
        div.actions {
            form.inline.action-approve method="post" action={ (base) "/approve" } {
                (page::csrf(viewer))
                button type="submit" { "Approve and promote" }
            }
            form.action-reject method="post" action={ (base) "/reject" } {
                (page::csrf(viewer))
                textarea name="reason" rows="2" cols="40" placeholder="Why (the agent reads this)" required {}
                " " button.danger type="submit" { "Reject" }
            }
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn summary(s: &Value) -> Markup {
    let empty = Vec::new();
    let schema = s["schema_changes"].as_array().unwrap_or(&empty);
    let tables = s["tables"].as_array().unwrap_or(&empty);
    html! {
        p.muted { "Against " (s["base"].as_str().unwrap_or("its snapshot")) ": "
                  (short_summary(s)) }
        @if !schema.is_empty() {
            ul { @for c in schema {
                li.schema-change { span class={ "kind " (c["kind"].as_str().unwrap_or("")) } { (c["kind"].as_str().unwrap_or("")) }
                    " " code { (c["object"].as_str().unwrap_or("")) } }
            } }
        }
        @if !tables.is_empty() {
            table { thead { tr { th { "Table" } th { "Inserted" } th { "Updated" } th { "Deleted" } } }
                tbody { @for t in tables {
                    tr { td { code { (t["table"].as_str().unwrap_or("")) } }
                         td { (t["inserted"]) } td { (t["updated"]) } td { (t["deleted"]) } }
                } } }
        }
        @for w in s["warnings"].as_array().unwrap_or(&empty) { p.flash.error { (w.as_str().unwrap_or("")) } }
    }
}

fn preview(p: &Value) -> Markup {
    let empty = Vec::new();
    html! {
        @if let Some(e) = p.get("error") {
            p.flash.error { "The dry run refused: " (e["message"].as_str().unwrap_or("")) }
        } @else {
            p { (p["conflicts"]) " conflicts, " (p["statements"]) " statements." }
            @let gates = p["gates"].as_array().unwrap_or(&empty);
            @if gates.is_empty() { p.muted { "No gates on this source." } } @else {
                table { thead { tr { th { "Gate" } th { "On" } th { "Passed" } th { "Detail" } } }
                    tbody { @for g in gates {
                        tr { td { (g["gate"].as_str().unwrap_or("")) } td { (g["on"].as_str().unwrap_or("")) }
                             td class={ "status " (if g["passed"].as_bool() == Some(true) { "approved" } else { "failed" }) } {
                                 (if g["passed"].as_bool() == Some(true) { "yes" } else { "no" }) }
                             td { (g["detail"].as_str().unwrap_or("")) } }
                    } } }
            }
            @for w in p["warnings"].as_array().unwrap_or(&empty) { p.flash.error { (w.as_str().unwrap_or("")) } }
        }
    }
}

fn rehearsal(r: &Value) -> Markup {
    let empty = Vec::new();
    html! {
        p { "Verdict: " strong { (r["verdict"].as_str().unwrap_or("?")) } }
        @for why in r["reasons"].as_array().unwrap_or(&empty) { p.flash.error { (why.as_str().unwrap_or("")) } }
        div.scroll { table {
            thead { tr { th { "Statement" } th { "Outcome" } th { "ms" } th { "Locks" } } }
            tbody { @for s in r["statements"].as_array().unwrap_or(&empty) {
                tr { td.sql { (s["sql"].as_str().unwrap_or("")) }
                     td { (s["outcome"].as_str().unwrap_or("")) @if let Some(m) = s["error"]["message"].as_str() { ": " (m) } }
                     td { (s["ms"]) }
                     td { @for l in s["locks"].as_array().unwrap_or(&empty) {
                         (l["mode"].as_str().unwrap_or("")) " on " (l["relation"].as_str().unwrap_or("")) br; } } }
            } }
        } }
        @let lints = r["lints"].as_array().unwrap_or(&empty);
        @if !lints.is_empty() {
            details { summary { (lints.len()) " lint findings" } pre { (pretty(&r["lints"])) } }
        }
    }
}

/// `POST /promotions/{id}/{approve|reject}`: admin only (the engine
/// refuses an agent, whatever the page showed it).
pub async fn decide(
    State(web): State<Web>,
    Path((id, action)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let viewer = &posted.viewer;
    let back = format!("/promotions/{id}");
    let what = format!("POST /promotions/{id}/{action}");
    let reason = posted.field("reason").map(str::to_string);
    let result = web
        .audited(viewer, what, &id, async {
            let n: i64 = id.parse().map_err(|_| unknown(&id))?;
            match (action.as_str(), reason) {
                ("approve", _) => web
                    .engine(viewer, move |e| e.promotion_approve(n))
                    .await
                    .map(|(row, _)| {
                        format!(
                            "Request #{} {}: the source has the branch's changes.",
                            row.id, row.status
                        )
                    }),
                ("reject", Some(reason)) => web
                    .engine(viewer, move |e| e.promotion_reject(n, &reason))
                    .await
                    .map(|row| format!("Request #{} rejected.", row.id)),
                ("reject", None) => Err(ApiError::bad_request(
                    "say why you reject it: the agent reads the reason",
                )),
                (other, _) => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no promotion action '{other}': approve or reject"),
                )),
            }
        })
        .await;
    // An agent's attempt is refused with the engine's status (403), not
    // only a message on the next page.
    if let Err(e) = &result
        && e.status == StatusCode::FORBIDDEN
    {
        return page::error(viewer, Nav::Promotions, e.clone());
    }
    web.after(viewer, &back, result)
}
