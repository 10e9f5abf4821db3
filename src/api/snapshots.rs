//! Snapshot routes: take one of a sandbox, list, get, delete, and read a file (or a
//! directory's listing) out of one without starting anything. Thin: the sandbox service
//! does the work.

use super::json::ApiJsonOrDefault;
use super::{parse_id, ApiError, AppState, Tenant};
use crate::domain::{Snapshot, SnapshotId};
use crate::sandbox::SnapshotRead;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    #[serde(default)]
    label: Option<String>,
}

/// A snapshot as clients see it.
#[derive(Serialize)]
pub struct SnapshotView {
    id: String,
    sandbox_id: String,
    state: &'static str,
    label: Option<String>,
    size_bytes: u64,
    sha256: Option<String>,
    created_at: String,
}

impl From<Snapshot> for SnapshotView {
    fn from(s: Snapshot) -> Self {
        SnapshotView {
            id: s.id.to_string(),
            sandbox_id: s.sandbox_id.to_string(),
            state: s.state.as_str(),
            label: s.label,
            size_bytes: s.size_bytes,
            sha256: s.sha256,
            created_at: s
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

fn parse_snapshot(raw: &str) -> Result<SnapshotId, ApiError> {
    SnapshotId::parse(raw).ok_or_else(|| ApiError::not_found(format!("snapshot {raw} not found")))
}

pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJsonOrDefault(body): ApiJsonOrDefault<CreateSnapshot>,
) -> Result<(StatusCode, Json<SnapshotView>), ApiError> {
    let id = parse_id(&id)?;
    let label = body.label;
    let snapshot = state.service.create_snapshot(&tenant, &id, label).await?;
    Ok((StatusCode::CREATED, Json(snapshot.into())))
}

pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<serde_json::Value>, ApiError> {
    let snapshots: Vec<SnapshotView> = state
        .service
        .snapshots(&tenant)
        .await?
        .into_iter()
        .map(SnapshotView::from)
        .collect();
    Ok(Json(serde_json::json!({ "snapshots": snapshots })))
}

pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<SnapshotView>, ApiError> {
    let id = parse_snapshot(&id)?;
    Ok(Json(state.service.snapshot(&tenant, &id).await?.into()))
}

pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_snapshot(&id)?;
    state.service.delete_snapshot(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesQuery {
    #[serde(default)]
    path: Option<String>,
}

/// A file's bytes, or a directory's listing, read out of an archive.
fn read_answer(read: SnapshotRead) -> Response {
    match read {
        SnapshotRead::File { size, mut body } => {
            let stream = futures_util::stream::poll_fn(move |cx| body.poll_recv(cx));
            let mut response = Response::new(Body::from_stream(stream));
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(header::CONTENT_LENGTH, size.into());
            response
        }
        SnapshotRead::Dir(list) => Json(list).into_response(),
    }
}

pub async fn files(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(q): Query<FilesQuery>,
) -> Result<Response, ApiError> {
    let id = parse_snapshot(&id)?;
    let path = q.path.as_deref().filter(|p| !p.is_empty()).unwrap_or(".");
    Ok(read_answer(
        state.service.read_snapshot(&tenant, &id, path).await?,
    ))
}
