//! `ApiJson<T>`: a JSON body read under the configured size limit and parsed with a 400
//! that says what is wrong (unknown fields included), instead of axum's defaults.

use super::{ApiError, AppState};
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.service.config().limits.max_json_bytes;
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::too_large(format!(
                "JSON body larger than {limit} bytes"
            )));
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ApiError::too_large(format!("JSON body larger than {limit} bytes")))?;
        if bytes.is_empty() {
            return Err(ApiError::invalid("a JSON body is required"));
        }
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
        Ok(ApiJson(value))
    }
}
