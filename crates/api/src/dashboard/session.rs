//! Signing in: an API token exchanged once for a session cookie
//! (`HttpOnly`, `SameSite=Strict`), and a CSRF token per session that every
//! form must send back.
//!
//! Sessions live in the daemon's memory and keep only the token's SHA-256,
//! resolved again on every request through the API's token check: a
//! revoked or rotated token ends its sessions within a second. A restart
//! signs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use pgfork_engine::Actor;

use super::Web;
use super::page::{self, Flash};

/// The session cookie.
const COOKIE: &str = "pgfork_session";
/// The sign-in form's own CSRF cookie (there is no session yet).
const LOGIN_COOKIE: &str = "pgfork_login";
/// How long a session lasts, however busy.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; past it the oldest go (signing in many times
/// only signs out the earliest).
const MAX_SESSIONS: usize = 4096;
/// Header the live-update script sends: such a request does not consume
/// the one-time message an action left.
pub const LIVE_HEADER: &str = "x-pgfork-live";

struct Session {
    token_hash: String,
    csrf: String,
    began: Instant,
    flash: Option<Flash>,
}

/// The signed-in sessions of one daemon.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// A random value for a cookie or a CSRF token: 192 bits from the OS's
/// generator, in the alphabet of pgfork's passwords.
fn random_value() -> String {
    format!(
        "{}{}",
        pgfork_pg::sql::random_password(),
        pgfork_pg::sql::random_password()
    )
}

/// Equality whose time does not depend on where the values differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session for the token with hash `token_hash`; its id.
    fn begin(&self, token_hash: String) -> String {
        let mut map = self.lock();
        map.retain(|_, s| s.began.elapsed() < LIFETIME);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.began)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let id = random_value();
        map.insert(
            id.clone(),
            Session {
                token_hash,
                csrf: random_value(),
                began: Instant::now(),
                flash: None,
            },
        );
        id
    }

    /// The token hash and CSRF token of a live session.
    fn get(&self, id: &str) -> Option<(String, String)> {
        let mut map = self.lock();
        let s = map.get(id)?;
        if s.began.elapsed() >= LIFETIME {
            map.remove(id);
            return None;
        }
        Some((s.token_hash.clone(), s.csrf.clone()))
    }

    fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, id: &str, flash: Flash) {
        if let Some(s) = self.lock().get_mut(id) {
            s.flash = Some(flash);
        }
    }

    fn take_flash(&self, id: &str) -> Option<Flash> {
        self.lock().get_mut(id).and_then(|s| s.flash.take())
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

/// Who is looking at a page: the identity behind the session's token.
#[derive(Clone)]
pub struct Viewer {
    /// The identity every engine call acts as.
    pub actor: Actor,
    /// The session's CSRF token, for the page's forms.
    pub csrf: String,
    /// The session id.
    pub session: String,
    /// The message the last action left, if any.
    pub flash: Option<Flash>,
    /// Whether this is the page script's live refresh: only the `data-live`
    /// parts of its answer are used, so costly parts elsewhere are skipped.
    pub live: bool,
}

impl Viewer {
    /// Whether an admin is looking.
    pub fn is_admin(&self) -> bool {
        matches!(self.actor, Actor::Admin(_))
    }
}

impl FromRequestParts<Web> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Viewer, Response> {
        let to_login = || Redirect::to("/login").into_response();
        let Some(id) = cookie(&parts.headers, COOKIE) else {
            return Err(to_login());
        };
        let Some((hash, csrf)) = web.sessions.get(&id) else {
            return Err(to_login());
        };
        let tokens = web.tokens.clone();
        let actor = tokio::task::spawn_blocking(move || tokens.resolve_hash(&hash))
            .await
            .ok()
            .flatten();
        let Some(actor) = actor else {
            // Revoked or rotated: the session goes with the token.
            web.sessions.end(&id);
            return Err(to_login());
        };
        let live = parts.headers.contains_key(LIVE_HEADER);
        let flash = if live {
            None
        } else {
            web.sessions.take_flash(&id)
        };
        Ok(Viewer {
            actor,
            csrf,
            session: id,
            flash,
            live,
        })
    }
}

/// A form a viewer posted, its CSRF token checked: every dashboard action
/// takes one, so none can run without the token.
pub struct Posted {
    /// Who posted it.
    pub viewer: Viewer,
    /// Its fields, `csrf` removed.
    pub fields: HashMap<String, String>,
}

