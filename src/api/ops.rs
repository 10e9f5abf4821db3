//! Operations routes (no auth): liveness, readiness, metrics, the OpenAPI document, and
//! the JSON answers for unknown routes and methods.

use super::{ApiError, AppState};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Docker and the database reachable? The causes of a failure go to the log, not to the
/// (unauthenticated) caller.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let docker = state.service.docker_ready().await;
    let database = state.service.database_ready().await;
    if let Err(e) = &docker {
        tracing::warn!(error = %e, "readiness: Docker unreachable");
    }
    if let Err(e) = &database {
        tracing::warn!(error = %e, "readiness: database unreachable");
    }
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let draining = state.service.shutting_down();
    let body = json!({ "docker": word(docker.is_ok()), "database": word(database.is_ok()),
        "server": if draining { "shutting down" } else { "ok" } });
    let status = if docker.is_ok() && database.is_ok() && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text from counters kept on change: no store query per scrape.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let counts = state.service.state_counts();
    let in_flight = state.service.requests_in_flight();
    let (figures, adopted, missed) = state.service.pool_figures();
    let pool = super::metrics::PoolView {
        figures,
        adopted,
        missed,
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&counts, in_flight, &pool),
    )
        .into_response()
}

pub async fn openapi(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(super::openapi::document(state.service.config()))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see GET /openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
