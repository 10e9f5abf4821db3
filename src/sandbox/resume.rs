//! Resuming a stopped sandbox: a new container on the same volume, so every file is
//! still there; lifetime restarts.

use super::{EventKind, SandboxError, SandboxService};
use crate::domain::{Sandbox, SandboxId, SandboxState, TenantId};
use chrono::Utc;
use std::sync::Arc;

impl SandboxService {
    /// Resumes a sandbox; idempotent on one that is running. Runs to the end even if the
    /// caller goes away.
    pub async fn resume(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
    ) -> Result<Sandbox, SandboxError> {
        let sandbox = self.get(tenant, id).await?;
        self.here_or_refuse(&sandbox)?;
        let (this, tenant, id) = (self.clone(), tenant.clone(), id.clone());
        super::detached(async move { this.resume_now(&tenant, &id).await }).await
    }

    async fn resume_now(&self, tenant: &TenantId, id: &SandboxId) -> Result<Sandbox, SandboxError> {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let mut sandbox = self.get(tenant, id).await?;
        if sandbox.state == SandboxState::Running {
            return Ok(sandbox);
        }
        sandbox
            .state
            .check_transition(SandboxState::Running)
            .map_err(|e| {
                SandboxError::Conflict(format!(
                    "{e}: sandbox {id} cannot be resumed (create a new one)"
                ))
            })?;
        // The image may have been rebuilt or removed since; resolve it again.
        sandbox.image_ref = self.images.resolve(&sandbox.image).await?;
        let archive = sandbox.archive.clone();
        // A reader goes first (an archived sandbox's takes the volume it restored with it).
        self.remove_reader(id).await?;
        if sandbox.state == SandboxState::Archived {
            // Its files come back out of the archive into a new volume.
            self.unarchive(&mut sandbox).await?;
        } else if sandbox.state == SandboxState::Lost {
            // Its node is gone: here, from its newest snapshot (taken over), or on the
            // volume this node kept.
            self.bring_back_lost(&mut sandbox).await?;
        } else {
            if !self.docker.volume_exists(sandbox.volume.as_str()).await? {
                return Err(SandboxError::Conflict(format!(
                    "the volume {} of sandbox {id} no longer exists; it cannot be resumed",
                    sandbox.volume
                )));
            }
            self.bring_up(&sandbox).await?;
        }
        crate::crash::point("resume.after_container");
        let now = Utc::now();
        sandbox.started_at = Some(now);
        sandbox.last_activity_at = Some(now);
        sandbox.stopped_at = None;
        sandbox.expires_at = Some(now + chrono::Duration::seconds(sandbox.limits.timeout_s as i64));
        sandbox.archive = None;
        self.transition(&mut sandbox, SandboxState::Running, None)
            .await?;
        crate::crash::point("resume.after_record");
        if let Some(archive) = archive {
            self.drop_archive(&archive).await;
        }
        self.activity.touch(id);
        self.emit(EventKind::Resumed, &sandbox);
        Ok(sandbox)
    }
}
