//! `serve --notify-url URL`: a POST to URL for each new promotion request,
//! so that a person hears one is waiting. Retried with backoff; a URL that
//! never answers costs a warning per request, nothing more.

use std::time::Duration;

use pgfork_pool::meta::{Meta, PromotionRow};
use serde_json::json;

use crate::state::Shared;

/// How often new requests are looked for.
const POLL: Duration = Duration::from_secs(2);
/// Attempts per event, the first included; the waits between them double.
const ATTEMPTS: u32 = 6;
const FIRST_WAIT: Duration = Duration::from_millis(500);

/// The URL without what may be secret in it (user, password, query).
fn shown(url: &reqwest::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

/// Checks `url` before the daemon starts.
pub fn parse(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("--notify-url is not a URL ({e}): give http://host:port/path"))?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "--notify-url must be an http:// URL, not {}: pgfork has no TLS client built in, so for an \
             https endpoint run a local relay (e.g. a reverse proxy on 127.0.0.1) and point it there",
            parsed.scheme()
        ));
    }
    Ok(parsed)
}

/// The open requests, read from meta.db directly (this runs every few
/// seconds: no engine, no reconcile).
async fn requests(shared: &Shared) -> Vec<PromotionRow> {
    let path = shared.home.meta_db();
    tokio::task::spawn_blocking(move || {
        let meta = Meta::open(&path, false).ok()?;
        PromotionRow::list(meta.conn(), Some("open")).ok()
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// Announces each promotion request made from now on.
pub async fn run(shared: Shared, url: reqwest::Url) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("notifications off: {e}");
            return;
        }
    };
    let mut seen = requests(&shared)
        .await
        .iter()
        .map(|r| r.id)
        .max()
        .unwrap_or(0);
    loop {
        tokio::time::sleep(POLL).await;
        let since = seen;
        for row in requests(&shared).await.into_iter().filter(|r| r.id > since) {
            seen = seen.max(row.id);
            tokio::spawn(deliver(client.clone(), url.clone(), row));
        }
    }
}

async fn deliver(client: reqwest::Client, url: reqwest::Url, row: PromotionRow) {
    let event = json!({
        "event": "promotion_requested",
        "request": row,
        "approve": format!("pgfork approvals approve {}", row.id),
        "reject": format!("pgfork approvals reject {} --reason TEXT", row.id),
    });
    let mut wait = FIRST_WAIT;
    for attempt in 1..=ATTEMPTS {
        match client.post(url.clone()).json(&event).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::debug!(status = %r.status(), attempt, "notification refused"),
            Err(e) => tracing::debug!(error = %e.without_url(), attempt, "notification failed"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::warn!(
        "could not tell {} about promotion request {} after {ATTEMPTS} attempts: `pgfork approvals list` shows it",
        shown(&url),
        row.id
    );
}
