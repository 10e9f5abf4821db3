//! Forwarding a request to the node that holds its sandbox: the request streams there
//! and the answer streams back (bodies, SSE, and upgraded connections such as terminal
//! WebSockets, copied both ways once the owner answers 101), plain requests over
//! connections kept alive per node. The caller's key never
//! travels: `Authorization` and a `?token=` are dropped, and the hop is signed instead.

use axum::body::Body;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;

/// Connecting to the owner and its handshake take at most this long.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("node {node} advertises {address:?}, which is not http://host:port")]
    BadAddress { node: String, address: String },
    /// No connection: nothing of the request reached the node (another may take it).
    #[error("node {node} at {address} cannot be reached: {message}")]
    Unreachable {
        node: String,
        address: String,
        message: String,
    },
    /// Connected, but the exchange broke off: the node may have acted on the request.
    #[error("node {node} at {address} broke off the request: {message}")]
    BrokeOff {
        node: String,
        address: String,
        message: String,
    },
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), and
/// the ones the hop sets itself: never copied from the client.
const DROPPED: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "authorization",
    super::hop::AUTH_HEADER,
    super::hop::TENANT_HEADER,
    super::hop::KEY_HASH_HEADER,
];

/// The request's path and query as it goes on: without a `token` query parameter (a
/// browser's key on a WebSocket upgrade).
pub fn onward_path(uri: &hyper::Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_string();
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    if !pairs.iter().any(|(k, _)| k == "token") {
        return format!("{path}?{query}");
    }
    let kept: Vec<_> = pairs.into_iter().filter(|(k, _)| k != "token").collect();
    match serde_urlencoded::to_string(&kept) {
        Ok(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_string(),
    }
}

/// The client's headers that go on to the owner.
pub fn onward_headers(headers: &HeaderMap, upgrading: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.as_str();
        if DROPPED.contains(&lower) {
            continue;
        }
        if (lower == "connection" || lower == "upgrade") && !upgrading {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Idle connections to a node kept this long for the next forwarded request.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// Idle connections kept per node.
const IDLE_PER_NODE: usize = 32;

/// Sends requests on to their owners: plain ones over a pool of kept-alive connections
/// per node (a hop then costs no TCP handshake), upgrades (terminals) each on a
/// connection of their own that becomes theirs.
pub struct Forwarder {
    pool: Client<HttpConnector, Body>,
}

impl Default for Forwarder {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_DEADLINE));
        let pool = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_FOR)
            .pool_max_idle_per_host(IDLE_PER_NODE)
            // Without a timer, idle connections are only dropped when next looked at.
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Forwarder { pool }
    }
}

impl Forwarder {
    /// Sends `request` to `node` at `address` (its advertised `http://host:port`) with the
    /// hop's own headers, which `sign` makes from the method, the onward path and the
    /// node's name. The answer comes back as the owner gave it.
    pub async fn forward(
        &self,
        node: &str,
        address: &str,
        mut request: Request<Body>,
        sign: impl FnOnce(&Method, &str, &str) -> Vec<(HeaderName, HeaderValue)>,
    ) -> Result<Response<Body>, ForwardError> {
        let authority = address
            .strip_prefix("http://")
            .map(|a| a.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| ForwardError::BadAddress {
                node: node.to_string(),
                address: address.to_string(),
            })?;
        let unreachable = |message: String| ForwardError::Unreachable {
            node: node.to_string(),
            address: address.to_string(),
            message,
        };
        let broke_off = |message: String| ForwardError::BrokeOff {
            node: node.to_string(),
            address: address.to_string(),
            message,
        };
        let upgrading = request.headers().contains_key(header::UPGRADE);
        let client_side = request
            .extensions_mut()
            .remove::<hyper::upgrade::OnUpgrade>();
        let path = onward_path(request.uri());
        let method = request.method().clone();
        let mut headers = onward_headers(request.headers(), upgrading);
        for (name, value) in sign(&method, &path, node) {
            headers.insert(name, value);
        }
        // The client's Host stays (a terminal's Origin is checked against it); a request
        // without one names the owner.
        if !headers.contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(authority) {
                headers.insert(header::HOST, host);
            }
        }
        let (mut parts, body) = request.into_parts();
        parts.headers = headers;
        if !upgrading {
            parts.uri = format!("http://{authority}{path}")
                .parse()
                .map_err(|e: hyper::http::uri::InvalidUri| unreachable(e.to_string()))?;
            return match self.pool.request(Request::from_parts(parts, body)).await {
                Ok(response) => Ok(response.map(Body::new)),
                // Not connected: nothing of the request went out.
                Err(e) if e.is_connect() => Err(unreachable(error_chain(&e))),
                Err(e) => Err(broke_off(error_chain(&e))),
            };
        }
        parts.uri = path
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| unreachable(e.to_string()))?;
        let mut sender = tokio::time::timeout(CONNECT_DEADLINE, async {
            let stream = tokio::net::TcpStream::connect(authority)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(async move {
                let _ = connection.with_upgrades().await;
            });
            Ok::<_, ForwardError>(sender)
        })
        .await
        .map_err(|_| unreachable(format!("no connection within {CONNECT_DEADLINE:?}")))??;
        let mut response = sender
            .send_request(Request::from_parts(parts, body))
            .await
            .map_err(|e| broke_off(e.to_string()))?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(response.map(Body::new));
        }
        // Upgraded: the owner's end and the client's, joined once both are ready.
        let owner_side = hyper::upgrade::on(&mut response);
        let mut answer = Response::new(Body::empty());
        *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *answer.headers_mut() = response.headers().clone();
        let Some(client_side) = client_side else {
            return Err(broke_off(
                "the owner upgraded a connection the client cannot".into(),
            ));
        };
        tokio::spawn(async move {
            let (Ok(owner), Ok(client)) = tokio::join!(owner_side, client_side) else {
                return;
            };
            let (mut owner, mut client) = (TokioIo::new(owner), TokioIo::new(client));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut owner).await;
        });
        Ok(answer)
    }
}

/// An error with its causes (the pool's own message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_key_never_goes_on() {
        let uri: hyper::Uri = "/v1/sandboxes/x/terminal?session=a&token=sk-secret&cols=80"
            .parse()
            .unwrap();
        assert_eq!(
            onward_path(&uri),
            "/v1/sandboxes/x/terminal?session=a&cols=80"
        );
        let uri: hyper::Uri = "/v1/sandboxes/x/terminal?token=sk".parse().unwrap();
        assert_eq!(onward_path(&uri), "/v1/sandboxes/x/terminal");
        let uri: hyper::Uri = "/v1/sandboxes/x/files?path=a%20b".parse().unwrap();
        assert_eq!(onward_path(&uri), "/v1/sandboxes/x/files?path=a%20b");

        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer sk-secret".parse().unwrap());
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers.insert(header::CONNECTION, "upgrade".parse().unwrap());
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        headers.insert(super::super::hop::TENANT_HEADER, "forged".parse().unwrap());
        headers.insert("idempotency-key", "k1".parse().unwrap());
        let plain = onward_headers(&headers, false);
        assert!(plain.get(header::AUTHORIZATION).is_none());
        assert!(plain.get(super::super::hop::TENANT_HEADER).is_none());
        assert!(plain.get(header::UPGRADE).is_none());
        assert_eq!(plain["idempotency-key"], "k1");
        assert_eq!(plain[header::CONTENT_TYPE], "application/json");
        let upgrade = onward_headers(&headers, true);
        assert_eq!(upgrade[header::UPGRADE], "websocket");
        assert!(upgrade.get(header::AUTHORIZATION).is_none());
    }
}
