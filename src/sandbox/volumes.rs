//! Volumes: listing a tenant's volumes with the sandboxes that use them, and removing one
//! (refused while a live sandbox mounts it), in Docker and in the store together.

use super::{SandboxError, SandboxService};
use crate::domain::{Sandbox, SandboxState, TenantId, VolumeName};
use chrono::Utc;

impl SandboxService {
    /// Volumes of a tenant, with the sandboxes that use them.
    pub async fn volumes(&self, tenant: &TenantId) -> Result<Vec<serde_json::Value>, SandboxError> {
        let volumes = self.store.list_volumes(tenant).await?;
        let sandboxes = self.store.list_sandboxes(Some(tenant), None).await?;
        Ok(volumes
            .into_iter()
            .map(|(name, created_at)| volume_view(&name, created_at, &sandboxes))
            .collect())
    }

    pub async fn volume(
        &self,
        tenant: &TenantId,
        name: &VolumeName,
    ) -> Result<serde_json::Value, SandboxError> {
        if self.store.volume_tenant(name).await?.as_ref() != Some(tenant) {
            return Err(SandboxError::NotFound(format!("volume {name}")));
        }
        let volumes = self.store.list_volumes(tenant).await?;
        let sandboxes = self.store.list_sandboxes(Some(tenant), None).await?;
        let (name, created_at) = volumes
            .into_iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| SandboxError::NotFound(format!("volume {name}")))?;
        Ok(volume_view(&name, created_at, &sandboxes))
    }

    /// Removes a volume of the tenant; `Conflict` while a live sandbox mounts it.
    pub async fn delete_volume(
        &self,
        tenant: &TenantId,
        name: &VolumeName,
    ) -> Result<(), SandboxError> {
        if self.store.volume_tenant(name).await?.as_ref() != Some(tenant) {
            return Err(SandboxError::NotFound(format!("volume {name}")));
        }
        let users = self.store.list_sandboxes(Some(tenant), None).await?;
        if let Some(user) = users.iter().find(|s| {
            &s.volume == name && matches!(s.state, SandboxState::Running | SandboxState::Creating)
        }) {
            return Err(SandboxError::Conflict(format!(
                "volume {name} is mounted by sandbox {}; stop it first",
                user.id
            )));
        }
        for user in users.iter().filter(|s| &s.volume == name) {
            let lock = self.lock_for(&user.id);
            let _held = lock.lock().await;
            self.remove_reader(&user.id).await?;
        }
        self.docker.remove_volume(name.as_str()).await?;
        self.store.delete_volume(name).await?;
        Ok(())
    }

    /// Removes a volume from Docker, then its record.
    pub(super) async fn remove_volume_record(&self, name: &VolumeName) -> Result<(), SandboxError> {
        self.docker.remove_volume(name.as_str()).await?;
        self.store.delete_volume(name).await?;
        Ok(())
    }
}

fn volume_view(
    name: &VolumeName,
    created_at: chrono::DateTime<Utc>,
    sandboxes: &[Sandbox],
) -> serde_json::Value {
    let users: Vec<&str> = sandboxes
        .iter()
        .filter(|s| &s.volume == name && s.state != SandboxState::Terminated)
        .map(|s| s.id.as_str())
        .collect();
    let mounted = sandboxes
        .iter()
        .any(|s| &s.volume == name && s.state == SandboxState::Running);
    serde_json::json!({ "name": name, "created_at": created_at, "sandboxes": users, "mounted": mounted })
}
