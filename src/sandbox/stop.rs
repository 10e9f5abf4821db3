//! Stopping a sandbox: the container goes, the volume stays, the record says why.

use super::{EventKind, SandboxError, SandboxService};
use crate::domain::{Sandbox, SandboxId, SandboxState, TenantId};
use chrono::Utc;
use std::sync::Arc;

/// Why a sandbox stops: by berth (requested, timeout, idle) or on its own (its container
/// was OOM-killed, exited, or vanished while berth was down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Requested,
    Timeout,
    Idle,
    Oom,
    Exited,
    Vanished,
    /// Its writable root layer grew past `disk_mb` (or its inode bound).
    Disk,
}

impl StopReason {
    /// The `reason` a client sees.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Requested => "requested",
            StopReason::Timeout => "timeout",
            StopReason::Idle => "idle",
            StopReason::Oom => "oom",
            StopReason::Exited => "exited",
            StopReason::Vanished => "vanished",
            StopReason::Disk => "disk",
        }
    }
}

impl SandboxService {
    /// Stops a sandbox; idempotent on one that is already stopped. Runs to the end even
    /// if the caller goes away.
    pub async fn stop(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
    ) -> Result<Sandbox, SandboxError> {
        let sandbox = self.get(tenant, id).await?;
        self.here_or_refuse(&sandbox)?;
        let (this, id) = (self.clone(), id.clone());
        super::detached(async move { this.stop_for(&id, StopReason::Requested).await }).await
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
        if !self.still_due(&mut sandbox, reason) {
            // Activity or a PATCH came in since the reaper looked: not due any more.
            return Ok(sandbox);
        }
        self.bring_down(&sandbox).await?;
        crate::crash::point("stop.after_container");
        self.record_stop(&mut sandbox, reason).await?;
        Ok(sandbox)
    }

    /// Whether a deadline stop is still due on the fresh record (always, for the others).
    fn still_due(&self, sandbox: &mut Sandbox, reason: StopReason) -> bool {
        let now = Utc::now();
        match reason {
            StopReason::Timeout => sandbox.expires_at.is_some_and(|at| at <= now),
            StopReason::Idle => {
                self.activity.overlay(sandbox);
                sandbox.idle_deadline().is_some_and(|at| at <= now)
            }
            _ => true,
        }
    }

    /// Writes a stop down: activity folded in, state `stopped` with its reason, events.
    async fn record_stop(
        &self,
        sandbox: &mut Sandbox,
        reason: StopReason,
    ) -> Result<(), SandboxError> {
        self.activity.overlay(sandbox);
        self.activity.forget(&sandbox.id);
        sandbox.stopped_at = Some(Utc::now());
        self.transition(
            sandbox,
            SandboxState::Stopped,
            Some(reason.as_str().to_string()),
        )
        .await?;
        match reason {
            StopReason::Timeout => self.emit(EventKind::Timeout, sandbox),
            StopReason::Idle => self.emit(EventKind::Idle, sandbox),
            StopReason::Oom => self.emit(EventKind::Oom, sandbox),
            StopReason::Requested
            | StopReason::Exited
            | StopReason::Vanished
            | StopReason::Disk => {}
        }
        self.emit(EventKind::Stopped, sandbox);
        Ok(())
    }

    /// Records that a running sandbox's container went away on its own.
    pub(super) async fn mark_stopped_externally(
        &self,
        id: &SandboxId,
        reason: StopReason,
    ) -> Result<(), SandboxError> {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        self.stopped_externally_locked(id, reason).await
    }

    /// [`Self::mark_stopped_externally`] with the sandbox's lifecycle lock already held.
    pub(super) async fn stopped_externally_locked(
        &self,
        id: &SandboxId,
        reason: StopReason,
    ) -> Result<(), SandboxError> {
        let Some(mut sandbox) = self.store.get_sandbox(id).await? else {
            return Ok(());
        };
        // A lost one too, on the node that held it (back after its heartbeat lapsed).
        let lost_here = sandbox.state == SandboxState::Lost && self.holds(&sandbox);
        if sandbox.state != SandboxState::Running && !lost_here {
            return Ok(());
        }
        let _ = self.bring_down(&sandbox).await;
        self.record_stop(&mut sandbox, reason).await
    }
}
