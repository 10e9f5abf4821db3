//! Every response carries `x-request-id` (the client's, if it sent a sane one); 5xx
//! causes are logged here once, with that id; request counts feed the metrics.

use super::error::ErrorDetail;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = request.method().clone();
    let route = route_label(request.uri().path());
    let started = Instant::now();
    let mut response = next.run(request).await;
    let status = response.status();
    if let Some(ErrorDetail(detail)) = response.extensions_mut().remove::<ErrorDetail>() {
        if status.is_server_error() {
            tracing::error!(request_id = %id, %method, %route, %status, cause = %detail, "request failed");
        }
    }
    state
        .metrics
        .observe_request(method.as_str(), &route, status.as_u16(), started.elapsed());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The route template of a path, for metric labels of bounded cardinality.
fn route_label(path: &str) -> String {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let known = matches!(
        segments.as_slice(),
        ["healthz"]
            | ["readyz"]
            | ["metrics"]
            | ["openapi.json"]
            | ["v1", "sandboxes", ..]
            | ["v1", "volumes", ..]
            | ["v1", "events"]
    );
    if !known || segments.len() > 6 {
        return "unmatched".into();
    }
    let mut label = String::new();
    for (i, segment) in segments.iter().enumerate() {
        label.push('/');
        let templated = match (i, segments.get(1)) {
            (2, Some(&"sandboxes")) => "{id}",
            (2, Some(&"volumes")) => "{name}",
            (4, _) if segments.get(3) == Some(&"processes") => "{pid}",
            _ => segment,
        };
        label.push_str(templated);
    }
    label
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn paths_become_route_templates() {
        assert_eq!(
            route_label("/v1/sandboxes/sb-0123456789abcdef/exec"),
            "/v1/sandboxes/{id}/exec"
        );
        assert_eq!(
            route_label("/v1/sandboxes/sb-x/processes/42/output"),
            "/v1/sandboxes/{id}/processes/{pid}/output"
        );
        assert_eq!(route_label("/v1/volumes/my-vol"), "/v1/volumes/{name}");
        assert_eq!(route_label("/healthz"), "/healthz");
        assert_eq!(route_label("/wp-admin/x"), "unmatched");
    }
}
