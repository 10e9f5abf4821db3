//! File and archive routes. Paths go to the agent unchanged (it resolves them inside the
//! container); uploads are counted on the way and refused with 413 past the limit, before
//! anything is buffered; downloads are streamed through with an idle bound.

use super::json::ApiJson;
use super::{agent_failure as failure, parse_id, query_string, ApiError, AppState, Tenant};
use crate::agent::{empty_body, AgentBody, BoundedBody};
use crate::sandbox::Access;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_runtime::wire::{
    EditRequest, EditResult, FileList, GlobRequest, GlobResult, GrepRequest, GrepResult,
};
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Method;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SHORT: Duration = Duration::from_secs(60);
/// A download or upload may pause this long between chunks.
const TRANSFER_IDLE: Duration = Duration::from_secs(120);
/// The longest an upload may take in all.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(3600);
/// Largest JSON answer of list/glob/grep.
const MAX_LISTING_BYTES: usize = 64 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQuery {
    path: Option<String>,
    mode: Option<String>,
    recursive: Option<bool>,
    depth: Option<usize>,
}

fn parse_query(raw: Option<String>) -> Result<FileQuery, ApiError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))
}

fn required_path(q: &FileQuery) -> Result<&str, ApiError> {
    match q.path.as_deref() {
        Some(p) if !p.is_empty() => Ok(p),
        _ => Err(ApiError::invalid("the `path` query parameter is required")),
    }
}

pub async fn read(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let q = parse_query(query)?;
    let path = required_path(&q)?;
    let (sandbox, agent) = state
        .service
        .agent_for(&tenant, &id, Access::ReadOnly)
        .await?;
    let mut forward = Vec::new();
    if let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        forward.push((header::RANGE, range.to_string()));
    }
    let uri = format!("/files?{}", query_string(&[("path", path)]));
    let response = match agent
        .send(Method::GET, &uri, &forward, empty_body(), SHORT)
        .await
    {
        Ok(r) => r,
        Err(e) => return Err(failure(&state, &sandbox, e).await),
    };
    let status = response.status();
    let mut out = Response::builder().status(status);
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
    ] {
        if let Some(value) = response.headers().get(&name) {
            out = out.header(name, value);
        }
    }
    let body = BoundedBody::new(response.into_body(), u64::MAX, TRANSFER_IDLE);
    out.header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::new(body))
        .map_err(ApiError::internal)
}

/// Streams a client upload to the agent, counting bytes; past `limit` the stream fails
/// and `over` is set, so the caller answers 413.
fn counted_upload(body: Body, limit: u64, over: Arc<AtomicBool>) -> AgentBody {
    let mut seen: u64 = 0;
    let stream = TryStreamExt::map_err(body.into_data_stream(), std::io::Error::other).and_then(
        move |chunk: Bytes| {
            seen += chunk.len() as u64;
            let result = if seen > limit {
                over.store(true, Ordering::SeqCst);
                Err(std::io::Error::other("upload too large"))
            } else {
                Ok(Frame::data(chunk))
            };
            std::future::ready(result)
        },
    );
    StreamBody::new(stream).boxed_unsync()
}

fn check_declared_length(headers: &HeaderMap, limit: u64) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(format!(
            "upload larger than the limit of {limit} bytes"
        )));
    }
    Ok(())
}

async fn upload(
    state: &AppState,
    tenant: &crate::domain::TenantId,
    id: &str,
    headers: &HeaderMap,
    agent_uri: impl FnOnce() -> Result<String, ApiError>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(id)?;
    let limit = state.service.config().limits.max_upload_bytes;
    check_declared_length(headers, limit)?;
    let uri = agent_uri()?;
    let (sandbox, agent) = state
        .service
        .agent_for(tenant, &id, Access::Mutating)
        .await?;
    let over = Arc::new(AtomicBool::new(false));
    let upload = counted_upload(body, limit, over.clone());
    let result = agent
        .no_content(Method::PUT, &uri, &[], upload, UPLOAD_DEADLINE)
        .await;
    if over.load(Ordering::SeqCst) {
        return Err(ApiError::too_large(format!(
            "upload larger than the limit of {limit} bytes; nothing was written"
        )));
    }
    match result {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(failure(state, &sandbox, e).await),
    }
}

