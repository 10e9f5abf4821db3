//! Read-only access to a sandbox that is not running: a short-lived reader container on the
//! same image, with the volume mounted read-only, a read-only root filesystem, no network
//! and tiny limits, serving the agent's read routes. An archived sandbox has no volume: its
//! reader gets a new one under the sandbox's volume name, with the archive extracted into
//! it by the reader's agent (inside the container, never on the host), removed with the
//! reader (and by start-up reconciliation, as any archived sandbox's volume). Each tenant
//! has a ceiling on them. A reader starts on its own task (a client that leaves cannot
//! strand it half started), is never removed while a request uses it, and goes after a
//! minute unused, before the sandbox resumes or is deleted, at shutdown and at start-up.

use super::{SandboxError, SandboxService};
use crate::agent::AgentClient;
use crate::docker::{ContainerRole, ContainerSpec, LABEL_ROLE};
use crate::domain::{Sandbox, SandboxId, SandboxState, TenantId};
use berth_runtime::wire::ENV_MEMORY_LIMIT;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A reader unused this long is removed.
pub const READER_IDLE: Duration = Duration::from_secs(60);
const READER_MEMORY_MB: u64 = 128;
const READER_PIDS: i64 = 64;
const READER_NANO_CPUS: i64 = 500_000_000;
const READER_CAPABILITIES: [&str; 3] = ["DAC_OVERRIDE", "SETUID", "SETGID"];

/// A read-only helper, counted against its tenant's ceiling from the moment it starts.
pub struct ReaderEntry {
    tenant: TenantId,
    /// When its last request ended (or it came up).
    used: Instant,
    /// Its agent answers (false while it starts).
    ready: bool,
    /// Requests using it now.
    in_flight: usize,
    /// It reads a volume made for it out of the sandbox's archive (removed with it).
    restored: bool,
}

/// The readers of every sandbox.
pub type Readers = Arc<Mutex<HashMap<SandboxId, ReaderEntry>>>;

fn lock(readers: &Readers) -> MutexGuard<'_, HashMap<SandboxId, ReaderEntry>> {
    readers.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request's use of a reader; while one lives, the reader is not removed for idleness.
pub struct ReaderUse {
    readers: Readers,
    id: SandboxId,
}

