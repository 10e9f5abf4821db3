//! Volume routes: a tenant's volumes, one volume, deleting one (409 while mounted).

use super::views::{VolumeList, VolumeView};
use super::{ApiError, AppState, Tenant};
use crate::domain::VolumeName;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

fn parse_name(raw: &str) -> Result<VolumeName, ApiError> {
    VolumeName::parse(raw).map_err(|_| ApiError::not_found(format!("volume {raw} not found")))
}

pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<VolumeList>, ApiError> {
    let volumes = state.service.volumes(&tenant).await?;
    Ok(Json(VolumeList {
        volumes: volumes.into_iter().map(VolumeView::from).collect(),
    }))
}

pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<Json<VolumeView>, ApiError> {
    let volume = state.service.volume(&tenant, &parse_name(&name)?).await?;
    Ok(Json(volume.into()))
}

pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .delete_volume(&tenant, &parse_name(&name)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
