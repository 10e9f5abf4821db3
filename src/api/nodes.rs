//! `GET /v1/nodes`: the cluster's nodes alive now, with what their sandboxes reserve
//! (this node alone on a single node; 503 `retryable` while Redis is down).

use super::{ApiError, AppState, Tenant};
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

pub async fn list(
    State(state): State<AppState>,
    Tenant(_tenant): Tenant,
) -> Result<Json<Value>, ApiError> {
    let nodes = state.service.nodes().await?;
    Ok(Json(json!({ "nodes": nodes })))
}
