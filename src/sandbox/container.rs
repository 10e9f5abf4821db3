//! Bringing a sandbox's container up (fresh socket dir, hardened container on its volume,
//! agent answering) and down.

use super::{SandboxError, SandboxService};
use crate::docker::{
    ContainerSpec, DeviceWriteLimit, LABEL_INSTANCE, LABEL_MANAGED, LABEL_SANDBOX, LABEL_TENANT,
    SANDBOX_CAPABILITIES,
};
use crate::domain::{Runtime, Sandbox};
use berth_runtime::wire::{
    AGENT_BINARY_PATH, AGENT_SOCKET_DIR, ENV_ALLOW_ROOT, ENV_DEFAULT_EXEC_TIMEOUT,
    ENV_DEFAULT_OUTPUT_CAP, ENV_MEMORY_LIMIT, ENV_PROCESS_LIMIT, ENV_SOCKET_NUDGE, ENV_WORKDIR,
    PRELOAD_LIST_PATH, STATX_COMPAT_PATH,
};

/// Host tasks a user-space kernel (gVisor's) may use beyond the sandbox's `pids`: its
/// ptrace platform backs every address space with a host stub process and its threads,
/// and releases them some time after the sandbox's process ended. At `pids` + 1024 a
/// fork bomb held to 64 processes still made the sentry fail to start a stub and die.
const RUNTIME_THREADS: i64 = 8192;

/// MiB a user-space kernel (gVisor's) may hold beyond the sandbox's memory: its own heap
/// (about 15 MiB idle, 20 MiB over its accounting under load) and what a bomb gains before
/// the agent's guard kills it. gVisor filled memory at 1.6 GB/s here, and under a CPU
/// quota the guard may wait out a throttled period (100 ms): 256 MiB covers 160 ms.
fn runtime_memory(memory_mb: u64) -> u64 {
    256 + memory_mb / 8
}

/// The host's pids limit that holds a sandbox of `runtime` to `pids` processes.
pub(super) fn host_pids(runtime: Runtime, pids: i64) -> i64 {
    if runtime.counts_processes_on_the_host() {
        pids
    } else {
        pids + RUNTIME_THREADS
    }
}

/// The host's memory limit (bytes) for a sandbox of `runtime` given `memory_mb`.
pub(super) fn host_memory(runtime: Runtime, memory_mb: u64) -> i64 {
    let memory = if runtime.kills_on_the_hosts_memory_limit() {
        memory_mb
    } else {
        memory_mb + runtime_memory(memory_mb)
    };
    (memory * 1024 * 1024) as i64
}
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// How long a new container's agent may take to answer.
const AGENT_READY_DEADLINE: Duration = Duration::from_secs(30);
/// SIGTERM → SIGKILL grace when stopping a container.
pub const STOP_GRACE_S: i64 = 2;

/// MiB of a scratch tmpfs: a `share` of the sandbox's memory (it counts against it), at
/// least 16.
fn scratch_mb(memory_mb: u64, share: u64) -> u64 {
    (memory_mb / share).max(16)
}

/// Inodes of a scratch tmpfs of `mb` MiB: one per 4 KiB, so a million empty files stop at
/// a limit (tmpfs inodes are kernel memory, which this engine's cgroup v1 does not count).
fn scratch_inodes(mb: u64) -> u64 {
    mb * 256
}

/// `/tmp` (half the memory), `/var/tmp` and `/dev/shm` (a quarter each) as sized tmpfs
/// with bounded inodes: writes there stop with ENOSPC and never reach the host's disk.
fn scratch_mounts(memory_mb: u64) -> HashMap<String, String> {
    let mount = |mb: u64, exec: &str| {
        format!(
            "rw,{exec},nosuid,nodev,size={mb}m,nr_inodes={},mode=1777",
            scratch_inodes(mb)
        )
    };
    HashMap::from([
        ("/tmp".to_string(), mount(scratch_mb(memory_mb, 2), "exec")),
        (
            "/var/tmp".to_string(),
            mount(scratch_mb(memory_mb, 4), "exec"),
        ),
        (
            "/dev/shm".to_string(),
            mount(scratch_mb(memory_mb, 4), "noexec"),
        ),
        // World-writable in Debian images: small, so it cannot fill the root layer.
        ("/run/lock".to_string(), mount(1, "noexec")),
    ])
}

