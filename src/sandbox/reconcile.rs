//! Start-up reconciliation with Docker by labels: adopt what still runs, record what
//! vanished, undo creates, snapshots, archives and restores a crash cut short, remove
//! containers and archive objects berth does not know, and count sandboxes by state. In a
//! cluster, sandboxes marked lost while this node was away are taken up again, and copies
//! of those another node took over meanwhile are removed.

use super::stop::StopReason;
use super::SandboxService;
use crate::docker::ContainerRole;
use crate::domain::{SandboxId, SandboxState};
use std::collections::HashSet;
use std::time::Duration;

/// What a reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub adopted: usize,
    pub marked_stopped: usize,
    /// Creates cut short by a crash: container and own volume removed, record `failed`.
    pub undone: usize,
    pub removed_unknown: usize,
    /// Ready sandboxes of the warm pool, removed (the pool starts new ones).
    pub pooled_removed: usize,
    /// Idempotency keys of cut-short creates, forgotten so a retry creates anew.
    pub keys_forgotten: u64,
    /// Snapshots a crash cut short, and archive objects no record names: removed.
    pub snapshots_undone: usize,
    pub objects_removed: usize,
    /// Volumes of archived sandboxes a crash left behind (the archive is whole).
    pub archived_volumes_removed: usize,
    /// Own volumes of sandboxes deleted without `keep_volume` that a crash left behind.
    pub volumes_removed: usize,
    /// Disk images no volume record names (removed), images attached again (after a host
    /// restart) and loop devices whose image is gone (detached).
    pub disks_removed: usize,
    pub disks_attached: usize,
    pub loops_detached: usize,
    /// Tenants' cgroups no container uses any more (removed).
    pub cgroups_removed: usize,
    /// Sandboxes marked lost while this node was away, running again here.
    pub reclaimed: usize,
    /// Copies (container and volume) of sandboxes another node took over meanwhile.
    pub stale_removed: usize,
}

impl SandboxService {
    pub async fn reconcile(&self) -> Result<Reconciled, super::SandboxError> {
        let mut report = Reconciled::default();
        let containers = self.docker.list_managed(&self.instance).await?;
        let mut seen = HashSet::new();
        for container in containers {
            if container.role == ContainerRole::Reader {
                // Read-only helpers are started on demand; none survives a restart.
                self.docker.remove_container(&container.name).await?;
                continue;
            }
            let known = match SandboxId::parse(&container.sandbox_id) {
                Some(id) => self.store.get_sandbox(&id).await?,
                None => None,
            };
            let Some(sandbox) = known else {
                self.docker.remove_container(&container.name).await?;
                report.removed_unknown += 1;
                continue;
            };
            // Another node took it over while this one was away: never run it twice.
            if self.held_elsewhere(&sandbox) && sandbox.state != SandboxState::Lost {
                self.remove_stale_copy(&sandbox).await?;
                report.stale_removed += 1;
                continue;
            }
            match sandbox.state {
                // Undone below, with the records that have no container.
                SandboxState::Creating => continue,
                // Running, or marked lost while this node was away and not taken over.
                SandboxState::Running | SandboxState::Lost => {
                    let healthy = container.running
                        && self
                            .agent_client(&sandbox.id)
                            .wait_ready(Duration::from_secs(5))
                            .await
                            .is_ok();
                    if !healthy {
                        self.mark_stopped_externally(&sandbox.id, StopReason::Exited)
                            .await?;
                        report.marked_stopped += 1;
                    } else if sandbox.state == SandboxState::Lost {
                        self.reclaim(&sandbox.id).await?;
                        report.reclaimed += 1;
                    } else {
                        report.adopted += 1;
                    }
                }
                // A container for a sandbox that is not running (a crash mid-stop).
                _ => {
                    self.docker.remove_container(&container.name).await?;
                    report.removed_unknown += 1;
                }
            }
            seen.insert(sandbox.id.clone());
        }
        for mut sandbox in self.local_sandboxes(None).await? {
            if seen.contains(&sandbox.id) {
                continue;
            }
            match sandbox.state {
                SandboxState::Running => {
                    self.mark_stopped_externally(&sandbox.id, StopReason::Vanished)
                        .await?;
                    report.marked_stopped += 1;
                }
                // Lost, and its container gone here too: stopped, on the volume kept here.
                SandboxState::Lost
                    if self.docker.volume_exists(sandbox.volume.as_str()).await? =>
                {
                    self.mark_stopped_externally(&sandbox.id, StopReason::Vanished)
                        .await?;
                    report.marked_stopped += 1;
                }
                // A pooled sandbox: never handed out, so simply removed (the pool refills).
                SandboxState::Creating if sandbox.tenant.is_pool() => {
                    self.discard_pooled(&sandbox).await;
                    report.pooled_removed += 1;
                }
                SandboxState::Creating => {
                    let lock = self.lock_for(&sandbox.id);
                    let _held = lock.lock().await;
                    self.undo_create(
                        &mut sandbox,
                        "berth stopped while the sandbox was being created; create it again",
                    )
                    .await?;
                    report.undone += 1;
                }
                _ => {}
            }
        }
        self.release_socket_dirs(&seen).await?;
        report.volumes_removed = self.remove_deleted_volumes().await?;
        self.reconcile_disks(&mut report).await?;
        report.cgroups_removed = super::fairness::remove_empty_groups(&self.instance);
        report.keys_forgotten = self
            .store
            .idempotency_clear_in_flight(&self.node_name().unwrap_or_default())
            .await?;
        self.reconcile_archives(&mut report).await?;
        self.count_states().await?;
        Ok(report)
    }

