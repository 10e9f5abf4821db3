//! Modal-compatible endpoints under `/compat/modal/`: the payloads and answers of the web
//! endpoints of a Modal executor app, so switching is a URL change plus the
//! `Authorization` header. A `sessionId` is one sandbox of the tenant (see
//! `sandbox::sessions`); `execute` without one runs in a sandbox made for it and deleted.

use super::json::ApiJson;
use super::{ApiError, AppState, Tenant};
use crate::agent::{bytes_body, read_limited, AgentError};
use crate::sandbox::AgentReply;
use axum::extract::State;
use axum::Json;
use berth_runtime::wire::{FileKind, FileList};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The template a session's sandbox is created from: `node`, which has Node.js, TypeScript
/// and python3, so one session runs all three languages. A one-shot `execute` (no
/// `sessionId`) uses its language's own template.
const SESSION_IMAGE: &str = "node";
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
    read_limited(reply.body, max).await.map_err(|e| match e {
        AgentError::TooLarge(_) => ApiError::too_large(format!(
            "the answer is larger than {max} bytes; use the /v1 file routes"
        )),
        other => ApiError::unavailable("the sandbox's answer broke off; retry", other),
    })
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Execute {
    code: String,
    test_cases: Vec<ModalCase>,
    #[serde(default = "python")]
    language: String,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    entrypoint: Option<String>,
    #[serde(default)]
    timeout: Option<f64>,
}

fn python() -> String {
    "python".into()
}

/// A Modal test case: the same fields as a run-tests case.
type ModalCase = crate::domain::evaluation::TestCase;

/// `execute`: the cases run against `code` in the session's sandbox, or in a fresh one
/// that is deleted afterwards. `success` is true when every case passed; durations are
/// milliseconds.
pub async fn execute(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    ApiJson(req): ApiJson<Execute>,
) -> Result<Json<Value>, ApiError> {
    use crate::domain::evaluation::RunTestsRequest;
    let service = &state.service;
    let request = RunTestsRequest {
        language: req.language,
        code: Some(req.code),
        path: None,
        entrypoint: req.entrypoint,
        test_cases: req.test_cases,
        timeout_s: req.timeout,
    };
    // Refuse a bad request before any sandbox is made for it.
    request.check().map_err(ApiError::invalid)?;
    let report = match req.session_id {
        Some(session) => {
            let sandbox = service
                .session_sandbox(&tenant, &session, SESSION_IMAGE)
                .await?;
            service.run_tests(&tenant, &sandbox.id, request).await?
        }
        None => service.run_tests_once(&tenant, request).await?,
    };
    let results: Vec<Value> = report
        .results
        .iter()
        .map(|r| {
            let hidden = r.stdout.is_none();
            json!({"name": r.name, "passed": r.passed,
                   "output": r.stdout.clone().unwrap_or_default(),
                   "error": r.error, "duration": r.duration_ms, "hidden": hidden})
        })
        .collect();
    Ok(Json(json!({
        "success": report.passed == report.total,
        "testResults": results,
        "passedTests": report.passed,
        "totalTests": report.total,
        "executionTime": report.duration_ms,
    })))
}
