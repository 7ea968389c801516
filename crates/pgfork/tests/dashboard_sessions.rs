//! The dashboard's sessions as a hostile client sees them over plain HTTP
//! (the browser journeys are in clients/python/tests/test_dashboard.py):
//! a token is exchanged only by a POST from the sign-in page, the cookie
//! is HttpOnly and SameSite=Strict, the cookie opens no API route, a form
//! without its CSRF token changes nothing, an agent's session acts only on
//! its own things, and rotating a token ends its sessions.

mod common;
mod daemon;

use common::*;
use daemon::{As, Serve};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

/// A browser without a cookie jar of its own: cookies are passed by hand,
/// redirects are not followed.
fn browser() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of cookie `name` a response sets.
fn set_cookie(r: &Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, value) = pair.split_once('=')?;
            (k == name).then(|| (value.to_string(), attrs.to_string()))
        })
}

/// The first hidden CSRF field on a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field on the page: {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Signs in with `token` the way the sign-in page does; the session cookie.
fn sign_in(web: &Client, url: &str, token: &str) -> String {
    let page = web.get(format!("{url}/login")).send().unwrap();
    let (login_cookie, _) = set_cookie(&page, "pgfork_login").expect("the sign-in page's cookie");
    let csrf = csrf_of(&page.text().unwrap());
    let r = web
        .post(format!("{url}/login"))
        .header(COOKIE, format!("pgfork_login={login_cookie}"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[("csrf", &csrf), ("token", token)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (session, attrs) = set_cookie(&r, "pgfork_session").expect("a session cookie");
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Strict"),
        "{attrs}"
    );
    session
}

fn get(web: &Client, url: &str, path: &str, session: &str) -> Response {
    web.get(format!("{url}{path}"))
        .header(COOKIE, format!("pgfork_session={session}"))
        .send()
        .unwrap()
}

fn post(web: &Client, url: &str, path: &str, session: &str, body: &str) -> Response {
    web.post(format!("{url}{path}"))
        .header(COOKIE, format!("pgfork_session={session}"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .unwrap()
}

#[test]
fn dashboard_sessions_hold_against_a_hostile_client() {
    let h = TestHome::new(Pool::Xfs, "dashsess");
    h.create_source("shop");
    exec(
        &mut connect(&h.source_dsn("shop")),
        "CREATE TABLE items (id int PRIMARY KEY, name text)",
    );
    let serve = Serve::start(&h, &[]);
    let url = serve.url.clone();
    let web = browser();
    let agent = |name: &str| {
        let made = h.json(&[
            "agent", "create", name, "--source", "shop", "--policy", "branch",
        ]);
        made["api_token"].as_str().unwrap().to_string()
    };
    let (alice, bob) = (agent("alice"), agent("bob"));
    for (token, branch) in [(&alice, "alice-work"), (&bob, "bob-work")] {
        let who = As {
            serve: &serve,
            token: token.clone(),
        };
        let (status, b) = who.post(
            "/v1/branches",
            json!({ "name": branch, "from": "shop", "ttl": "1h" }),
        );
        assert_eq!(status, StatusCode::CREATED, "{b:#}");
    }

    // No session: every page sends the browser to sign in, the API stays
    // JSON and asks for its bearer token.
    let r = web.get(format!("{url}/")).send().unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/login");
    assert_eq!(
        web.get(format!("{url}/v1/branches"))
            .send()
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // A token in the URL signs no one in.
    let r = web
        .get(format!("{url}/login?token={}", serve.token))
        .send()
        .unwrap();
    assert!(set_cookie(&r, "pgfork_session").is_none());
    // Login CSRF: a sign-in posted from elsewhere (no sign-in page cookie)
    // is refused, even with a good token.
    let r = web
        .post(format!("{url}/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[("csrf", "x"), ("token", &serve.token)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&r, "pgfork_session").is_none());
    // A wrong token.
    let page = web.get(format!("{url}/login")).send().unwrap();
    let (lc, _) = set_cookie(&page, "pgfork_login").unwrap();
    let csrf = csrf_of(&page.text().unwrap());
    let r = web
        .post(format!("{url}/login"))
        .header(COOKIE, format!("pgfork_login={lc}"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[("csrf", &csrf), ("token", "pgf_guess")]))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A made-up session.
    let r = get(&web, &url, "/", "forged");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // The admin's session: pages carry headers that keep other sites'
    // scripts and frames out; the cookie is not a key to the API.
    let admin = sign_in(&web, &url, &serve.token);
    let r = get(&web, &url, "/", &admin);
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let page = r.text().unwrap();
    assert!(
        page.contains("data-branch=\"alice-work\"") && page.contains("data-branch=\"bob-work\"")
    );
    let admin_csrf = csrf_of(&page);
    assert_eq!(
        get(&web, &url, "/v1/branches", &admin).status(),
        StatusCode::UNAUTHORIZED
    );
    // Without the CSRF token (or with a wrong one) nothing happens.
    for body in ["", "csrf=wrong", "back=/"] {
        let r = post(&web, &url, "/branches/bob-work/delete", &admin, body);
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{body}");
        assert!(r.text().unwrap().contains("CSRF"));
    }
    assert_eq!(h.json(&["branch", "info", "bob-work"])["name"], "bob-work");

    // Alice's session sees her branch only, and acts on nothing else,
    // even with her own valid CSRF token.
    let alice_session = sign_in(&web, &url, &alice);
    let page = get(&web, &url, "/", &alice_session).text().unwrap();
    assert!(page.contains("data-branch=\"alice-work\""), "{page}");
    assert!(!page.contains("bob-work"), "{page}");
    assert_eq!(
        get(&web, &url, "/branches/bob-work", &alice_session).status(),
        StatusCode::NOT_FOUND
    );
    let alice_csrf = csrf_of(&page);
    assert_ne!(alice_csrf, admin_csrf, "each session has its own token");
    let body = form(&[("csrf", &alice_csrf), ("back", "/")]);
    post(
        &web,
        &url,
        "/branches/bob-work/delete",
        &alice_session,
        &body,
    );
    assert_eq!(h.json(&["branch", "info", "bob-work"])["name"], "bob-work");
    // ...and the admin's CSRF token is no use in her session.
    let body = form(&[("csrf", &admin_csrf)]);
    let r = post(
        &web,
        &url,
        "/branches/alice-work/stop",
        &alice_session,
        &body,
    );
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Her refused attempt is in the audit log, as interface `web`.
    let log = h.json(&["audit", "--agent", "alice"]);
    assert!(
        log.as_array().unwrap().iter().any(|r| r["policy"] == "web"
            && r["statement"] == "POST /branches/bob-work/delete"
            && r["tag"] != "ok"),
        "{log:#}"
    );

    // A redirect target is this site's own path, never another site.
    let body = form(&[("csrf", &alice_csrf), ("back", "//evil.example/")]);
    let r = post(
        &web,
        &url,
        "/branches/alice-work/stop",
        &alice_session,
        &body,
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/");

    // Rotating her credentials ends her session within a second.
    h.json(&["agent", "rotate", "alice"]);
    assert!(
        wait_until(std::time::Duration::from_secs(5), || {
            get(&web, &url, "/", &alice_session).status() == StatusCode::SEE_OTHER
        }),
        "a rotated token's session still works"
    );
    // Signing out ends the admin's.
    let r = post(
        &web,
        &url,
        "/logout",
        &admin,
        &form(&[("csrf", &admin_csrf)]),
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(get(&web, &url, "/", &admin).status(), StatusCode::SEE_OTHER);
}
