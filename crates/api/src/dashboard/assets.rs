//! The stylesheet and script, compiled into the binary: the dashboard
//! needs no build step, no CDN and no font from elsewhere.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Where the stylesheet is served.
pub const CSS_PATH: &str = "/assets/app.css";
/// Where the script is served.
pub const JS_PATH: &str = "/assets/app.js";

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// `GET /assets/{file}`: public (the sign-in page needs them too).
pub async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            // Revalidated on every load: a new binary's assets show at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
