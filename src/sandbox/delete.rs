//! Deleting a sandbox: container gone, state `terminated`, and its volume removed unless
//! the caller keeps it (a volume the caller brought is never removed here).

use super::{EventKind, SandboxError, SandboxService};
use crate::domain::{Sandbox, SandboxId, SandboxState, TenantId};
use chrono::Utc;

impl SandboxService {
    pub async fn delete(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
        keep_volume: bool,
    ) -> Result<Sandbox, SandboxError> {
        self.get(tenant, id).await?;
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let mut sandbox = self.get(tenant, id).await?;
        if sandbox.state != SandboxState::Terminated {
            self.bring_down(&sandbox).await?;
            self.activity.forget(id);
            sandbox.state = SandboxState::Terminated;
            sandbox.stopped_at = sandbox.stopped_at.or(Some(Utc::now()));
            sandbox.reason = Some("deleted".into());
            self.store.update_sandbox(&sandbox).await?;
            self.emit(EventKind::Terminated, &sandbox);
        }
        self.remove_reader(id).await?;
        if !keep_volume && sandbox.owns_volume {
            let others = self.store.list_sandboxes(Some(tenant), None).await?;
            let still_used = others.iter().any(|s| {
                s.id != sandbox.id
                    && s.volume == sandbox.volume
                    && s.state != SandboxState::Terminated
            });
            if !still_used {
                self.docker.remove_volume(sandbox.volume.as_str()).await?;
                self.store.delete_volume(&sandbox.volume).await?;
            }
        }
        Ok(sandbox)
    }
}
