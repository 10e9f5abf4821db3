//! `ApiError`: the one place where errors become HTTP. 4xx carry user-safe messages; 5xx
//! carry a generic message while the real cause is logged with the request id.

use crate::agent::AgentError;
use crate::docker::DockerError;
use crate::images::ImageError;
use crate::sandbox::SandboxError;
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_runtime::wire::ErrorBody;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The real cause of a 5xx, logged by the request-id layer, never sent.
    pub detail: Option<String>,
    /// Why a sandbox stopped under a request (`idle`, `timeout`, `deleted`, ...).
    pub reason: Option<String>,
    /// Extra response headers (`Retry-After`, `Content-Range`).
    pub headers: Vec<(axum::http::HeaderName, String)>,
    /// The same request may succeed later (`"retryable": true` in the body).
    pub retryable: bool,
}

/// Response extension carrying a 5xx cause to the logging layer.
#[derive(Clone, Debug)]
pub struct ErrorDetail(pub String);

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            reason: None,
            headers: Vec::new(),
            retryable: false,
        }
    }
    /// 429 `busy`: a concurrency budget is full; retry after a second.
    pub fn busy(m: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", m);
        e.headers
            .push((axum::http::header::RETRY_AFTER, "1".into()));
        e.retryable = true;
        e
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    /// 403 `forbidden`: the request may not do this (a browser Origin not allowed).
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m)
    }
    pub fn unprocessable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", m)
    }
    pub fn quota(m: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", m)
    }
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )
    }
    /// 503 `unavailable`, retryable: Docker, the database or the archive store are
    /// down for now; retry after a couple of seconds.
    pub fn unavailable(m: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        ApiError {
            detail: Some(cause.to_string()),
            retryable: true,
            headers: vec![(axum::http::header::RETRY_AFTER, "2".into())],
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
        }
    }
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError {
            detail: Some(cause.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log for this request id",
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = ErrorBody::new(self.code, self.message);
        body.error.reason = self.reason;
        body.error.retryable = self.retryable;
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        if let Some(detail) = self.detail {
            response.extensions_mut().insert(ErrorDetail(detail));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                ApiError::unavailable("the database is unavailable; retry shortly", e)
            }
            StoreError::Missing(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Fenced { .. } => ApiError::conflict(format!(
                "{e}; this node no longer holds it: retry, and the request goes to its new node"
            )),
            other => ApiError::internal(other),
        }
    }
}

impl From<DockerError> for ApiError {
    fn from(e: DockerError) -> Self {
        match e {
            DockerError::Unreachable(_) | DockerError::Timeout { .. } => {
                ApiError::unavailable("the Docker engine is unavailable; retry shortly", e)
            }
            // Whatever the client named was checked before Docker saw it: a Docker 404 or
            // 409 here is berth's or the engine's, not the client's, and its text stays in
            // the log.
            DockerError::Conflict { .. } => ApiError {
                detail: Some(e.to_string()),
                ..ApiError::conflict(
                    "the Docker engine is busy with a conflicting operation on this sandbox; retry shortly",
                )
            },
            other => ApiError::internal(other),
        }
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Rejected {
                status,
                code: _,
                message,
                content_range,
            } => {
                let status_code =
                    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                match status_code.as_u16() {
                    400 => ApiError::invalid(message),
                    403 => ApiError::forbidden(message),
                    404 => ApiError::not_found(message),
                    409 => ApiError::conflict(message),
                    413 => ApiError::too_large(message),
                    416 => {
                        let mut e = ApiError::new(
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            "invalid_range",
                            message,
                        );
                        if let Some(range) = content_range {
                            e.headers.push((axum::http::header::CONTENT_RANGE, range));
                        }
                        e
                    }
                    422 => ApiError::unprocessable(message),
                    _ => ApiError::internal(format!("agent answered {status}: {message}")),
                }
            }
            AgentError::TooLarge(n) => {
                ApiError::too_large(format!("the sandbox's answer exceeded {n} bytes"))
            }
            AgentError::Timeout(d) => {
                ApiError::unavailable(format!("the sandbox did not answer within {d:?}"), e)
            }
            AgentError::Unreachable(_) => {
                ApiError::unavailable("the sandbox's agent is unreachable; retry shortly", e)
            }
            AgentError::Protocol(_) => ApiError::internal(e),
        }
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::UnknownImage(_) => ApiError::not_found(e.to_string()),
            ImageError::BuilderUnavailable { .. } => {
                ApiError::unavailable(e.to_string(), "image builder unavailable")
            }
            ImageError::BuildFailed { .. } => {
                ApiError::unavailable(e.to_string(), "image build failed")
            }
            ImageError::Docker(d) => d.into(),
        }
    }
}

