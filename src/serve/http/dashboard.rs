//! The live fleet dashboard at `GET /`: one HTML page, a script and a style sheet, compiled into
//! the binary (no build step, no network at run time). The page follows the WebSocket monitor
//! stream (`/ws`) and uses the REST API for an agent's details; see `docs/dashboard.md`.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../../assets/dashboard/app.js");
const STYLE: &str = include_str!("../../../assets/dashboard/app.css");

/// The page's own resources only: no inline script, no other origin, no framing. `'self'`
/// covers the WebSocket to this host.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The assets change with the binary; a browser revalidates rather than keep an old script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    r
}

pub(crate) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