/// Makes the agent's socket dir a tiny tmpfs of its own (64 KiB, 16 entries), so a
/// sandbox cannot put data on the host's disk through it. Without root (or mount
/// support) the plain directory stays, with a warning.
pub(super) fn bound_socket_dir(dir: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: mount(2) with valid NUL-terminated strings.
    let done = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            path.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            c"size=64k,nr_inodes=16,mode=0700".as_ptr().cast(),
        )
    };
    if done != 0 {
        static WARNED: std::sync::Once = std::sync::Once::new();
        let e = std::io::Error::last_os_error();
        WARNED.call_once(|| {
            tracing::warn!(error = %e, "cannot mount a tmpfs on sandbox socket dirs; they stay plain directories on the host's disk")
        });
    }
}

/// Unmounts (if mounted) and removes a socket dir.
pub(super) fn release_socket_dir(dir: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) {
        // SAFETY: umount2(2) with a valid path; EINVAL when nothing is mounted there.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_dir_all(dir);
}

impl SandboxService {
    pub(super) fn container_spec(&self, sandbox: &Sandbox) -> ContainerSpec {
        let d = &self.config.defaults;
        let mut env = vec![
            format!("{ENV_WORKDIR}={}", sandbox.workdir),
            format!("{ENV_DEFAULT_EXEC_TIMEOUT}={}", d.exec_timeout_s),
            format!("{ENV_DEFAULT_OUTPUT_CAP}={}", d.output_cap_bytes),
        ];
        if sandbox.allow_root {
            env.push(format!("{ENV_ALLOW_ROOT}=1"));
        }
        // The host's pids limit counts a runtime's own threads (gVisor's kernel), not
        // the sandbox's processes: there the agent holds them to `pids` itself, and the
        // host's limit leaves that kernel room for its threads.
        if !sandbox.runtime.counts_processes_on_the_host() {
            env.push(format!("{ENV_PROCESS_LIMIT}={}", sandbox.limits.pids));
        }
        // Likewise memory: under gVisor the host would OOM-kill its kernel (the whole
        // sandbox), so the agent kills user processes at the limit and the host's limit
        // leaves that kernel room above it.
        if !sandbox.runtime.kills_on_the_hosts_memory_limit() {
            let bytes = sandbox.limits.memory_mb * 1024 * 1024;
            env.push(format!("{ENV_MEMORY_LIMIT}={bytes}"));
        }
        if sandbox.runtime.loses_socket_readiness() {
            env.push(format!("{ENV_SOCKET_NUDGE}=1"));
        }
        env.extend(sandbox.env.iter().map(|(k, v)| format!("{k}={v}")));
        ContainerSpec {
            name: sandbox.id.container_name(),
            image: sandbox.image_ref.clone(),
            labels: HashMap::from([
                (LABEL_MANAGED.to_string(), "true".to_string()),
                (LABEL_SANDBOX.to_string(), sandbox.id.to_string()),
                (LABEL_TENANT.to_string(), sandbox.tenant.to_string()),
                (LABEL_INSTANCE.to_string(), self.instance.clone()),
            ]),
            env,
            workdir: sandbox.workdir.clone(),
            volume: sandbox.volume.to_string(),
            agent_binary: self.host_files.agent.clone(),
            agent_binary_target: AGENT_BINARY_PATH.to_string(),
            read_only_files: self.runtime_files(sandbox.runtime),
            socket_dir: self.socket_dir(&sandbox.id),
            socket_dir_target: AGENT_SOCKET_DIR.to_string(),
            nano_cpus: (sandbox.limits.cpu * 1e9) as i64,
            memory_bytes: host_memory(sandbox.runtime, sandbox.limits.memory_mb),
            pids: host_pids(sandbox.runtime, sandbox.limits.pids),
            network_mode: super::network::docker_mode(sandbox.network).to_string(),
            hostname: "sandbox".to_string(),
            read_only: false,
            read_only_volume: false,
            capabilities: SANDBOX_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            tmpfs: scratch_mounts(sandbox.limits.memory_mb),
            shm_bytes: (scratch_mb(sandbox.limits.memory_mb, 4) * 1024 * 1024) as i64,
            runtime: sandbox.runtime.engine_name().map(str::to_owned),
            cgroup_parent: self.tenant_cgroup(&sandbox.tenant),
            write_limit: None,
        }
    }