impl From<SandboxError> for ApiError {
    fn from(e: SandboxError) -> Self {
        match e {
            SandboxError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            SandboxError::Conflict(m) => ApiError::conflict(m),
            SandboxError::Invalid(m) => ApiError::invalid(m),
            SandboxError::Quota(m) => ApiError::quota(m),
            SandboxError::Forbidden(m) => ApiError::forbidden(m),
            SandboxError::Image(i) => i.into(),
            SandboxError::Docker(d) => d.into(),
            SandboxError::Store(s) => s.into(),
            SandboxError::Agent(a) => a.into(),
            SandboxError::StartFailed(m) => {
                ApiError::unavailable(format!("sandbox failed to start: {m}"), m.clone())
            }
            SandboxError::TooLarge(m) => ApiError::too_large(m),
            SandboxError::Unprocessable(m) => ApiError::unprocessable(m),
            SandboxError::Internal(m) => ApiError::internal(m),
            SandboxError::Disk(d) => {
                ApiError::unavailable("the sandbox's disk could not be prepared; retry shortly", d)
            }
            SandboxError::Archive(m) => {
                ApiError::unavailable("the archive store is unavailable; retry shortly", m)
            }
            SandboxError::ClusterDown(m) => ApiError::unavailable(
                "redis is unavailable: what needs the cluster's other nodes waits for it; retry shortly",
                m,
            ),
            SandboxError::NodeUnavailable(m) => ApiError {
                retryable: true,
                headers: vec![(axum::http::header::RETRY_AFTER, "2".into())],
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node_unavailable", m)
            },
            SandboxError::ArchiveDenied(m) => ApiError {
                detail: Some(m),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "archive_denied",
                    "the archive store refused berth's credentials: the operator must set \
                     [archive] access_key_id and secret_access_key, or AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, to a key the store accepts",
                )
            },
            SandboxError::Busy(m) => ApiError::busy(format!("{m}; retry shortly")),
            SandboxError::Stopped { id, reason } => {
                let message = SandboxError::Stopped {
                    id,
                    reason: reason.clone(),
                }
                .to_string();
                let mut api = ApiError::new(StatusCode::CONFLICT, "sandbox_stopped", message);
                api.reason = Some(reason);
                api
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_refusals_keep_the_daemons_words_in_the_log_not_in_the_answer() {
        let conflict = ApiError::from(DockerError::Conflict {
            operation: "container create",
            message:
                "Conflict. The container name \"/berth-sb-x\" is already in use by container 3f2a"
                    .into(),
        });
        assert_eq!(conflict.status, StatusCode::CONFLICT);
        assert!(!conflict.message.contains("3f2a"), "{}", conflict.message);
        assert!(
            conflict.detail.unwrap().contains("3f2a"),
            "the cause is logged"
        );
        // A Docker 404 on berth's own objects is berth's fault, not a missing resource.
        let missing = ApiError::from(DockerError::NotFound {
            what: "container berth-sb-x".into(),
        });
        assert_eq!(missing.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!missing.message.contains("berth-sb-x"));
    }

    #[test]
    fn a_stop_under_a_request_names_its_reason() {
        let e = ApiError::from(SandboxError::Stopped {
            id: "sb-x".into(),
            reason: "idle".into(),
        });
        assert_eq!(
            (e.status, e.code),
            (StatusCode::CONFLICT, "sandbox_stopped")
        );
        assert_eq!(e.reason.as_deref(), Some("idle"));
        assert!(e.message.contains("stopped: idle"));
    }
}
