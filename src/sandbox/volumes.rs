//! Volumes: listing a tenant's volumes with the sandboxes that use them, and removing one
//! (refused while a live sandbox mounts it), in Docker and in the store together.

use super::{SandboxError, SandboxService};
use crate::domain::{Sandbox, SandboxId, SandboxState, TenantId, VolumeName};
use chrono::{DateTime, Utc};

/// A volume of a tenant, with the sandboxes that use it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeInfo {
    pub name: VolumeName,
    pub created_at: DateTime<Utc>,
    /// Sandboxes (not terminated) on this volume.
    pub users: Vec<SandboxId>,
    /// A running sandbox mounts it.
    pub mounted: bool,
}

impl SandboxService {
    /// Volumes of a tenant, with the sandboxes that use them.
    pub async fn volumes(&self, tenant: &TenantId) -> Result<Vec<VolumeInfo>, SandboxError> {
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
    ) -> Result<VolumeInfo, SandboxError> {
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

    /// Removes a volume of the tenant; `Conflict` while a live sandbox mounts it. Creates
    /// (which may name the volume) and every user's lifecycle operations wait meanwhile,
    /// so no resume can mount it while it goes.
    pub async fn delete_volume(
        &self,
        tenant: &TenantId,
        name: &VolumeName,
    ) -> Result<(), SandboxError> {
        if self.store.volume_tenant(name).await?.as_ref() != Some(tenant) {
            return Err(SandboxError::NotFound(format!("volume {name}")));
        }
        let _admission = self.admission.lock().await;
        let users = |all: Vec<Sandbox>| -> Vec<Sandbox> {
            all.into_iter().filter(|s| &s.volume == name).collect()
        };
        let mut ids: Vec<_> = users(self.store.list_sandboxes(Some(tenant), None).await?)
            .into_iter()
            .map(|s| s.id)
            .collect();
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let locks: Vec<_> = ids.iter().map(|id| self.lock_for(id)).collect();
        let mut _held = Vec::with_capacity(locks.len());
        for lock in &locks {
            _held.push(lock.lock().await);
        }
        // Checked again now that nothing can start or resume on it.
        let now = users(self.store.list_sandboxes(Some(tenant), None).await?);
        if let Some(user) = now
            .iter()
            .find(|s| matches!(s.state, SandboxState::Running | SandboxState::Creating))
        {
            return Err(SandboxError::Conflict(format!(
                "volume {name} is mounted by sandbox {}; stop it first",
                user.id
            )));
        }
        for user in &now {
            self.remove_reader(&user.id).await?;
        }
        self.remove_volume_record(name).await
    }

    /// Removes a volume from Docker (and its disk image), then its record.
    pub(super) async fn remove_volume_record(&self, name: &VolumeName) -> Result<(), SandboxError> {
        self.unmake_volume(name.as_str()).await?;
        self.store.delete_volume(name).await?;
        Ok(())
    }

    /// Makes a sandbox's own volume in Docker: with disk quotas, on a filesystem of
    /// `disk_mb` of its own (nothing is left of it if that fails).
    pub(super) async fn make_volume(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        let name = sandbox.volume.as_str();
        let labels = self.volume_labels(sandbox);
        let Some(disks) = &self.disks else {
            self.docker.create_volume(name, labels, None).await?;
            return Ok(());
        };
        let device = disks.create(name, sandbox.limits.disk_mb).await?;
        if let Err(e) = self.docker.create_volume(name, labels, Some(&device)).await {
            let _ = disks.remove(name).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Removes a volume from Docker, then its disk image (if it has one).
    pub(super) async fn unmake_volume(&self, name: &str) -> Result<(), SandboxError> {
        self.docker.remove_volume(name).await?;
        if let Some(disks) = &self.disks {
            disks.remove(name).await?;
        }
        Ok(())
    }
}

fn volume_view(name: &VolumeName, created_at: DateTime<Utc>, sandboxes: &[Sandbox]) -> VolumeInfo {
    let on_it = || sandboxes.iter().filter(|s| &s.volume == name);
    VolumeInfo {
        name: name.clone(),
        created_at,
        users: on_it()
            .filter(|s| s.state != SandboxState::Terminated)
            .map(|s| s.id.clone())
            .collect(),
        mounted: on_it().any(|s| s.state == SandboxState::Running),
    }
}