    /// Files a runtime's sandboxes need beyond the agent: under gVisor, the statx shim
    /// and the preload list that loads it into every dynamically linked process.
    fn runtime_files(&self, runtime: Runtime) -> Vec<(PathBuf, String)> {
        if runtime.refuses_no_automount() {
            vec![
                (
                    self.host_files.statx_compat.clone(),
                    STATX_COMPAT_PATH.into(),
                ),
                (
                    self.host_files.preload_list.clone(),
                    PRELOAD_LIST_PATH.into(),
                ),
            ]
        } else {
            Vec::new()
        }
    }

    /// The write limit on the loop device of `sandbox`'s volume (none without one).
    async fn write_limit(
        &self,
        sandbox: &Sandbox,
    ) -> Result<Option<DeviceWriteLimit>, SandboxError> {
        let Some(disks) = &self.disks else {
            return Ok(None);
        };
        let limit = disks.write_limit();
        if limit.is_unbounded() {
            return Ok(None);
        }
        let device = disks.device(sandbox.volume.as_str()).await?;
        Ok(device.map(|device| DeviceWriteLimit {
            device,
            bytes_per_s: limit.bytes_per_s,
            iops: limit.iops,
        }))
    }

    /// Creates and starts the container and waits for its agent. On failure nothing is
    /// left behind but the volume.
    pub(super) async fn bring_up(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        let name = sandbox.id.container_name();
        let dir = self.socket_dir(&sandbox.id);
        release_socket_dir(&dir);
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| {
                SandboxError::StartFailed(format!("cannot create {}: {e}", dir.display()))
            })?;
        bound_socket_dir(&dir);
        if sandbox.network == crate::domain::Network::Bridge {
            self.ensure_bridge().await?;
        }
        // A leftover container of the same name (a crash mid-operation) goes first.
        self.docker.remove_container(&name).await?;
        let result = async {
            let mut spec = self.container_spec(sandbox);
            spec.write_limit = self.write_limit(sandbox).await?;
            self.docker
                .create_container(&spec)
                .await
                .map_err(|e| match e {
                    crate::docker::DockerError::NotFound { .. } => SandboxError::Invalid(format!(
                        "image {:?} is not in the local Docker engine (build or load it first)",
                        sandbox.image
                    )),
                    other => other.into(),
                })?;
            self.docker.start_container(&name).await?;
            self.agent_client(&sandbox.id)
                .wait_ready(AGENT_READY_DEADLINE)
                .await
                .map_err(|e| {
                    SandboxError::StartFailed(format!(
                        "the sandbox agent did not come up ({e}); is {} a Linux x86_64 image?",
                        sandbox.image
                    ))
                })
        }
        .await;
        if result.is_err() {
            let _ = self.docker.remove_container(&name).await;
        }
        result
    }

    /// Stops and removes the container; the volume stays.
    pub(super) async fn bring_down(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        self.docker
            .stop_and_remove(&sandbox.id.container_name(), STOP_GRACE_S)
            .await?;
        release_socket_dir(&self.socket_dir(&sandbox.id));
        Ok(())
    }
}
