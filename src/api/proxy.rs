//! Any node answers any request: one for a sandbox another node holds is checked here
//! (the caller's key, once) and forwarded to that node, signed as a hop; a create goes
//! to the node the service places it on. Requests that arrive as a hop are served here,
//! never sent on again.

use super::auth::Tenant;
use super::{ApiError, AppState};
use crate::cluster::forward::ForwardError;
use crate::cluster::hop::{self, Hop};
use crate::domain::CreateSandboxRequest;
use crate::sandbox::{Ask, Route, SandboxError};
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// What a request is, for routing.
#[derive(Debug, PartialEq)]
enum Target {
    /// `POST /v1/sandboxes`.
    Create,
    /// Anything under `/v1/sandboxes/{id}`, with the id as the router decodes it.
    Sandbox(String),
    /// A Modal-compatible route, whose body names the session (and so the sandbox).
    Compat,
}

fn target(method: &Method, path: &str) -> Option<Target> {
    if let Some(route) = path.strip_prefix("/compat/modal/") {
        let known = ["execute", "write_file", "read_file", "list_files"].contains(&route);
        return (known && method == Method::POST).then_some(Target::Compat);
    }
    let rest = path.strip_prefix("/v1/sandboxes")?;
    if rest.is_empty() || rest == "/" {
        return (method == Method::POST).then_some(Target::Create);
    }
    let id = rest.strip_prefix('/')?.split('/').next()?;
    (!id.is_empty()).then(|| Target::Sandbox(percent_decoded(id)))
}

