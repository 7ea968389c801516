//! Sources (`/sources`): each one's mode, replication lag or last refresh,
//! masking rules in force, snapshot schedule, and snapshots with the
//! branches made from them.

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};
use pgfork_engine::view::{SnapshotInfo, SourceInfo};

use super::Web;
use super::page::{self, Nav};
use super::session::Viewer;

struct Shown {
    info: SourceInfo,
    snapshots: Vec<SnapshotInfo>,
    rules: Option<String>,
}

/// `GET /sources`.
pub async fn page(State(web): State<Web>, viewer: Viewer) -> Response {
    let admin = viewer.is_admin();
    let shown = web
        .engine(&viewer, move |e| {
            e.source_list()?
                .into_iter()
                .map(|info| {
                    Ok(Shown {
                        snapshots: e.snapshot_list(Some(&info.name))?,
                        rules: if admin {
                            e.source_mask_rules(&info.name)?
                        } else {
                            None
                        },
                        info,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
    let shown = match shown {
        Ok(s) => s,
        Err(e) => return page::error(&viewer, Nav::Sources, e),
    };
    let body = html! {
        h1 { "Sources" }
        div #sources data-live {
            @for s in &shown { (source(s)) }
            @if shown.is_empty() { p.muted { "No sources: " code { "pgfork source create NAME" } } }
        }
    };
    page::render(&viewer, Nav::Sources, "Sources", body)
}

fn every(secs: i64) -> String {
    page::span(std::time::Duration::from_secs(secs.max(0) as u64))
}

fn source(s: &Shown) -> Markup {
    let i = &s.info;
    html! {
        section.card.source data-source=(i.name) {
            h2 { (i.name) " " span class={ "status " (i.status) } { (i.status) } }
            dl.kv {
                dt { "Mode" } dd { (i.mode) ", PostgreSQL " (i.pg_major) }
                @if let Some(lag) = &i.lag {
                    dt { "Replication" } dd {
                        (lag.receiver.as_deref().unwrap_or("no receiver"))
                        @if let Some(b) = lag.bytes { ", " (page::bytes(b.max(0) as u64)) " behind" }
                        @if let Some(d) = lag.replay_delay_seconds { ", replay " (format!("{d:.1}")) " s behind" }
                    }
                }
                @if let Some(r) = &i.remote {
                    dt { "Refresh" } dd {
                        @match &r.refreshed_at { Some(at) => { "last " (page::ago(at)) }, None => { "never" } }
                        @if let Some(every_s) = r.refresh_every { ", every " (every(every_s)) }
                        @if let Some(e) = &r.refresh_error { br; span.flash.error { (e) } }
                    }
                }
                dt { "Snapshots" } dd {
                    @match i.snapshot_schedule {
                        Some((every_s, keep)) => { "every " (every(every_s)) ", keeping " (keep) }
                        None => { "on demand" }
                    }
                }
                dt { "Masking" } dd { (i.masking) }
            }
            @if let Some(rules) = &s.rules {
                details { summary { "Masking rules in force" } pre.sql { (rules) } }
            }
            div.scroll { table.snapshots {
                thead { tr { th { "Snapshot" } th { "Taken" } th { "How" } th { "Status" } th { "Branches" } } }
                tbody {
                    @for snap in &s.snapshots {
                        tr data-snapshot=(snap.id) {
                            td { (snap.id) }
                            td { (page::ago(&snap.created_at)) }
                            td { (snap.method.as_deref().unwrap_or("")) }
                            td { (snap.status) }
                            td { @for b in &snap.branches { a href={ "/branches/" (b) } { (b) } " " } }
                        }
                    }
                    @if s.snapshots.is_empty() { tr { td colspan="5" .muted { "No snapshots yet." } } }
                }
            } }
        }
    }
}