    /// Socket dirs of sandboxes without a running container (a crash left them,
    /// perhaps still mounted) are unmounted and removed.
    async fn release_socket_dirs(
        &self,
        adopted: &HashSet<SandboxId>,
    ) -> Result<(), super::SandboxError> {
        let root = self.config.data_dir.join("sandboxes");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let live = SandboxId::parse(&name).is_some_and(|id| adopted.contains(&id));
            if !live {
                super::container::release_socket_dir(&entry.path());
            }
        }
        Ok(())
    }

    /// Disk images after a crash or a host restart: an image no volume record names (a
    /// create or delete cut short) goes with its Docker volume; a recorded one is attached
    /// again if its loop device went, and its Docker volume made again if it names
    /// another device; loop devices left on removed images are detached.
    async fn reconcile_disks(&self, report: &mut Reconciled) -> Result<(), super::SandboxError> {
        use crate::docker::{LABEL_INSTANCE, LABEL_MANAGED};
        let Some(disks) = &self.disks else {
            return Ok(());
        };
        let sandboxes = self.store.list_sandboxes(None, None).await?;
        for name in disks.names() {
            let recorded = match crate::domain::VolumeName::parse(&name) {
                Ok(volume) => self.store.volume_tenant(&volume).await?.is_some(),
                Err(_) => false,
            };
            if !recorded {
                self.docker.remove_volume(&name).await?;
                disks.remove(&name).await?;
                report.disks_removed += 1;
                continue;
            }
            let device = disks.attach(&name).await?;
            match self.docker.volume_device(&name).await? {
                Some(Some(current)) if current == device => continue,
                Some(_) => self.docker.remove_volume(&name).await?,
                None => {}
            }
            let labels = match sandboxes
                .iter()
                .find(|s| s.volume.as_str() == name && s.owns_volume)
            {
                Some(owner) => self.volume_labels(owner),
                None => std::collections::HashMap::from([
                    (LABEL_MANAGED.to_string(), "true".to_string()),
                    (LABEL_INSTANCE.to_string(), self.instance.clone()),
                ]),
            };
            self.docker
                .create_volume(&name, labels, Some(&device))
                .await?;
            report.disks_attached += 1;
        }
        report.loops_detached = disks.detach_orphans().await?;
        Ok(())
    }

    /// Removes the own volumes of sandboxes deleted without `keep_volume` that a crash
    /// left (between the record and the volume's removal), unless another sandbox uses
    /// them.
    async fn remove_deleted_volumes(&self) -> Result<usize, super::SandboxError> {
        let sandboxes = self.local_sandboxes(None).await?;
        let mut removed = 0;
        for s in sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Terminated && s.owns_volume && !s.volume_kept)
        {
            let used = sandboxes.iter().any(|o| {
                o.id != s.id
                    && o.volume == s.volume
                    && !matches!(o.state, SandboxState::Terminated | SandboxState::Failed)
            });
            if !used && self.docker.volume_exists(s.volume.as_str()).await? {
                self.remove_volume_record(&s.volume).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Snapshots and archives after a crash: a snapshot being written is undone; an archive
    /// no archived sandbox names (a crash before its sandbox was marked, or after a resume
    /// restored it) is dropped; an archived sandbox's volume (a crash before it was
    /// removed, or during a restore) goes, since its archive is whole; objects no record
    /// names, and uploads a crash cut short, are removed. The archive store being down
    /// does not stop the server: what it could not remove now goes at the next start.
    async fn reconcile_archives(&self, report: &mut Reconciled) -> Result<(), super::SandboxError> {
        use crate::domain::{SnapshotKind, SnapshotState};
        let sandboxes = self.store.list_sandboxes(None, None).await?;
        let store_down = |e: crate::archive::ArchiveError| {
            tracing::warn!(error = %e, store = %self.archive.location,
                "the archive store did not answer; what it holds is reconciled at the next start");
        };
        for snapshot in self.store.list_snapshots(None).await? {
            // Another node's snapshot under way is that node's to finish or undo.
            let theirs = sandboxes
                .iter()
                .any(|s| s.id == snapshot.sandbox_id && !self.holds(s));
            if theirs {
                continue;
            }
            let named = sandboxes.iter().any(|s| {
                s.state == SandboxState::Archived && s.archive.as_ref() == Some(&snapshot.id)
            });
            let unused_archive = snapshot.kind == SnapshotKind::Archive && !named;
            if snapshot.state == SnapshotState::Creating || unused_archive {
                if let Err(e) = self.archive.delete(&snapshot.id.object_key()).await {
                    store_down(e);
                }
                self.store.delete_snapshot(&snapshot.id).await?;
                report.snapshots_undone += 1;
            }
        }
        for sandbox in sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Archived && self.holds(s))
        {
            if self.docker.volume_exists(sandbox.volume.as_str()).await? {
                self.undo_unarchive(sandbox).await;
                report.archived_volumes_removed += 1;
            }
        }
        let known: HashSet<String> = self
            .store
            .list_snapshots(None)
            .await?
            .iter()
            .map(|s| s.id.object_key())
            .collect();
        match self.archive.keys().await {
            Ok(keys) => {
                for key in keys {
                    if key.starts_with("snapshots/") && !known.contains(&key) {
                        match self.archive.delete(&key).await {
                            Ok(()) => report.objects_removed += 1,
                            Err(e) => store_down(e),
                        }
                    }
                }
            }
            Err(e) => store_down(e),
        }
        match self.archive.sweep_partial().await {
            Ok(n) => report.objects_removed += n,
            Err(e) => store_down(e),
        }
        Ok(())
    }

    /// Reads the count of sandboxes by state from the store (then kept on transitions).
    async fn count_states(&self) -> Result<(), super::SandboxError> {
        let counted = self.store.count_by_state().await?;
        for state in SandboxState::ALL {
            let n = counted
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.counts.set(state, n);
        }
        Ok(())
    }
}
