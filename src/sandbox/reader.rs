//! Read-only access to a sandbox that is not running: a short-lived reader container on the
//! same image, with the volume mounted read-only, a read-only root filesystem, no network
//! and tiny limits, serving the agent's read routes. Removed after a minute unused, before
//! the sandbox resumes or is deleted, and at start-up.

use super::{SandboxError, SandboxService};
use crate::agent::AgentClient;
use crate::docker::{ContainerRole, LABEL_ROLE};
use crate::domain::{Sandbox, SandboxId, SandboxState, TenantId};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A reader unused this long is removed.
pub const READER_IDLE: Duration = Duration::from_secs(60);
const READER_MEMORY_BYTES: i64 = 128 * 1024 * 1024;
const READER_PIDS: i64 = 64;
const READER_NANO_CPUS: i64 = 500_000_000;

/// A read-only helper, counted against its tenant's ceiling from the moment it starts.
pub struct ReaderEntry {
    tenant: TenantId,
    used: Instant,
    /// Its agent answers (false while it starts).
    ready: bool,
}

pub fn reader_name(id: &SandboxId) -> String {
    format!("berth-{id}-reader")
}

impl SandboxService {
    fn reader_socket_dir(&self, id: &SandboxId) -> PathBuf {
        self.config
            .data_dir
            .join("sandboxes")
            .join(format!("{id}-reader"))
    }

    /// The agent of `sandbox`'s reader, started if needed.
    pub(super) async fn reader_agent(
        &self,
        sandbox: &Sandbox,
    ) -> Result<AgentClient, SandboxError> {
        let id = &sandbox.id;
        let client = AgentClient::new(self.reader_socket_dir(id));
        if self.touch_reader(id) {
            return Ok(client);
        }
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        if self.touch_reader(id) {
            return Ok(client);
        }
        let current = self
            .store
            .get_sandbox(id)
            .await?
            .ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
        if !matches!(
            current.state,
            SandboxState::Stopped | SandboxState::Terminated
        ) {
            return Err(SandboxError::Conflict(format!(
                "sandbox {id} is {}; retry",
                current.state
            )));
        }
        if !self.docker.volume_exists(current.volume.as_str()).await? {
            return Err(SandboxError::Conflict(format!(
                "sandbox {id} is {} and its volume {} no longer exists",
                current.state, current.volume
            )));
        }
        self.reserve_reader(&current)?;
        let mut spec = self.container_spec(&current);
        if !self.docker.image_exists(&spec.image).await? {
            spec.image = self.images.resolve(&current.image).await?;
        }
        let dir = self.reader_socket_dir(id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| {
                SandboxError::StartFailed(format!("cannot create {}: {e}", dir.display()))
            })?;
        spec.name = reader_name(id);
        spec.socket_dir = dir;
        spec.labels.insert(
            LABEL_ROLE.to_string(),
            ContainerRole::READER_LABEL.to_string(),
        );
        spec.read_only = true;
        spec.capabilities = vec!["DAC_OVERRIDE".to_string()];
        spec.network_mode = "none".to_string();
        spec.memory_bytes = READER_MEMORY_BYTES;
        spec.pids = READER_PIDS;
        spec.nano_cpus = READER_NANO_CPUS;
        self.docker.remove_container(&spec.name).await?;
        let started = async {
            self.docker.create_container(&spec).await?;
            self.docker.start_container(&spec.name).await?;
            client
                .wait_ready(Duration::from_secs(30))
                .await
                .map_err(|e| {
                    SandboxError::StartFailed(format!("the read-only helper did not come up: {e}"))
                })
        }
        .await;
        {
            let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            match (&started, readers.get_mut(id)) {
                (Ok(()), Some(entry)) => {
                    entry.ready = true;
                    entry.used = Instant::now();
                }
                _ => {
                    readers.remove(id);
                }
            }
        }
        if let Err(e) = started {
            let _ = self.docker.remove_container(&spec.name).await;
            return Err(e);
        }
        Ok(client)
    }

    /// Takes a place for `sandbox`'s reader under its tenant's ceiling.
    fn reserve_reader(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        let max = self.config.limits.max_readers_per_tenant;
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        let theirs = readers
            .values()
            .filter(|r| r.tenant == sandbox.tenant)
            .count();
        if theirs >= max {
            return Err(SandboxError::Busy(format!(
                "tenant {} already has {max} read-only helpers for stopped sandboxes (each lives a minute after its last read); resume the sandbox or retry later",
                sandbox.tenant
            )));
        }
        readers.insert(
            sandbox.id.clone(),
            ReaderEntry {
                tenant: sandbox.tenant.clone(),
                used: Instant::now(),
                ready: false,
            },
        );
        Ok(())
    }

    /// Marks a live reader as used; false when there is none.
    fn touch_reader(&self, id: &SandboxId) -> bool {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        match readers.get_mut(id) {
            Some(entry) if entry.ready => {
                entry.used = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Removes `id`'s reader, if any (call with the sandbox's lifecycle lock held).
    pub(super) async fn remove_reader(&self, id: &SandboxId) -> Result<(), SandboxError> {
        let known = self
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .is_some();
        if known {
            self.docker.remove_container(&reader_name(id)).await?;
            let _ = std::fs::remove_dir_all(self.reader_socket_dir(id));
        }
        Ok(())
    }

    /// Removes readers unused for [`READER_IDLE`].
    pub(super) async fn reap_readers(&self) {
        let idle: Vec<SandboxId> = {
            let readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            readers
                .iter()
                .filter(|(_, r)| r.ready && r.used.elapsed() >= READER_IDLE)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in idle {
            let lock = self.lock_for(&id);
            let _held = lock.lock().await;
            if let Err(e) = self.remove_reader(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "could not remove a read-only helper");
            }
        }
    }
}
