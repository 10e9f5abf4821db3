//! File and archive routes. Thin: parse the query, call the sandbox service (which owns
//! limits, activity and the agent), pass its answer on. Paths go to the sandbox unchanged
//! (they resolve inside the container).

use super::json::ApiJson;
use super::{parse_id, relay, ApiError, AppState, Tenant};
use crate::agent::AgentBody;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use berth_runtime::wire::{EditRequest, GlobRequest, GrepRequest};
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::Deserialize;

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

/// A client upload as a body for the agent; a declared length past the limit is refused
/// before anything is read.
fn upload_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<AgentBody, ApiError> {
    let limit = state.service.config().limits.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(format!(
            "upload larger than the limit of {limit} bytes; nothing was written"
        )));
    }
    let stream =
        TryStreamExt::map_err(body.into_data_stream(), std::io::Error::other).map_ok(Frame::data);
    Ok(StreamBody::new(stream).boxed_unsync())
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
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut reply = state.service.read_file(&tenant, &id, path, range).await?;
    reply.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(relay(reply))
}

pub async fn write(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let q = parse_query(query)?;
    let path = required_path(&q)?;
    let body = upload_body(&state, &headers, body)?;
    state
        .service
        .write_file(&tenant, &id, path, q.mode.as_deref(), body)
        .await?;
    Ok(StatusCode::NO_CONTENT)
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
    state
        .service
        .delete_file(&tenant, &id, path, q.recursive.unwrap_or(false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let q = parse_query(query)?;
    let path = q.path.as_deref().filter(|p| !p.is_empty()).unwrap_or(".");
    let depth = q.depth.unwrap_or(1);
    Ok(relay(
        state.service.list_files(&tenant, &id, path, depth).await?,
    ))
}

pub async fn stat(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let q = parse_query(query)?;
    let path = required_path(&q)?;
    Ok(relay(state.service.stat_file(&tenant, &id, path).await?))
}

pub async fn edit(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<EditRequest>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    Ok(relay(state.service.edit_file(&tenant, &id, &req).await?))
}

pub async fn glob(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<GlobRequest>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    Ok(relay(state.service.glob(&tenant, &id, &req).await?))
}

pub async fn grep(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<GrepRequest>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    Ok(relay(state.service.grep(&tenant, &id, &req).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveQuery {
    path: Option<String>,
}

fn archive_path(raw: Option<String>) -> Result<String, ApiError> {
    let q: ArchiveQuery = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    Ok(q.path
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| ".".into()))
}

pub async fn get_archive(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let path = archive_path(query)?;
    let mut reply = state.service.get_archive(&tenant, &id, &path).await?;
    reply.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-tar"),
    );
    Ok(relay(reply))
}

pub async fn put_archive(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let path = archive_path(query)?;
    let body = upload_body(&state, &headers, body)?;
    state.service.put_archive(&tenant, &id, &path, body).await?;
    Ok(StatusCode::NO_CONTENT)
}
