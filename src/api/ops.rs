//! Operations routes (no auth): liveness, readiness, metrics, the OpenAPI document, and
//! the JSON answers for unknown routes and methods.

use super::{ApiError, AppState};
use crate::domain::SandboxState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let docker = state.service.docker().ping().await;
    let database = state.service.store().ping().await;
    let body = json!({
        "docker": docker.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string()),
        "database": database.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string()),
    });
    let status = if docker.is_ok() && database.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let all = state
        .service
        .store()
        .list_sandboxes(None, None)
        .await
        .unwrap_or_default();
    let counts: Vec<(&str, u64)> = SandboxState::ALL
        .iter()
        .map(|s| {
            (
                s.as_str(),
                all.iter().filter(|x| x.state == *s).count() as u64,
            )
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&counts),
    )
        .into_response()
}

pub async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi::document())
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see GET /openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
