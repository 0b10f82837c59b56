//! The dashboard web page at `/` (issue 9): plain HTML, CSS and JavaScript modules embedded in
//! the binary (no build step, no network). The page talks only to this server's `/v1` API and
//! checks inclusion proofs itself (`dashboard/blake3.js`, WebCrypto Ed25519).

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const BLAKE3_JS: &str = include_str!("dashboard/blake3.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// The page's own policy: its scripts, styles and API calls come from this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

fn file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// GET /
pub(crate) async fn index() -> Response {
    file(INDEX_HTML, "text/html; charset=utf-8")
}

/// GET /assets/{file}
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => file(APP_JS, "text/javascript; charset=utf-8"),
        "blake3.js" => file(BLAKE3_JS, "text/javascript; charset=utf-8"),
        "app.css" => file(APP_CSS, "text/css; charset=utf-8"),
        _ => Problem::not_found(format!("no dashboard asset {name}")).into_response(),
    }
}
