//! The reaper: flushes activity to the store and stops sandboxes whose lifetime or idle
//! deadline has passed. Deadlines live in the store, so they fire after a restart too.

use super::stop::StopReason;
use super::SandboxService;
use crate::domain::SandboxState;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;

impl SandboxService {
    /// One pass; returns how many sandboxes it stopped.
    pub async fn reap_once(&self) -> usize {
        self.reap_readers().await;
        let seen = self.activity.take_unflushed();
        if !seen.is_empty() {
            if let Err(e) = self.store.record_activity(&seen).await {
                tracing::warn!(error = %e, "could not record sandbox activity");
                self.activity.retry_later(&seen);
            }
        }
        let running = match self
            .store
            .list_sandboxes(None, Some(SandboxState::Running))
            .await
        {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "reaper cannot list sandboxes");
                return 0;
            }
        };
        let now = Utc::now();
        let mut stopped = 0;
        for mut sandbox in running {
            self.activity.overlay(&mut sandbox);
            let reason = if sandbox.expires_at.is_some_and(|at| at <= now) {
                StopReason::Timeout
            } else if sandbox.idle_deadline().is_some_and(|at| at <= now) {
                StopReason::Idle
            } else {
                continue;
            };
            match self.stop_for(&sandbox.id, reason).await {
                Ok(_) => {
                    stopped += 1;
                    tracing::info!(sandbox = %sandbox.id, ?reason, "stopped sandbox past its deadline");
                }
                Err(e) => {
                    tracing::warn!(sandbox = %sandbox.id, error = %e, "could not stop expired sandbox")
                }
            }
        }
        stopped
    }

    /// Runs [`Self::reap_once`] every `reaper_interval_ms` until the task is dropped.
    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let every = Duration::from_millis(self.config.reaper_interval_ms.max(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.reap_once().await;
            }
        })
    }
}
