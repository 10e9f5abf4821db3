//! Exec routes: buffered, streamed (NDJSON), background processes, run-tests. Thin: parse,
//! call the sandbox service, pass its answer on.

use super::json::ApiJson;
use super::{parse_id, relay, ApiError, AppState, Tenant};
use crate::sandbox::ExecReply;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_runtime::wire::{ExecRequest, KillRequest};

pub async fn exec(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match state.service.exec(&tenant, &id, req).await? {
        ExecReply::Started(started) => Ok(Json(started).into_response()),
        ExecReply::Finished {
            reply,
            timed_out,
            duration_ms,
        } => {
            state.metrics.observe_exec(duration_ms, timed_out);
            Ok(relay(*reply))
        }
    }
}

pub async fn exec_stream(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    Ok(relay(state.service.exec_stream(&tenant, &id, req).await?))
}

pub async fn list_processes(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    Ok(relay(state.service.processes(&tenant, &id).await?))
}

fn parse_pid(raw: &str) -> Result<u32, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("process {raw} not found")))
}

pub async fn process_output(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((id, pid)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let pid = parse_pid(&pid)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Follow {
        #[serde(default)]
        follow: bool,
    }
    let follow: Follow = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    Ok(relay(
        state
            .service
            .process_output(&tenant, &id, pid, follow.follow)
            .await?,
    ))
}

pub async fn kill_process(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((id, pid)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let pid = parse_pid(&pid)?;
    let bytes = axum::body::to_bytes(body, 4096)
        .await
        .map_err(|_| ApiError::too_large("kill body too large"))?;
    let request: KillRequest = if bytes.is_empty() {
        KillRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?
    };
    state
        .service
        .kill_process(&tenant, &id, pid, request)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn run_tests(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<crate::domain::evaluation::RunTestsRequest>,
) -> Result<Json<crate::domain::evaluation::RunTestsReport>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.service.run_tests(&tenant, &id, req).await?))
}
