//! Modal-compatible endpoints under `/compat/modal/`: the payloads and answers of the web
//! endpoints of a Modal executor app, so switching is a URL change plus the
//! `Authorization` header. A `sessionId` is one sandbox of the tenant (see
//! `sandbox::sessions`). `execute` arrives with run-tests.

use super::json::ApiJson;
use super::{ApiError, AppState, Tenant};
use crate::agent::bytes_body;
use crate::sandbox::AgentReply;
use axum::extract::State;
use axum::Json;
use berth_runtime::wire::{FileKind, FileList};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The template a session's sandbox is created from.
const SESSION_IMAGE: &str = "python";
/// Largest file `read_file` returns (its answer is one JSON string).
const MAX_READ_BYTES: usize = 16 * 1024 * 1024;
/// Largest listing `list_files` reads.
const MAX_LIST_BYTES: usize = 64 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteFile {
    session_id: String,
    path: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadFile {
    session_id: String,
    path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListFiles {
    session_id: String,
    #[serde(default)]
    path: Option<String>,
}

#[derive(Serialize)]
pub struct ListedFile {
    name: String,
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
}

/// Reads a sandbox's answer whole, up to `max` bytes.
async fn collect(reply: AgentReply, max: usize) -> Result<bytes::Bytes, ApiError> {
    match Limited::new(reply.body, max).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large(format!(
                "the answer is larger than {max} bytes; use the /v1 file routes"
            )))
        }
        Err(e) => Err(ApiError::unavailable(
            "the sandbox's answer broke off; retry",
            e,
        )),
    }
}

pub async fn write_file(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    ApiJson(req): ApiJson<WriteFile>,
) -> Result<Json<Value>, ApiError> {
    let service = &state.service;
    let sandbox = service
        .session_sandbox(&tenant, &req.session_id, SESSION_IMAGE)
        .await?;
    let body = bytes_body(req.content.into_bytes());
    service
        .write_file(&tenant, &sandbox.id, &req.path, None, body)
        .await?;
    Ok(Json(json!({"success": true, "path": req.path})))
}

pub async fn read_file(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    ApiJson(req): ApiJson<ReadFile>,
) -> Result<Json<Value>, ApiError> {
    let service = &state.service;
    let sandbox = service
        .session_sandbox(&tenant, &req.session_id, SESSION_IMAGE)
        .await?;
    let reply = service
        .read_file(&tenant, &sandbox.id, &req.path, None)
        .await?;
    let bytes = collect(reply, MAX_READ_BYTES).await?;
    Ok(Json(json!({"content": String::from_utf8_lossy(&bytes)})))
}

pub async fn list_files(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    ApiJson(req): ApiJson<ListFiles>,
) -> Result<Json<Value>, ApiError> {
    let service = &state.service;
    let sandbox = service
        .session_sandbox(&tenant, &req.session_id, SESSION_IMAGE)
        .await?;
    let path = req.path.as_deref().filter(|p| !p.is_empty()).unwrap_or(".");
    let reply = service.list_files(&tenant, &sandbox.id, path, 1).await?;
    let bytes = collect(reply, MAX_LIST_BYTES).await?;
    let list: FileList = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::unavailable("the sandbox sent a malformed listing; retry", e))?;
    let files: Vec<ListedFile> = list
        .entries
        .into_iter()
        .map(|e| ListedFile {
            name: e.path.rsplit('/').next().unwrap_or(&e.path).to_string(),
            kind: match e.kind {
                FileKind::Dir => "directory",
                FileKind::File => "file",
                FileKind::Symlink => "symlink",
                FileKind::Other => "other",
            },
            size: e.size,
            path: e.path,
        })
        .collect();
    Ok(Json(json!({ "files": files })))
}
