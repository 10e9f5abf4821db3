//! The writable root layer of running sandboxes, measured. This engine cannot bound a
//! container's root layer (fuse-overlayfs has no quota; `--storage-opt size` needs
//! overlay2 on xfs with project quotas), so every `disk_check_ms` the layer's host
//! directory is walked and a sandbox whose layer holds more than its `disk_mb`, or more
//! entries than its volume has inodes, is stopped with reason `disk` (its event says so).
//! The volume, `/tmp`, `/var/tmp` and `/dev/shm` are bounded exactly elsewhere.

use super::stop::StopReason;
use super::SandboxService;
use crate::domain::{SandboxId, SandboxState};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest walk of one sandbox's layer per check (what was counted by then is a lower
/// bound, still enough to stop a sandbox past its quota).
const WALK_BUDGET: Duration = Duration::from_millis(500);

/// Where each running sandbox's root layer is on the host, by the start it belongs to.
pub type Layers = std::sync::Mutex<HashMap<SandboxId, (chrono::DateTime<chrono::Utc>, PathBuf)>>;

/// Bytes (allocated blocks) and entries under `dir`, walked for at most `budget`.
pub fn measure(dir: &Path, budget: Duration) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let deadline = Instant::now() + budget;
    let (mut bytes, mut entries) = (0u64, 0u64);
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .same_file_system(true)
        .min_depth(1)
    {
        if entries % 512 == 0 && Instant::now() > deadline {
            break;
        }
        let Ok(entry) = entry else { continue };
        if let Ok(meta) = entry.metadata() {
            bytes += meta.blocks() * 512;
            entries += 1;
        }
    }
    (bytes, entries)
}

impl SandboxService {
    /// Checks the root layers every `disk_check_ms` until the task is dropped; `None`
    /// when the check is off.
    pub fn spawn_disk_watch(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let every = Duration::from_millis(self.config.disk_check_ms);
        if every.is_zero() {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                this.check_root_layers().await;
            }
        }))
    }

    async fn check_root_layers(self: &Arc<Self>) {
        let Ok(running) = self.local_sandboxes(Some(SandboxState::Running)).await else {
            return;
        };
        {
            let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
            layers.retain(|id, _| running.iter().any(|s| &s.id == id));
        }
        for sandbox in running {
            let Some(started) = sandbox.started_at else {
                continue;
            };
            let known = self
                .layers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&sandbox.id)
                .filter(|(at, _)| *at == started)
                .map(|(_, dir)| dir.clone());
            let dir = match known {
                Some(dir) => dir,
                None => match self.docker.upper_dir(&sandbox.id.container_name()).await {
                    Ok(Some(dir)) => {
                        self.layers
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(sandbox.id.clone(), (started, dir.clone()));
                        dir
                    }
                    // No overlay-style layer (another storage driver), or Docker is away.
                    _ => continue,
                },
            };
            let (bytes, entries) =
                match tokio::task::spawn_blocking(move || measure(&dir, WALK_BUDGET)).await {
                    Ok(measured) => measured,
                    Err(_) => continue,
                };
            let quota = sandbox.limits.disk_mb * 1024 * 1024;
            let inodes = (quota / crate::disk::BYTES_PER_INODE).max(1024);
            if bytes > quota || entries > inodes {
                tracing::info!(sandbox = %sandbox.id, bytes, entries, quota, inodes,
                    "a sandbox's root layer is past its disk quota; stopping it");
                if let Err(e) = self.stop_for(&sandbox.id, StopReason::Disk).await {
                    tracing::warn!(sandbox = %sandbox.id, error = %e, "could not stop a sandbox past its disk quota");
                }
            }
        }
    }
}