pub async fn write(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let make_uri = || {
        let q = parse_query(query)?;
        let path = required_path(&q)?;
        let mut pairs = vec![("path", path)];
        if let Some(mode) = q.mode.as_deref() {
            pairs.push(("mode", mode));
        }
        Ok(format!("/files?{}", query_string(&pairs)))
    };
    upload(&state, &tenant, &id, &headers, make_uri, body).await
}

pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let q = parse_query(query)?;
    let path = required_path(&q)?;
    let recursive = if q.recursive.unwrap_or(false) {
        "true"
    } else {
        "false"
    };
    let uri = format!(
        "/files?{}",
        query_string(&[("path", path), ("recursive", recursive)])
    );
    let (sandbox, agent) = state
        .service
        .agent_for(&tenant, &id, Access::Mutating)
        .await?;
    match agent
        .no_content(Method::DELETE, &uri, &[], empty_body(), SHORT)
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(failure(&state, &sandbox, e).await),
    }
}

pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<FileList>, ApiError> {
    let id = parse_id(&id)?;
    let q = parse_query(query)?;
    let path = q.path.clone().unwrap_or_else(|| ".".into());
    let depth = q.depth.unwrap_or(1);
    if depth == 0 || depth > 64 {
        return Err(ApiError::invalid("`depth` must be between 1 and 64"));
    }
    let uri = format!(
        "/files/list?{}",
        query_string(&[("path", &path), ("depth", &depth.to_string())])
    );
    let (sandbox, agent) = state
        .service
        .agent_for(&tenant, &id, Access::ReadOnly)
        .await?;
    match agent
        .json(Method::GET, &uri, None, SHORT, MAX_LISTING_BYTES)
        .await
    {
        Ok(list) => Ok(Json(list)),
        Err(e) => Err(failure(&state, &sandbox, e).await),
    }
}

async fn json_call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    state: &AppState,
    tenant: &crate::domain::TenantId,
    id: &str,
    access: Access,
    uri: &str,
    request: &Req,
) -> Result<Resp, ApiError> {
    let id = parse_id(id)?;
    let (sandbox, agent) = state.service.agent_for(tenant, &id, access).await?;
    let body = serde_json::to_vec(request).map_err(ApiError::internal)?;
    match agent
        .json(Method::POST, uri, Some(body), SHORT, MAX_LISTING_BYTES)
        .await
    {
        Ok(r) => Ok(r),
        Err(e) => Err(failure(state, &sandbox, e).await),
    }
}

pub async fn edit(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<EditRequest>,
) -> Result<Json<EditResult>, ApiError> {
    if req.old.is_empty() {
        return Err(ApiError::invalid("`old` must not be empty"));
    }
    Ok(Json(
        json_call(&state, &tenant, &id, Access::Mutating, "/files/edit", &req).await?,
    ))
}

pub async fn glob(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<GlobRequest>,
) -> Result<Json<GlobResult>, ApiError> {
    Ok(Json(
        json_call(&state, &tenant, &id, Access::ReadOnly, "/files/glob", &req).await?,
    ))
}

pub async fn grep(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<GrepRequest>,
) -> Result<Json<GrepResult>, ApiError> {
    Ok(Json(
        json_call(&state, &tenant, &id, Access::ReadOnly, "/files/grep", &req).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveQuery {
    path: Option<String>,
}

fn archive_uri(raw: Option<String>) -> Result<String, ApiError> {
    let q: ArchiveQuery = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    let path = q
        .path
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| ".".into());
    Ok(format!("/archive?{}", query_string(&[("path", &path)])))
}

pub async fn get_archive(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let uri = archive_uri(query)?;
    let (sandbox, agent) = state
        .service
        .agent_for(&tenant, &id, Access::ReadOnly)
        .await?;
    let response = match agent
        .send(Method::GET, &uri, &[], empty_body(), SHORT)
        .await
    {
        Ok(r) => r,
        Err(e) => return Err(failure(&state, &sandbox, e).await),
    };
    let body = BoundedBody::new(response.into_body(), u64::MAX, TRANSFER_IDLE);
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::new(body),
    )
        .into_response())
}

pub async fn put_archive(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    upload(&state, &tenant, &id, &headers, || archive_uri(query), body).await
}
