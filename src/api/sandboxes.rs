//! Sandbox lifecycle routes: create (idempotent with `Idempotency-Key`), get, list, stop,
//! resume, delete, patch.

use super::json::ApiJson;
use super::views::{SandboxList, SandboxView};
use super::{parse_id, ApiError, AppState, Tenant};
use crate::domain::{CreateSandboxRequest, LabelFilter, PatchSandbox, SandboxState};
use crate::sandbox::Idempotency;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateSandboxRequest>,
) -> Result<Response, ApiError> {
    let service = &state.service;
    if let Some(node) = &request.node {
        service.check_node_hint(node)?;
    }
    let parsed = request
        .clone()
        .parse(service.config())
        .map_err(|e| ApiError::invalid(e.0))?;
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned));
    let key = match key {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 255 => Some(k),
        Some(_) => {
            return Err(ApiError::invalid(
                "Idempotency-Key must be 1-255 visible ASCII characters",
            ))
        }
    };
    // Hash the parsed request, so formatting differences do not count as a different body.
    let idempotency = match key {
        None => None,
        Some(key) => {
            let canonical = serde_json::to_vec(&request).map_err(ApiError::internal)?;
            Some(Idempotency {
                key,
                body_hash: hex::encode(Sha256::digest(&canonical)),
            })
        }
    };
    let sandbox = service.create(&tenant, parsed, idempotency).await?;
    Ok((StatusCode::CREATED, Json(SandboxView::from(sandbox))).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, ApiError> {
    let id = parse_id(&id)?;
    let sandbox = state.service.get(&tenant, &id).await?;
    let usage = state.service.usage(&sandbox).await;
    Ok(Json(SandboxView::new(sandbox, usage)))
}

pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RawQuery(query): RawQuery,
) -> Result<Json<SandboxList>, ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    let mut wanted_state = None;
    let mut labels = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            "state" => {
                wanted_state = Some(SandboxState::parse(&value).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "unknown state {value:?}; one of creating, running, stopped, terminated, failed, archived"
                    ))
                })?)
            }
            "label" => labels.push(LabelFilter::parse(&value)),
            other => return Err(ApiError::invalid(format!("unknown query parameter {other:?} (use state= and label=k=v)"))),
        }
    }
    let sandboxes = state.service.list(&tenant, wanted_state, &labels).await?;
    Ok(Json(SandboxList {
        sandboxes: sandboxes.into_iter().map(SandboxView::from).collect(),
    }))
}

pub async fn stop(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.service.stop(&tenant, &id).await?.into()))
}

pub async fn resume(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.service.resume(&tenant, &id).await?.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(default)]
    keep_volume: bool,
}

pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<SandboxView>, ApiError> {
    let id = parse_id(&id)?;
    let q: DeleteQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    Ok(Json(
        state
            .service
            .delete(&tenant, &id, q.keep_volume)
            .await?
            .into(),
    ))
}

pub async fn patch(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<PatchSandbox>,
) -> Result<Json<SandboxView>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.service.patch(&tenant, &id, patch).await?.into()))
}