impl Drop for ReaderUse {
    fn drop(&mut self) {
        if let Some(entry) = lock(&self.readers).get_mut(&self.id) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.used = Instant::now();
        }
    }
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

    /// The agent of `sandbox`'s reader (started if needed) and this request's use of it.
    pub(super) async fn reader_agent(
        self: &Arc<Self>,
        sandbox: &Sandbox,
    ) -> Result<(AgentClient, ReaderUse), SandboxError> {
        let id = sandbox.id.clone();
        let client = AgentClient::new(self.reader_socket_dir(&id));
        if let Some(using) = self.use_reader(&id) {
            return Ok((client, using));
        }
        let this = self.clone();
        let started = id.clone();
        super::detached(async move { this.start_reader(&started).await }).await?;
        match self.use_reader(&id) {
            Some(using) => Ok((client, using)),
            None => Err(SandboxError::Conflict(format!(
                "the read-only helper of sandbox {id} went away; retry"
            ))),
        }
    }

    /// Counts a request on a ready reader; `None` when there is none.
    fn use_reader(&self, id: &SandboxId) -> Option<ReaderUse> {
        let mut readers = lock(&self.readers);
        let entry = readers.get_mut(id).filter(|e| e.ready)?;
        entry.in_flight += 1;
        entry.used = Instant::now();
        Some(ReaderUse {
            readers: self.readers.clone(),
            id: id.clone(),
        })
    }

    /// Starts `id`'s reader under its lifecycle lock (nothing when one is ready already).
    async fn start_reader(&self, id: &SandboxId) -> Result<(), SandboxError> {
        let lifecycle = self.lock_for(id);
        let _held = lifecycle.lock().await;
        if lock_ready(&self.readers, id) {
            return Ok(());
        }
        let current = self
            .store
            .get_sandbox(id)
            .await?
            .ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
        let restored = match current.state {
            SandboxState::Stopped | SandboxState::Terminated => false,
            SandboxState::Archived => true,
            other => {
                return Err(SandboxError::Conflict(format!(
                    "sandbox {id} is {other}; retry"
                )))
            }
        };
        if !restored && !self.docker.volume_exists(current.volume.as_str()).await? {
            return Err(SandboxError::Conflict(format!(
                "sandbox {id} is {} and its volume {} no longer exists",
                current.state, current.volume
            )));
        }
        self.reserve_reader(&current, restored)?;
        let name = reader_name(id);
        let started = if restored {
            self.bring_up_archive_reader(&current).await
        } else {
            self.bring_up_reader(self.reader_spec(&current), &current)
                .await
        };
        {
            let mut readers = lock(&self.readers);
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
        if started.is_err() {
            let _ = self.docker.remove_container(&name).await;
            if restored {
                let _ = self.unmake_volume(current.volume.as_str()).await;
            }
        }
        started
    }

    fn reader_spec(&self, sandbox: &Sandbox) -> ContainerSpec {
        let mut spec = self.container_spec(sandbox);
        spec.name = reader_name(&sandbox.id);
        spec.socket_dir = self.reader_socket_dir(&sandbox.id);
        spec.labels.insert(
            LABEL_ROLE.to_string(),
            ContainerRole::READER_LABEL.to_string(),
        );
        spec.read_only = true;
        spec.read_only_volume = true;
        // No user code runs in a reader: nothing for the agent's memory guard to hold
        // (and its count could not be written on the read-only root).
        let guard = format!("{ENV_MEMORY_LIMIT}=");
        spec.env.retain(|e| !e.starts_with(&guard));
        // File routes act as the sandbox user (a thread's setresuid/setresgid, then back).
        spec.capabilities = READER_CAPABILITIES.map(str::to_string).to_vec();
        spec.network_mode = "none".to_string();
        // Under gVisor the host's limits also hold its kernel, which needs room of its own.
        spec.memory_bytes = super::container::host_memory(sandbox.runtime, READER_MEMORY_MB);
        spec.pids = super::container::host_pids(sandbox.runtime, READER_PIDS);
        spec.nano_cpus = READER_NANO_CPUS;
        spec.tmpfs = HashMap::new();
        spec.shm_bytes = 1024 * 1024;
        spec
    }

    /// An archived sandbox's reader: a new volume under its name, the reader on it, the
    /// archive extracted into it by the reader's agent (what a restore needs: ownership and
    /// times of files it does not own), checked against the archive's SHA-256. Leftovers of
    /// an earlier reader that did not finish go first (the archive is whole).
    async fn bring_up_archive_reader(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        let archive = self.archive_of(sandbox).await?;
        if self.docker.volume_exists(sandbox.volume.as_str()).await? {
            self.unmake_volume(sandbox.volume.as_str()).await?;
        }
        // Not recorded as a volume of the tenant's: it is the archive's, for reading.
        self.make_volume(sandbox).await?;
        let mut spec = self.reader_spec(sandbox);
        spec.read_only_volume = false;
        spec.capabilities
            .extend(["CHOWN", "FOWNER"].map(str::to_string));
        self.bring_up_reader(spec, sandbox).await?;
        let agent = AgentClient::new(self.reader_socket_dir(&sandbox.id));
        self.restore_with(&agent, &sandbox.workdir, &archive)
            .await?;
        crate::crash::point("reader.after_restore");
        Ok(())
    }

    async fn bring_up_reader(
        &self,
        mut spec: ContainerSpec,
        sandbox: &Sandbox,
    ) -> Result<(), SandboxError> {
        if !self.docker.image_exists(&spec.image).await? {
            spec.image = self.images.resolve(&sandbox.image).await?;
        }
        let dir = &spec.socket_dir;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| {
                SandboxError::StartFailed(format!("cannot create {}: {e}", dir.display()))
            })?;
        self.docker.remove_container(&spec.name).await?;
        self.docker.create_container(&spec).await?;
        self.docker.start_container(&spec.name).await?;
        AgentClient::new(spec.socket_dir.clone())
            .wait_ready(Duration::from_secs(30))
            .await
            .map_err(|e| {
                SandboxError::StartFailed(format!("the read-only helper did not come up: {e}"))
            })
    }

    /// Takes a place for `sandbox`'s reader under its tenant's ceiling.
    fn reserve_reader(&self, sandbox: &Sandbox, restored: bool) -> Result<(), SandboxError> {
        let max = self.config.limits.max_readers_per_tenant;
        let mut readers = lock(&self.readers);
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
                in_flight: 0,
                restored,
            },
        );
        Ok(())
    }

    /// Removes `id`'s reader, if any, and the volume it restored from an archive (call
    /// with the sandbox's lifecycle lock held).
    pub(super) async fn remove_reader(&self, id: &SandboxId) -> Result<(), SandboxError> {
        let Some(entry) = lock(&self.readers).remove(id) else {
            return Ok(());
        };
        self.docker.remove_container(&reader_name(id)).await?;
        let _ = std::fs::remove_dir_all(self.reader_socket_dir(id));
        if entry.restored {
            if let Some(sandbox) = self.store.get_sandbox(id).await? {
                self.unmake_volume(sandbox.volume.as_str()).await?;
            }
        }
        Ok(())
    }

    /// Removes every reader (at shutdown), each under its sandbox's lifecycle lock.
    pub async fn remove_readers(&self) {
        let all: Vec<SandboxId> = lock(&self.readers).keys().cloned().collect();
        for id in all {
            let lifecycle = self.lock_for(&id);
            let _held = lifecycle.lock().await;
            if let Err(e) = self.remove_reader(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "could not remove a read-only helper; the next start removes it");
            }
        }
    }

    /// Whether a request is reading through `id`'s reader now.
    pub(super) fn reader_in_use(&self, id: &SandboxId) -> bool {
        lock(&self.readers).get(id).is_some_and(|e| e.in_flight > 0)
    }

    /// Removes readers unused for [`READER_IDLE`] (checked again under each one's lock).
    pub(super) async fn reap_readers(&self) {
        let idle: Vec<SandboxId> = lock(&self.readers)
            .iter()
            .filter(|(_, r)| is_idle(r))
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            let lifecycle = self.lock_for(&id);
            let _held = lifecycle.lock().await;
            if !lock(&self.readers).get(&id).is_some_and(is_idle) {
                continue;
            }
            if let Err(e) = self.remove_reader(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "could not remove a read-only helper");
            }
        }
    }
}

fn is_idle(entry: &ReaderEntry) -> bool {
    entry.ready && entry.in_flight == 0 && entry.used.elapsed() >= READER_IDLE
}

fn lock_ready(readers: &Readers, id: &SandboxId) -> bool {
    lock(readers).get(id).is_some_and(|e| e.ready)
}
