//! `ApiJson<T>`: a JSON body read under the configured size limit (and the server-wide
//! budget of bodies being read, and a deadline) and parsed with a 400 that says what is
//! wrong (unknown fields included), instead of axum's defaults.

use super::{ApiError, AppState};
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

pub struct ApiJson<T>(pub T);

/// Like [`ApiJson`], but an empty body is `T::default()` (for routes whose body is
/// optional, such as a snapshot's label).
pub struct ApiJsonOrDefault<T>(pub T);

/// The longest a client may take to send a JSON body.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match read(req, state).await? {
            Some(value) => Ok(ApiJson(value)),
            None => Err(ApiError::invalid("a JSON body is required")),
        }
    }
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for ApiJsonOrDefault<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ApiJsonOrDefault(
            read(req, state).await?.unwrap_or_default(),
        ))
    }
}

/// The body parsed, or `None` when it is empty.
async fn read<T: DeserializeOwned>(req: Request, state: &AppState) -> Result<Option<T>, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_bytes(&parts.headers, body, state).await?;
    if bytes.is_empty() {
        return Ok(None);
    }
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    Ok(Some(value))
}

/// A JSON body's bytes, read whole within `max_json_bytes` and the server's budget.
pub(crate) async fn read_bytes(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    state: &AppState,
) -> Result<bytes::Bytes, ApiError> {
    {
        let limit = state.service.config().limits.max_json_bytes;
        let declared = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::too_large(format!(
                "JSON body larger than {limit} bytes"
            )));
        }
        let _room = state.bodies.try_take(declared)?;
        let read = tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, limit));
        let bytes = read
            .await
            .map_err(|_| {
                ApiError::invalid(format!(
                    "the request body did not arrive within {}s",
                    BODY_DEADLINE.as_secs()
                ))
            })?
            .map_err(|_| ApiError::too_large(format!("JSON body larger than {limit} bytes")))?;
        Ok(bytes)
    }
}
