//! Stopping a sandbox: the container goes, the volume stays, the record says why.

use super::{EventKind, SandboxError, SandboxService};
use crate::domain::{Sandbox, SandboxId, SandboxState, TenantId};
use chrono::Utc;

/// Why a sandbox stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Requested,
    Timeout,
    Idle,
}

impl StopReason {
    fn as_str(self) -> &'static str {
        match self {
            StopReason::Requested => "requested",
            StopReason::Timeout => "timeout",
            StopReason::Idle => "idle",
        }
    }
}

impl SandboxService {
    /// Stops a sandbox; idempotent on one that is already stopped.
    pub async fn stop(&self, tenant: &TenantId, id: &SandboxId) -> Result<Sandbox, SandboxError> {
        self.get(tenant, id).await?;
        self.stop_for(id, StopReason::Requested).await
    }

    pub(super) async fn stop_for(
        &self,
        id: &SandboxId,
        reason: StopReason,
    ) -> Result<Sandbox, SandboxError> {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let mut sandbox = self
            .store
            .get_sandbox(id)
            .await?
            .ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
        match sandbox.state {
            SandboxState::Running => {}
            SandboxState::Creating => {
                return Err(SandboxError::Conflict(format!(
                    "sandbox {id} is still being created"
                )));
            }
            // Already not running: nothing to do (idempotent).
            _ => return Ok(sandbox),
        }
        self.bring_down(&sandbox).await?;
        self.activity.overlay(&mut sandbox);
        self.activity.forget(id);
        sandbox.state = SandboxState::Stopped;
        sandbox.stopped_at = Some(Utc::now());
        sandbox.reason = Some(reason.as_str().to_string());
        self.store.update_sandbox(&sandbox).await?;
        match reason {
            StopReason::Timeout => self.emit(EventKind::Timeout, &sandbox),
            StopReason::Idle => self.emit(EventKind::Idle, &sandbox),
            StopReason::Requested => {}
        }
        self.emit(EventKind::Stopped, &sandbox);
        Ok(sandbox)
    }

    /// Records that a running sandbox's container went away on its own.
    pub(super) async fn mark_stopped_externally(
        &self,
        id: &SandboxId,
        reason: &str,
    ) -> Result<(), SandboxError> {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let Some(mut sandbox) = self.store.get_sandbox(id).await? else {
            return Ok(());
        };
        if sandbox.state != SandboxState::Running {
            return Ok(());
        }
        let _ = self.bring_down(&sandbox).await;
        self.activity.overlay(&mut sandbox);
        self.activity.forget(id);
        sandbox.state = SandboxState::Stopped;
        sandbox.stopped_at = Some(Utc::now());
        sandbox.reason = Some(reason.to_string());
        self.store.update_sandbox(&sandbox).await?;
        if reason == "oom" {
            self.emit(EventKind::Oom, &sandbox);
        }
        self.emit(EventKind::Stopped, &sandbox);
        Ok(())
    }
}
