//! Deleting a sandbox: container gone, state `terminated`, and its volume removed unless
//! the caller keeps it (a volume the caller brought is never removed here).

use super::{EventKind, SandboxError, SandboxService};
use crate::domain::{Sandbox, SandboxId, SandboxState, TenantId};
use chrono::Utc;
use std::sync::Arc;

impl SandboxService {
    /// Deletes a sandbox; runs to the end even if the caller goes away.
    pub async fn delete(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        keep_volume: bool,
    ) -> Result<Sandbox, SandboxError> {
        let sandbox = self.get(tenant, id).await?;
        self.here_or_refuse(&sandbox)?;
        let (this, tenant, id) = (self.clone(), tenant.clone(), id.clone());
        super::detached(async move { this.delete_now(&tenant, &id, keep_volume).await }).await
    }

    async fn delete_now(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
        keep_volume: bool,
    ) -> Result<Sandbox, SandboxError> {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let mut sandbox = self.get(tenant, id).await?;
        // An archived sandbox's files are its archive: kept as a snapshot of the tenant's
        // with `keep_volume` (made one before the record changes, so no crash loses it;
        // its retention counts from now), dropped otherwise.
        let archive = sandbox.archive.clone();
        if let (Some(archive), true) = (&archive, keep_volume) {
            if let Some(mut kept) = self.store.get_snapshot(archive).await? {
                kept.kind = crate::domain::SnapshotKind::Snapshot;
                kept.label = Some(format!("archive of deleted sandbox {id}"));
                kept.created_at = Utc::now();
                self.store.update_snapshot(&kept).await?;
            }
        }
        if sandbox.state != SandboxState::Terminated {
            self.bring_down(&sandbox).await?;
            crate::crash::point("delete.after_container");
            self.activity.forget(id);
            sandbox.stopped_at = sandbox.stopped_at.or(Some(Utc::now()));
            sandbox.volume_kept = keep_volume;
            sandbox.archive = None;
            self.transition(
                &mut sandbox,
                SandboxState::Terminated,
                Some("deleted".into()),
            )
            .await?;
            crate::crash::point("delete.after_record");
            self.emit(EventKind::Terminated, &sandbox);
        }
        self.remove_reader(id).await?;
        if let Some(archive) = archive {
            if !keep_volume {
                self.drop_archive(&archive).await;
            }
            return Ok(sandbox);
        }
        if !keep_volume && sandbox.owns_volume {
            let others = self.store.list_sandboxes(Some(tenant), None).await?;
            let still_used = others.iter().any(|s| {
                s.id != sandbox.id
                    && s.volume == sandbox.volume
                    && s.state != SandboxState::Terminated
            });
            if !still_used {
                self.remove_volume_record(&sandbox.volume).await?;
            }
        }
        Ok(sandbox)
    }
}
