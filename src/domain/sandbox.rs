//! The sandbox record as stored, and its public JSON view.

use super::{SandboxId, SandboxState, TenantId, VolumeName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub cpu: f64,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub pids: i64,
    pub timeout_s: u64,
    pub idle_timeout_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    None,
    Bridge,
}

/// What isolates a sandbox's processes from the host's kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Linux namespaces and cgroups (Docker's default runtime).
    #[default]
    Runc,
    /// gVisor (`runsc`): a user-space kernel between the sandbox and the host's.
    Gvisor,
}

impl Runtime {
    pub fn parse(raw: &str) -> Option<Runtime> {
        match raw {
            "runc" => Some(Runtime::Runc),
            "gvisor" => Some(Runtime::Gvisor),
            _ => None,
        }
    }

    /// Whether a running container's CPU, memory and pids limits can be changed (`runsc`
    /// has no `update`).
    pub fn updates_limits(self) -> bool {
        self == Runtime::Runc
    }

    /// Whether the sandbox's processes are the host's (runc), so the host's pids limit
    /// counts them; gVisor's are its own kernel's, run on a few host threads.
    pub fn counts_processes_on_the_host(self) -> bool {
        self == Runtime::Runc
    }

    /// The engine's name for it (`None`: the engine's default runtime).
    /// True when the host's OOM killer, at the container's memory limit, kills the
    /// sandbox's process that holds the memory; false when it would kill the runtime's
    /// kernel, which holds all of it (gVisor), and the agent must hold user code below.
    pub fn kills_on_the_hosts_memory_limit(self) -> bool {
        self == Runtime::Runc
    }

    /// True when its terminals turn Ctrl-C, Ctrl-D and the like into signals and end of
    /// input; gVisor 20221219's pass them on as bytes (google/gvisor#4823 and #9333).
    pub fn pty_signals_keys(self) -> bool {
        self == Runtime::Runc
    }

    /// True when its `statx` refuses `AT_NO_AUTOMOUNT` (gVisor 20221219), which bookworm's
    /// coreutils always pass: its sandboxes preload a shim that clears the flag.
    pub fn refuses_no_automount(self) -> bool {
        self == Runtime::Gvisor
    }

    /// True when its kernel can lose a unix socket's readiness under back-pressure
    /// (gVisor 20221219 with `--host-uds`): the agent then also tries its socket directly
    /// while it waits.
    pub fn loses_socket_readiness(self) -> bool {
        self == Runtime::Gvisor
    }

    pub fn engine_name(self) -> Option<&'static str> {
        match self {
            Runtime::Runc => None,
            Runtime::Gvisor => Some("runsc"),
        }
    }
}

/// Resource usage, where known.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Bytes the archive store holds for the sandbox: its snapshots, and its archive
    /// while it is archived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_bytes: Option<u64>,
}

/// One sandbox: its state, where its files live and what it may use. Stored whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: SandboxId,
    pub tenant: TenantId,
    pub state: SandboxState,
    /// The image as requested (a template name or a local image ref).
    pub image: String,
    /// The Docker image reference actually run.
    pub image_ref: String,
    pub volume: VolumeName,
    /// True when berth created the volume for this sandbox (and so may remove it).
    pub owns_volume: bool,
    pub workdir: String,
    pub labels: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    pub network: Network,
    pub auto_resume: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub last_activity_at: Option<DateTime<Utc>>,
    /// Why it stopped or failed (`timeout`, `idle`, `oom`, `requested`, an error text).
    pub reason: Option<String>,
    /// Where its volume's content is while it is archived.
    #[serde(default)]
    pub archive: Option<super::SnapshotId>,
    /// Deleted with `keep_volume`: its own volume stays (until its retention). Records
    /// from before this field count as kept (nothing is removed on a guess).
    #[serde(default = "kept_by_default")]
    pub volume_kept: bool,
    /// Execs may run as root (created with `allow_root`).
    #[serde(default)]
    pub allow_root: bool,
    #[serde(default)]
    pub runtime: Runtime,
    /// The cluster node that holds it (unset on a single node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The fencing token of its ownership: raised when another node takes it over, and
    /// checked by every write (a node holding an older one is refused).
    #[serde(default)]
    pub generation: u64,
}

fn kept_by_default() -> bool {
    true
}

impl Sandbox {
    /// A running sandbox with default limits, for unit tests.
    #[cfg(test)]
    pub fn example(id: &SandboxId) -> Sandbox {
        Sandbox {
            id: id.clone(),
            tenant: TenantId::parse("t").expect("valid"),
            state: SandboxState::Running,
            image: "base".into(),
            image_ref: "berth/base:latest".into(),
            volume: id.default_volume(),
            owns_volume: true,
            workdir: "/workspace".into(),
            labels: BTreeMap::new(),
            env: BTreeMap::new(),
            limits: Limits {
                cpu: 1.0,
                memory_mb: 512,
                disk_mb: 2048,
                pids: 512,
                timeout_s: 3600,
                idle_timeout_s: 900,
            },
            network: Network::None,
            auto_resume: true,
            created_at: Utc::now(),
            started_at: Some(Utc::now()),
            expires_at: None,
            stopped_at: None,
            last_activity_at: None,
            reason: None,
            archive: None,
            volume_kept: false,
            allow_root: false,
            node: None,
            generation: 0,
            runtime: Default::default(),
        }
    }

    /// When the idle deadline falls, given the latest activity.
    pub fn idle_deadline(&self) -> Option<DateTime<Utc>> {
        let last = self.last_activity_at.or(self.started_at)?;
        Some(last + chrono::Duration::seconds(self.limits.idle_timeout_s as i64))
    }
}
