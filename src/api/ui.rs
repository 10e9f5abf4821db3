//! The built-in browser terminal: `GET /ui/terminal/{id}` and its assets. No key is
//! needed for the page itself (it holds nothing secret); its script takes the key from
//! the URL fragment and opens the terminal WebSocket with it.

use super::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Everything the page loads comes from this server; it may not be framed.
/// (xterm.js injects its theme as a style element, so styles may be inline; scripts not.)
const POLICY: &str =
    "default-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'";

fn asset(kind: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let mut response = Response::new(body.into());
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub async fn page(State(state): State<AppState>) -> Response {
    let (ready, html) = state.ui.page().await;
    let mut response = asset("text/html; charset=utf-8", html);
    if !ready {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", crate::ui::SCRIPT)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", crate::ui::STYLE)
}

pub async fn xterm(State(state): State<AppState>) -> Response {
    match state.ui.xterm().await {
        Ok(bundle) => asset("text/javascript; charset=utf-8", bundle.as_ref().clone()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

pub async fn xterm_css(State(state): State<AppState>) -> Response {
    match state.ui.xterm_css().await {
        Ok(css) => asset("text/css; charset=utf-8", css),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}