/// `raw` with its `%XX` escapes decoded, as the router's `Path` sees it (an id spelled
/// with escapes names the same sandbox, and must be routed the same way).
fn percent_decoded(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some((node, secret)) = state.service.hop_identity() else {
        return next.run(request).await;
    };
    if request.headers().contains_key(hop::AUTH_HEADER) {
        return next.run(request).await;
    }
    let path = request.uri().path().to_string();
    let Some(target) = target(request.method(), &path) else {
        return next.run(request).await;
    };
    // The caller's key is checked here, once; a refusal is the handler's to give.
    let (mut parts, body) = request.into_parts();
    let Ok(Tenant(tenant)) = Tenant::from_request_parts(&mut parts, &state).await else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let key_hash = parts
        .extensions
        .get::<super::auth::KeyHash>()
        .map(|k| k.0.clone())
        .unwrap_or_default();
    let mut create = None;
    let (route, request) = match target {
        Target::Sandbox(raw) => {
            let request = Request::from_parts(parts, body);
            let Ok(id) = super::parse_id(&raw) else {
                return next.run(request).await;
            };
            match state.service.route_for(&tenant, &id).await {
                Ok(route) => (route, request),
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
        Target::Create => {
            let (request, bytes) = match buffered(parts, body, &state).await {
                Ok(read) => read,
                Err(refused) => return refused,
            };
            // A body that does not parse is the handler's to refuse.
            let Ok(asked) = serde_json::from_slice::<CreateSandboxRequest>(&bytes) else {
                return next.run(request).await;
            };
            let defaults = &state.service.config().defaults;
            let ask = Ask {
                cpu: asked.cpu.unwrap_or(defaults.cpu),
                memory_mb: asked.memory_mb.unwrap_or(defaults.memory_mb),
            };
            let (node, volume) = (asked.node.as_deref(), asked.volume.as_deref());
            match state.service.place(&tenant, node, volume, ask, &[]).await {
                Ok(route) => {
                    // Placed by load (no node or volume named): another node may take it.
                    if node.is_none() && volume.is_none() {
                        create = Some((ask, bytes));
                    }
                    (route, request)
                }
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
        Target::Compat => {
            let (request, bytes) = match buffered(parts, body, &state).await {
                Ok(read) => read,
                Err(refused) => return refused,
            };
            // Without a session (a one-shot `execute`), or a body that does not parse (the
            // handler refuses it), it is served here.
            let session = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("sessionId")?.as_str().map(str::to_owned));
            let Some(session) = session else {
                return next.run(request).await;
            };
            match state.service.session_route(&tenant, &session).await {
                Ok(route) => (route, request),
                // An invalid session id is the handler's to refuse.
                Err(SandboxError::Invalid(_)) => return next.run(request).await,
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
    };
    let Route::There {
        node: owner,
        address,
    } = route
    else {
        return next.run(request).await;
    };
    let tenant_name = tenant.to_string();
    let sign = |method: &Method, path: &str, to: &str| {
        let at = chrono::Utc::now().timestamp();
        let hop = Hop::new(&node, to, &tenant_name, &key_hash);
        let auth = hop::sign(&secret, at, &hop, method.as_str(), path);
        [
            (hop::AUTH_HEADER, auth),
            (hop::TENANT_HEADER, tenant_name.clone()),
            (hop::KEY_HASH_HEADER, key_hash.clone()),
        ]
        .into_iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).ok()?,
            ))
        })
        .collect()
    };
    state.metrics.forwarded();
    let Some((ask, bytes)) = create else {
        return answer(
            state
                .forwarder
                .forward(&owner, &address, request, sign)
                .await,
        );
    };
    // A create placed by load goes to the next node when one cannot be reached (its
    // heartbeat not yet lapsed): nothing of it reached that node.
    let (head, _) = request.into_parts();
    let copy = |bytes: &bytes::Bytes| {
        let mut request = Request::new(Body::from(bytes.clone()));
        *request.method_mut() = head.method.clone();
        *request.uri_mut() = head.uri.clone();
        *request.headers_mut() = head.headers.clone();
        request
    };
    let mut avoid = Vec::new();
    let (mut owner, mut address) = (owner, address);
    loop {
        match state
            .forwarder
            .forward(&owner, &address, copy(&bytes), &sign)
            .await
        {
            Err(e @ (ForwardError::Unreachable { .. } | ForwardError::BadAddress { .. }))
                if avoid.len() + 1 < MAX_CREATE_TRIES =>
            {
                tracing::warn!(node = %owner, error = %e, "a create goes to another node");
                avoid.push(owner);
            }
            other => return answer(other),
        }
        match state.service.place(&tenant, None, None, ask, &avoid).await {
            Ok(Route::There { node, address: at }) => (owner, address) = (node, at),
            Ok(Route::Here) => return next.run(Request::from_parts(head, Body::from(bytes))).await,
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
}

/// The request with its JSON body read whole (bounded as the handlers bound it), and
/// the body's bytes; or the refusal of an oversize body.
async fn buffered(
    parts: axum::http::request::Parts,
    body: Body,
    state: &AppState,
) -> Result<(Request, bytes::Bytes), Response> {
    let bytes = super::json::read_bytes(&parts.headers, body, state)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((Request::from_parts(parts, Body::from(bytes.clone())), bytes))
}

/// Nodes a create placed by load is sent to at most, each unreachable but the last.
const MAX_CREATE_TRIES: usize = 3;

/// The owner's answer, or why there was none.
fn answer(forwarded: Result<Response, ForwardError>) -> Response {
    match forwarded {
        Ok(response) => response,
        Err(e) => ApiError::from(SandboxError::NodeUnavailable(e.to_string())).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_and_sandbox_routes_are_routed_and_the_rest_is_served_here() {
        assert_eq!(target(&Method::POST, "/v1/sandboxes"), Some(Target::Create));
        assert_eq!(target(&Method::GET, "/v1/sandboxes"), None);
        let sandbox = |id: &str| Some(Target::Sandbox(id.to_string()));
        assert_eq!(target(&Method::GET, "/v1/sandboxes/sb-1"), sandbox("sb-1"));
        assert_eq!(
            target(&Method::POST, "/v1/sandboxes/sb-1/exec/stream"),
            sandbox("sb-1")
        );
        // Escapes name the same sandbox (the router decodes them too).
        assert_eq!(
            target(&Method::DELETE, "/v1/sandboxes/%73b%2D1"),
            sandbox("sb-1")
        );
        assert_eq!(target(&Method::GET, "/v1/sandboxes/sb%2"), sandbox("sb%2"));
        assert_eq!(target(&Method::GET, "/v1/sandboxesx"), None);
        assert_eq!(target(&Method::GET, "/v1/snapshots/snap-1"), None);
        assert_eq!(target(&Method::GET, "/v1/events"), None);
        // The Modal-compatible routes, found by the session in their bodies.
        for route in ["execute", "write_file", "read_file", "list_files"] {
            let path = format!("/compat/modal/{route}");
            assert_eq!(target(&Method::POST, &path), Some(Target::Compat));
            assert_eq!(target(&Method::GET, &path), None);
        }
        assert_eq!(target(&Method::POST, "/compat/modal/other"), None);
    }
}
