//! The page shell (navigation, messages) and the small pieces every page
//! uses: forms that post an action with the CSRF token, sizes and ages.

use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::Viewer;
use crate::error::ApiError;

/// A one-time message an action leaves for the next page.
#[derive(Debug, Clone)]
pub struct Flash {
    /// Whether it reports success.
    pub ok: bool,
    /// What happened.
    pub text: String,
}

impl Flash {
    /// A success.
    pub fn ok(text: impl Into<String>) -> Flash {
        Flash {
            ok: true,
            text: text.into(),
        }
    }

    /// A failure.
    pub fn error(text: impl Into<String>) -> Flash {
        Flash {
            ok: false,
            text: text.into(),
        }
    }
}

/// The section a page belongs to, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Branches,
    Promotions,
    Sources,
    Agents,
    Audit,
}

const SECTIONS: &[(Nav, &str, &str)] = &[
    (Nav::Branches, "/", "Branches"),
    (Nav::Promotions, "/promotions", "Promotions"),
    (Nav::Sources, "/sources", "Sources"),
    (Nav::Agents, "/agents", "Agents"),
    (Nav::Audit, "/audit", "Audit"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · pgfork" }
            link rel="stylesheet" href=(super::assets::CSS_PATH);
            script src=(super::assets::JS_PATH) defer {}
        }
    }
}

/// A page of the dashboard for `viewer`, in section `nav`.
pub fn render(viewer: &Viewer, nav: Nav, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/" { "pgfork" }
                    nav {
                        @for (section, href, label) in SECTIONS {
                            a href=(href) class=[(*section == nav).then_some("active")] { (label) }
                        }
                    }
                    span #whoami { (viewer.actor.label()) }
                    form #logout method="post" action="/logout" {
                        (csrf(viewer))
                        button.link type="submit" { "Sign out" }
                    }
                }
                main {
                    @if let Some(f) = &viewer.flash { (flash(f)) }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page without navigation (signing in, refusals before a session).
pub fn bare(status: StatusCode, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                main {
                    h1 { "pgfork · " (title) }
                    (body)
                }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

/// A page saying what an engine call refused, with the API's status.
pub fn error(viewer: &Viewer, nav: Nav, e: ApiError) -> Response {
    let mut response = render(
        viewer,
        nav,
        "Error",
        html! {
            h1 { "Not possible" }
            p.flash.error { (e.message) }
            p { a href="/" { "Back to the branches" } }
        },
    );
    *response.status_mut() = e.status;
    response
}

/// A message box.
pub fn flash(f: &Flash) -> Markup {
    html! {
        p class=(if f.ok { "flash ok" } else { "flash error" }) role="status" { (f.text) }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A form that posts to `action` with one button; `back` is where to go
/// after it.
pub fn button(viewer: &Viewer, action: &str, class: &str, label: &str, back: &str) -> Markup {
    html! {
        form class={ "inline " (class) } method="post" action=(action) {
            (csrf(viewer))
            input type="hidden" name="back" value=(back);
            button type="submit" { (label) }
        }
    }
}

/// A size for people: `1.5 MiB`.
pub use pgfork_pool::space::human_bytes as bytes;

/// A duration for people, to the largest unit or two: `3h 12m`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    let two = |big: u64, unit: &str, small: u64, sub: &str| match small {
        0 => format!("{big}{unit}"),
        _ => format!("{big}{unit} {small}{sub}"),
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => two(s / 3600, "h", s % 3600 / 60, "m"),
        _ => two(s / 86400, "d", s % 86400 / 3600, "h"),
    }
}

fn parse(rfc3339: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(rfc3339).ok()
}

/// How long ago an RFC 3339 time was: `5m ago`.
pub fn ago(rfc3339: &str) -> String {
    match parse(rfc3339).and_then(|t| SystemTime::now().duration_since(t).ok()) {
        Some(d) => format!("{} ago", span(d)),
        None => rfc3339.to_string(),
    }
}

/// How long until an RFC 3339 time: `2h 5m`, or `expired`.
pub fn until(rfc3339: &str) -> String {
    match parse(rfc3339).map(|t| t.duration_since(SystemTime::now())) {
        Some(Ok(d)) => span(d),
        Some(Err(_)) => "expired".into(),
        None => rfc3339.to_string(),
    }
}

/// Unix milliseconds as RFC 3339 (seconds).
pub fn at_ms(ms: i64) -> String {
    at_secs(ms.div_euclid(1000))
}

/// Unix seconds as RFC 3339.
pub use pgfork_engine::view::timestamp as at_secs;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_spans_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(span(Duration::from_secs(59)), "59s");
        assert_eq!(span(Duration::from_secs(3 * 3600 + 720)), "3h 12m");
        assert_eq!(span(Duration::from_secs(2 * 86400 + 3600)), "2d 1h");
        assert_eq!(span(Duration::from_secs(86400)), "1d");
        assert_eq!(until("1970-01-01T00:00:00Z"), "expired");
        assert_eq!(ago("not a time"), "not a time");
    }
}
