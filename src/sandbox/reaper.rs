//! The reaper: flushes activity to the store, stops sandboxes whose lifetime or idle
//! deadline has passed (deadlines live in the store, so they fire after a restart too),
//! forgets ended records past their retention, and prunes in-memory maps.

use super::stop::StopReason;
use super::SandboxService;
use crate::domain::SandboxState;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;

/// Least time between two archive passes.
const ARCHIVE_PASS_EVERY: Duration = Duration::from_secs(2);
/// How long a sandbox whose archiving failed waits before the next try.
const ARCHIVE_RETRY: Duration = Duration::from_secs(300);

impl SandboxService {
    /// One pass; returns how many sandboxes it stopped.
    pub async fn reap_once(self: &Arc<Self>) -> usize {
        self.reap_readers().await;
        self.prune_locks();
        self.prune_ended().await;
        self.spawn_archiving();
        let seen = self.activity.take_unflushed();
        if !seen.is_empty() {
            if let Err(e) = self.store.record_activity(&seen).await {
                tracing::warn!(error = %e, "could not record sandbox activity");
                self.activity.retry_later(&seen);
            }
        }
        let running = match self.local_sandboxes(Some(SandboxState::Running)).await {
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
                if self.runs_background_processes(&sandbox).await {
                    // Running background processes are activity.
                    self.activity.touch(&sandbox.id);
                    continue;
                }
                StopReason::Idle
            } else {
                continue;
            };
            match self.stop_for(&sandbox.id, reason).await {
                // Not due any more once looked at under the lock (activity, a PATCH).
                Ok(after) if after.state == SandboxState::Running => {}
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

    /// Archives sandboxes stopped longer than `archive_after_s`, and removes snapshots and
    /// kept volumes past their retention: on a task of its own (an archive can take a
    /// while), one pass at a time.
    fn spawn_archiving(self: &Arc<Self>) {
        if self
            .archiving
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.archive_pass().await;
            // At most one pass every couple of seconds (each reads the tables whole).
            tokio::time::sleep(ARCHIVE_PASS_EVERY).await;
            this.archiving
                .store(false, std::sync::atomic::Ordering::SeqCst);
        });
    }

    async fn archive_pass(self: &Arc<Self>) {
        let retention = &self.config.retention;
        let now = Utc::now();
        let ago = |s: u64| now - chrono::Duration::seconds(s as i64);
        if retention.archive_after_s > 0 {
            let stopped = self
                .local_sandboxes(Some(SandboxState::Stopped))
                .await
                .unwrap_or_default();
            let waiting = |id: &crate::domain::SandboxId| {
                self.archive_backoff
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(id)
                    .is_some_and(|at| *at > std::time::Instant::now())
            };
            for sandbox in stopped.iter().filter(|s| {
                s.owns_volume
                    && s.stopped_at
                        .is_some_and(|t| t <= ago(retention.archive_after_s))
                    && !waiting(&s.id)
            }) {
                let outcome = self.archive_sandbox(&sandbox.id).await;
                let mut backoff = self
                    .archive_backoff
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(archived) => {
                        backoff.remove(&sandbox.id);
                        if archived {
                            tracing::info!(sandbox = %sandbox.id, "archived a long-stopped sandbox");
                        }
                    }
                    Err(e) => {
                        // Tried again later, not at every pass.
                        backoff.insert(
                            sandbox.id.clone(),
                            std::time::Instant::now() + ARCHIVE_RETRY,
                        );
                        tracing::warn!(sandbox = %sandbox.id, error = %e, "could not archive; trying again in 5 minutes");
                    }
                }
            }
        }
        if retention.snapshots_s > 0 {
            let old = self.store.list_snapshots(None).await.unwrap_or_default();
            for snapshot in old.iter().filter(|s| {
                s.kind == crate::domain::SnapshotKind::Snapshot
                    && s.state == crate::domain::SnapshotState::Ready
                    && s.created_at <= ago(retention.snapshots_s)
            }) {
                if let Err(e) = self.delete_snapshot(&snapshot.tenant, &snapshot.id).await {
                    tracing::warn!(snapshot = %snapshot.id, error = %e, "could not remove an old snapshot");
                }
            }
        }
        if retention.kept_volumes_s > 0 {
            self.remove_old_kept_volumes(ago(retention.kept_volumes_s))
                .await;
        }
    }

    /// Removes volumes no live sandbox uses whose last sandbox ended before `cutoff` (or,
    /// with no sandbox record left, that were made before it).
    async fn remove_old_kept_volumes(&self, cutoff: chrono::DateTime<Utc>) {
        // In a cluster, volumes are on their node's disk: each node sees to its own.
        let Ok(sandboxes) = self.local_sandboxes(None).await else {
            return;
        };
        let mut tenants: Vec<_> = sandboxes.iter().map(|s| s.tenant.clone()).collect();
        tenants.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        tenants.dedup();
        for tenant in tenants {
            let Ok(volumes) = self.store.list_volumes(&tenant).await else {
                continue;
            };
            for (volume, created) in volumes {
                let users: Vec<_> = sandboxes.iter().filter(|s| s.volume == volume).collect();
                let live = users.iter().any(|s| s.state != SandboxState::Terminated);
                let ended = users
                    .iter()
                    .filter_map(|s| s.stopped_at)
                    .max()
                    .unwrap_or(created);
                if !live && ended <= cutoff {
                    if let Err(e) = self.delete_volume(&tenant, &volume).await {
                        tracing::warn!(%volume, error = %e, "could not remove an old kept volume");
                    }
                }
            }
        }
    }

    /// Forgets terminated and failed records that ended longer ago than the retention.
    async fn prune_ended(&self) {
        let retention = chrono::Duration::seconds(self.config.limits.ended_retention_s as i64);
        match self.store.prune_ended(Utc::now() - retention).await {
            Ok(pruned) => {
                for sandbox in &pruned {
                    self.counts.remove(sandbox.state);
                    self.activity.forget(&sandbox.id);
                    let _ = std::fs::remove_dir_all(self.recordings_dir(&sandbox.id));
                }
                if !pruned.is_empty() {
                    tracing::info!(
                        count = pruned.len(),
                        "forgot ended sandboxes past retention"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not prune ended sandboxes"),
        }
    }

    /// Whether the sandbox's agent reports a background process still running.
    async fn runs_background_processes(&self, sandbox: &crate::domain::Sandbox) -> bool {
        let list: Result<berth_runtime::wire::ProcessList, _> = self
            .agent_client(&sandbox.id)
            .json(
                hyper::Method::GET,
                "/processes",
                None,
                Duration::from_secs(5),
                4 * 1024 * 1024,
            )
            .await;
        list.is_ok_and(|l| l.processes.iter().any(|p| p.running))
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
