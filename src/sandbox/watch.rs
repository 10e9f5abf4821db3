//! Following Docker: a sandbox container that dies or is removed behind berth's back (a
//! `docker kill`, `docker rm -f`, the OOM killer taking PID 1, a daemon restart) is
//! reflected in the sandbox's state within seconds, with its event, not at the next call.
//! When the event stream breaks (the daemon went away), every running sandbox is checked
//! once the daemon answers again.

use super::stop::StopReason;
use super::SandboxService;
use crate::docker::ContainerRole;
use crate::domain::{SandboxId, SandboxState};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Pause before following the daemon again after its stream broke.
const RECONNECT: Duration = Duration::from_millis(500);

impl SandboxService {
    /// Follows the daemon's container events until the task is dropped.
    pub fn spawn_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                if !first {
                    // The stream broke: once the daemon answers again, whatever died
                    // meanwhile is found.
                    while this.docker.ping().await.is_err() {
                        tokio::time::sleep(RECONNECT).await;
                    }
                    this.check_running().await;
                }
                first = false;
                let mut events = Box::pin(this.docker.containers_gone(&this.instance));
                while let Some(event) = events.next().await {
                    match event {
                        Ok(gone) if gone.role == ContainerRole::Sandbox => {
                            if let Some(id) = SandboxId::parse(&gone.sandbox_id) {
                                let this = this.clone();
                                tokio::spawn(async move { this.on_container_gone(&id).await });
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                tokio::time::sleep(RECONNECT).await;
            }
        })
    }

    /// Every running sandbox whose container is not running any more is marked stopped.
    async fn check_running(self: &Arc<Self>) {
        let Ok(running) = self.local_sandboxes(Some(SandboxState::Running)).await else {
            return;
        };
        for sandbox in running {
            self.on_container_gone(&sandbox.id).await;
        }
    }

    /// A sandbox's container died or went: if it still counts as running and its
    /// container really is not (a resume may have started a new one meanwhile), it is
    /// stopped, with why. A lifecycle operation in progress is waited for first.
    async fn on_container_gone(self: &Arc<Self>, id: &SandboxId) {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let Ok(Some(sandbox)) = self.store.get_sandbox(id).await else {
            return;
        };
        if sandbox.state != SandboxState::Running {
            return;
        }
        let reason = match self.docker.container_status(&id.container_name()).await {
            Ok(Some(status)) if status.running => return,
            Ok(Some(status)) if status.oom_killed => StopReason::Oom,
            Ok(Some(_)) => StopReason::Exited,
            Ok(None) => StopReason::Vanished,
            // The daemon does not answer: the next successful check decides.
            Err(_) => return,
        };
        // Still under the lock that the inspection was made under: no resume slips in.
        if let Err(e) = self.stopped_externally_locked(id, reason).await {
            tracing::warn!(sandbox = %id, error = %e, "could not record a container that went away");
        } else {
            tracing::info!(sandbox = %id, reason = reason.as_str(), "a sandbox's container went away");
        }
    }
}