impl Posted {
    /// A field, trimmed; `None` when absent or empty.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Where to go after the action: the form's `back` path, if it is one
    /// of this site's, else `fallback`.
    pub fn back(&self, fallback: &str) -> String {
        match self.fields.get("back") {
            Some(b) if b.starts_with('/') && !b.starts_with("//") && !b.contains('\\') => b.clone(),
            _ => fallback.to_string(),
        }
    }
}

fn csrf_refused() -> Response {
    page::bare(
        StatusCode::FORBIDDEN,
        "Refused",
        html! {
            p.flash.error { "Refused: this form's CSRF token is missing or wrong. Reload the page and try again." }
        },
    )
}

impl FromRequest<Web> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, web: &Web) -> Result<Posted, Response> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, web).await?;
        let req = Request::from_parts(parts, body);
        // A body that is not a form carries no CSRF token either.
        let Ok(axum::Form(pairs)) =
            axum::Form::<Vec<(String, String)>>::from_request(req, web).await
        else {
            return Err(csrf_refused());
        };
        let mut fields: HashMap<String, String> = pairs.into_iter().collect();
        match fields.remove("csrf") {
            Some(token) if same(&token, &viewer.csrf) => Ok(Posted { viewer, fields }),
            _ => Err(csrf_refused()),
        }
    }
}

/// `GET /login`: the sign-in form.
pub async fn login_page() -> Response {
    login_form(StatusCode::OK, None)
}

fn login_form(status: StatusCode, error: Option<&str>) -> Response {
    let csrf = random_value();
    let body = html! {
        form #login method="post" action="/login" {
            input type="hidden" name="csrf" value=(csrf);
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="off" required autofocus;
            p.hint { "An admin token (from " code { "pgfork init" } " or " code { "pgfork token create" }
                     "), or an agent's API token, which shows only that agent's branches and requests." }
            button type="submit" { "Sign in" }
        }
    };
    let mut response = page::bare(
        status,
        "Sign in",
        html! {
            @if let Some(e) = error { p.flash.error { (e) } }
            (body)
        },
    );
    if let Ok(v) = set_cookie(LOGIN_COOKIE, &csrf, 3600).parse() {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `POST /login`: exchanges a token for a session.
pub async fn login(State(web): State<Web>, req: Request) -> Response {
    let expected = cookie(req.headers(), LOGIN_COOKIE);
    let Ok(axum::Form(form)) = axum::Form::<HashMap<String, String>>::from_request(req, &web).await
    else {
        return login_form(StatusCode::BAD_REQUEST, Some("The form could not be read."));
    };
    // Login CSRF: the form must come from this site's own sign-in page,
    // or a page elsewhere could sign a browser in as someone else.
    match (form.get("csrf"), expected) {
        (Some(sent), Some(expected)) if same(sent, &expected) => {}
        _ => return csrf_refused(),
    }
    let token = form.get("token").map(|t| t.trim()).unwrap_or("");
    let hash = pgfork_engine::hash_api_token(token);
    let tokens = web.tokens.clone();
    let resolved = {
        let hash = hash.clone();
        tokio::task::spawn_blocking(move || tokens.resolve_hash(&hash))
            .await
            .ok()
            .flatten()
    };
    if token.is_empty() || resolved.is_none() {
        return login_form(
            StatusCode::UNAUTHORIZED,
            Some(
                "That token is not valid: it is unknown, revoked or rotated. `pgfork token list` shows the admin tokens.",
            ),
        );
    }
    let id = web.sessions.begin(hash);
    let mut response = Redirect::to("/").into_response();
    let headers = response.headers_mut();
    for c in [
        set_cookie(COOKIE, &id, LIFETIME.as_secs()),
        set_cookie(LOGIN_COOKIE, "", 0),
    ] {
        if let Ok(v) = c.parse() {
            headers.append(header::SET_COOKIE, v);
        }
    }
    response
}

/// `POST /logout`: ends the session.
pub async fn logout(State(web): State<Web>, posted: Posted) -> Response {
    web.sessions.end(&posted.viewer.session);
    let mut response = Redirect::to("/login").into_response();
    if let Ok(v) = set_cookie(COOKIE, "", 0).parse() {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "xpgfork_session=no; pgfork_session=yes".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("yes"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
    }

    #[test]
    fn sessions_end_and_flash_once() {
        let s = Sessions::default();
        let id = s.begin("h".into());
        assert_eq!(s.get(&id).unwrap().0, "h");
        s.flash(&id, Flash::ok("done"));
        assert!(s.take_flash(&id).is_some());
        assert!(s.take_flash(&id).is_none());
        s.end(&id);
        assert!(s.get(&id).is_none());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
