//! Exec routes: buffered, streamed (NDJSON), background processes. The request is checked
//! here against the configured ceilings, then handed to the sandbox's agent.

use super::json::ApiJson;
use super::{agent_failure, parse_id, ApiError, AppState, Tenant};
use crate::agent::{bytes_body, AgentError, BoundedBody};
use crate::sandbox::Access;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_runtime::wire::{BackgroundStarted, ExecRequest, ExecResult, KillRequest, ProcessList};
use hyper::Method;
use std::time::Duration;

/// Time the supervisor allows beyond an exec's own timeout (start-up, kill, reply).
const EXEC_GRACE: Duration = Duration::from_secs(15);
/// Deadline for small agent calls.
const SHORT: Duration = Duration::from_secs(30);

/// Checks an exec request and fills in the defaults; returns it with its timeout and cap.
fn checked(
    state: &AppState,
    mut req: ExecRequest,
) -> Result<(ExecRequest, Duration, u64), ApiError> {
    let config = state.service.config();
    req.argv().map_err(ApiError::invalid)?;
    let timeout_s = req.timeout_s.unwrap_or(config.defaults.exec_timeout_s);
    let max_timeout = config.limits.max_exec_timeout_s;
    if !(timeout_s.is_finite() && timeout_s > 0.0 && timeout_s <= max_timeout) {
        return Err(ApiError::invalid(format!(
            "`timeout_s` must be greater than 0 and at most {max_timeout}"
        )));
    }
    let cap = req
        .max_output_bytes
        .unwrap_or(config.defaults.output_cap_bytes);
    if cap > config.limits.max_output_cap_bytes {
        return Err(ApiError::invalid(format!(
            "`max_output_bytes` must be at most {}",
            config.limits.max_output_cap_bytes
        )));
    }
    if let Some(encoding) = &req.encoding {
        if encoding != "base64" && encoding != "utf-8" {
            return Err(ApiError::invalid(
                "`encoding` must be \"base64\" or \"utf-8\"",
            ));
        }
    }
    if !req.background {
        req.timeout_s = Some(timeout_s);
    }
    req.max_output_bytes = Some(cap);
    Ok((req, Duration::from_secs_f64(timeout_s), cap))
}

/// Largest JSON answer an exec with this cap can legitimately produce: both streams,
/// escaped (worst case 6 bytes a byte) and base64'd, plus slack.
fn reply_bound(cap: u64) -> usize {
    (cap.saturating_mul(2 * (6 + 2)))
        .saturating_add(64 * 1024)
        .min(1 << 31) as usize
}

/// Passes an agent's NDJSON stream on to the client, bounded in bytes and idle time.
fn ndjson_passthrough(
    response: hyper::Response<hyper::body::Incoming>,
    max_bytes: u64,
    idle: Duration,
) -> Response {
    let bounded = BoundedBody::new(response.into_body(), max_bytes, idle);
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::new(bounded),
    )
        .into_response()
}

pub async fn exec(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let (req, timeout, cap) = checked(&state, req)?;
    let (sandbox, agent) = state
        .service
        .agent_for(&tenant, &id, Access::Mutating)
        .await?;
    let body = serde_json::to_vec(&req).map_err(ApiError::internal)?;
    if req.background {
        let started: Result<BackgroundStarted, AgentError> = agent
            .json(Method::POST, "/exec", Some(body), SHORT, 4096)
            .await;
        let started = match started {
            Ok(s) => s,
            Err(e) => return Err(agent_failure(&state, &sandbox, e).await),
        };
        return Ok(Json(started).into_response());
    }
    let result: Result<ExecResult, AgentError> = agent
        .json(
            Method::POST,
            "/exec",
            Some(body),
            timeout + EXEC_GRACE,
            reply_bound(cap),
        )
        .await;
    match result {
        Ok(result) => {
            state
                .metrics
                .observe_exec(result.duration_ms, result.timed_out);
            Ok(Json(result).into_response())
        }
        Err(e) => Err(agent_failure(&state, &sandbox, e).await),
    }
}

pub async fn exec_stream(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if req.background {
        return Err(ApiError::invalid(
            "`background` is not supported on /exec/stream; use /exec",
        ));
    }
    let (req, timeout, cap) = checked(&state, req)?;
    let (sandbox, agent) = state
        .service
        .agent_for(&tenant, &id, Access::Mutating)
        .await?;
    let body = serde_json::to_vec(&req).map_err(ApiError::internal)?;
    let headers = [(header::CONTENT_TYPE, "application/json".to_string())];
    let response = match agent
        .send(
            Method::POST,
            "/exec/stream",
            &headers,
            bytes_body(body),
            SHORT,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return Err(agent_failure(&state, &sandbox, e).await),
    };
    Ok(ndjson_passthrough(
        response,
        reply_bound(cap) as u64,
        timeout + EXEC_GRACE,
    ))
}

pub async fn list_processes(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<ProcessList>, ApiError> {
    let id = parse_id(&id)?;
    let (sandbox, agent) = state
        .service
        .agent_for(&tenant, &id, Access::ReadOnly)
        .await?;
    match agent
        .json(Method::GET, "/processes", None, SHORT, 4 * 1024 * 1024)
        .await
    {
        Ok(list) => Ok(Json(list)),
        Err(e) => Err(agent_failure(&state, &sandbox, e).await),
    }
}

pub async fn process_output(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((id, pid)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let pid: u32 = pid
        .parse()
        .map_err(|_| ApiError::not_found(format!("process {pid} not found")))?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Follow {
        #[serde(default)]
        follow: bool,
    }
    let follow: Follow = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    let (sandbox, agent) = state
        .service
        .agent_for(&tenant, &id, Access::ReadOnly)
        .await?;
    let path = format!("/processes/{pid}/output?follow={}", follow.follow);
    let response = match agent
        .send(Method::GET, &path, &[], crate::agent::empty_body(), SHORT)
        .await
    {
        Ok(r) => r,
        Err(e) => return Err(agent_failure(&state, &sandbox, e).await),
    };
    // A followed process may be quiet for long; the sandbox lifetime bounds it.
    let idle = Duration::from_secs(sandbox.limits.timeout_s.max(60));
    Ok(ndjson_passthrough(response, u64::MAX, idle))
}

pub async fn kill_process(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((id, pid)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let pid: u32 = pid
        .parse()
        .map_err(|_| ApiError::not_found(format!("process {pid} not found")))?;
    let bytes = axum::body::to_bytes(body, 4096)
        .await
        .map_err(|_| ApiError::too_large("kill body too large"))?;
    let request: KillRequest = if bytes.is_empty() {
        KillRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?
    };
    let (sandbox, agent) = state
        .service
        .agent_for(&tenant, &id, Access::Mutating)
        .await?;
    let json = serde_json::to_vec(&request).map_err(ApiError::internal)?;
    let headers = [(header::CONTENT_TYPE, "application/json".to_string())];
    match agent
        .no_content(
            Method::POST,
            &format!("/processes/{pid}/kill"),
            &headers,
            bytes_body(json),
            SHORT,
        )
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(agent_failure(&state, &sandbox, e).await),
    }
}
