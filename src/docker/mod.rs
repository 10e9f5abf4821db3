//! The Docker Engine adapter (bollard): containers, volumes, images. Every call has a
//! deadline, and every failure is a typed [`DockerError`].

mod image_archive;

pub use image_archive::{load_rootfs_layer, ImageMeta};

use bollard::container::{
    Config, CreateContainerOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use bollard::models::{HostConfig, Mount, MountTypeEnum, ThrottleDevice};
use bollard::volume::{CreateVolumeOptions, RemoveVolumeOptions};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Label on everything berth creates.
pub const LABEL_MANAGED: &str = "dev.berth.managed";
/// Label carrying the sandbox id.
pub const LABEL_SANDBOX: &str = "dev.berth.sandbox";
/// Label carrying the tenant.
pub const LABEL_TENANT: &str = "dev.berth.tenant";
/// Label marking a short-lived read-only helper container (see `sandbox::reader`).
pub const LABEL_ROLE: &str = "dev.berth.role";
/// Label naming the berth instance (data dir) that owns the container, so several
/// servers can share one engine without reconciling away each other's sandboxes.
pub const LABEL_INSTANCE: &str = "dev.berth.instance";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("Docker is unreachable: {0}")]
    Unreachable(String),
    #[error("Docker did not answer {operation} within {seconds}s")]
    Timeout {
        operation: &'static str,
        seconds: u64,
    },
    #[error("{what} not found in Docker")]
    NotFound { what: String },
    #[error("Docker refused {operation}: {message}")]
    Conflict {
        operation: &'static str,
        message: String,
    },
    #[error("Docker failed {operation}: {message}")]
    Failed {
        operation: &'static str,
        message: String,
    },
    #[error("I/O while talking to Docker: {0}")]
    Io(#[from] std::io::Error),
}

impl DockerError {
    fn from_bollard(operation: &'static str, what: &str, err: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match err {
            B::DockerResponseServerError {
                status_code: 404, ..
            } => DockerError::NotFound { what: what.into() },
            B::DockerResponseServerError {
                status_code: 409,
                message,
            } => DockerError::Conflict { operation, message },
            B::DockerResponseServerError { message, .. } => {
                DockerError::Failed { operation, message }
            }
            // No socket, a refused or broken connection (the daemon is down or restarting).
            B::HyperResponseError { .. }
            | B::HyperLegacyError { .. }
            | B::IOError { .. }
            | B::SocketNotFoundError(_)
            | B::RequestTimeoutError => DockerError::Unreachable(err.to_string()),
            other => DockerError::Failed {
                operation,
                message: other.to_string(),
            },
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound { .. })
    }
}

/// What a sandbox container is made of.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub volume: String,
    pub agent_binary: PathBuf,
    pub agent_binary_target: String,
    /// Further host files bind-mounted read-only (host path, path in the container).
    pub read_only_files: Vec<(PathBuf, String)>,
    pub socket_dir: PathBuf,
    pub socket_dir_target: String,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub pids: i64,
    pub network_mode: String,
    pub hostname: String,
    /// Make the root filesystem read-only (readers).
    pub read_only: bool,
    /// Mount the volume read-only (readers of a volume that a sandbox owns).
    pub read_only_volume: bool,
    /// Capabilities kept (everything else is dropped).
    pub capabilities: Vec<String>,
    /// tmpfs mounts (path → mount options, `size=` among them): counted against memory.
    pub tmpfs: HashMap<String, String>,
    /// Size of `/dev/shm`.
    pub shm_bytes: i64,
    /// The OCI runtime (`runsc`); the engine's default when `None`.
    pub runtime: Option<String>,
    /// The cgroup the container's own goes under (its tenant's); Docker's when `None`.
    pub cgroup_parent: Option<String>,
    /// A bound on writes to one block device (the volume's loop device).
    pub write_limit: Option<DeviceWriteLimit>,
}

/// Writes to `device` at most `bytes_per_s` and `iops`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceWriteLimit {
    pub device: String,
    pub bytes_per_s: u64,
    pub iops: u64,
}

/// Docker's rule for one of a write limit's bounds (none for an unbounded one).
fn throttle(
    limit: &Option<DeviceWriteLimit>,
    bound: impl Fn(&DeviceWriteLimit) -> u64,
) -> Option<Vec<ThrottleDevice>> {
    let limit = limit.as_ref().filter(|l| bound(l) > 0)?;
    Some(vec![ThrottleDevice {
        path: Some(limit.device.clone()),
        rate: Some(bound(limit) as i64),
    }])
}

/// The state of one container, as much as berth needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub running: bool,
    pub oom_killed: bool,
    pub exit_code: Option<i64>,
}

/// A container that carries berth's labels.
#[derive(Debug, Clone)]
pub struct ManagedContainer {
    pub name: String,
    pub sandbox_id: String,
    pub running: bool,
    pub role: ContainerRole,
}

/// What a managed container is for (its `dev.berth.role` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerRole {
    /// A sandbox's own container (no role label).
    Sandbox,
    /// A short-lived read-only helper of a stopped sandbox.
    Reader,
}

impl ContainerRole {
    pub const READER_LABEL: &'static str = "reader";

    fn from_label(value: Option<&String>) -> Self {
        match value.map(String::as_str) {
            Some(Self::READER_LABEL) => ContainerRole::Reader,
            _ => ContainerRole::Sandbox,
        }
    }
}

/// A container of this instance died or was removed.
#[derive(Debug, Clone)]
pub struct ContainerGone {
    pub sandbox_id: String,
    pub role: ContainerRole,
}

/// One-shot resource usage.
#[derive(Debug, Clone, Default)]
pub struct ContainerUsage {
    pub cpu_s: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
}

/// Capabilities a sandbox keeps: enough for pip/npm/apt as root, file ownership and
/// signals; the agent drops SETUID/SETGID/SETPCAP again for user processes.
pub const SANDBOX_CAPABILITIES: [&str; 9] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
];

#[derive(Clone)]
pub struct DockerEngine {
    client: Docker,
    deadline: Duration,
    cgroups: CgroupDriver,
}

/// How the engine names cgroups (`docker info`'s cgroup driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// Paths under each controller's hierarchy (`/a/b/c`).
    Cgroupfs,
    /// systemd slices, which nest by dashes (`a-b-c.slice` is inside `a-b.slice`).
    Systemd,
    /// No cgroups (a rootless engine without them): no parent can be given.
    None,
}

impl CgroupDriver {
    /// The `CgroupParent` that puts a container in nested group `path` (names made of
    /// `[a-z0-9]`, so neither driver splits them), or `None` without cgroups.
    pub fn parent(self, path: &[&str]) -> Option<String> {
        match self {
            CgroupDriver::Cgroupfs => Some(format!("/{}", path.join("/"))),
            CgroupDriver::Systemd => Some(format!("{}.slice", path.join("-"))),
            CgroupDriver::None => None,
        }
    }
}

/// `fut` within `deadline`; either failure means the engine cannot be reached.
async fn reach<T>(
    deadline: Duration,
    operation: &'static str,
    fut: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, DockerError> {
    tokio::time::timeout(deadline, fut)
        .await
        .map_err(|_| DockerError::Timeout {
            operation,
            seconds: deadline.as_secs(),
        })?
        .map_err(|e| DockerError::Unreachable(e.to_string()))
}

impl DockerEngine {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and negotiates
    /// the API version, so older engines work too.
    pub async fn connect(deadline: Duration) -> Result<Self, DockerError> {
        let client = Docker::connect_with_local_defaults()
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        let client = reach(deadline, "version negotiation", client.negotiate_version()).await?;
        let info = reach(deadline, "info", client.info()).await?;
        use bollard::models::SystemInfoCgroupDriverEnum as Driver;
        let cgroups = match info.cgroup_driver {
            Some(Driver::SYSTEMD) => CgroupDriver::Systemd,
            Some(Driver::NONE) => CgroupDriver::None,
            _ => CgroupDriver::Cgroupfs,
        };
        Ok(DockerEngine {
            client,
            deadline,
            cgroups,
        })
    }

    /// The engine's cgroup driver, read when it was connected.
    pub fn cgroup_driver(&self) -> CgroupDriver {
        self.cgroups
    }

    pub fn client(&self) -> &Docker {
        &self.client
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        what: &str,
        fut: impl Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, DockerError> {
        match tokio::time::timeout(self.deadline, fut).await {
            Ok(result) => result.map_err(|e| DockerError::from_bollard(operation, what, e)),
            Err(_) => Err(DockerError::Timeout {
                operation,
                seconds: self.deadline.as_secs(),
            }),
        }
    }

    pub async fn ping(&self) -> Result<(), DockerError> {
        self.bounded("ping", "engine", self.client.ping())
            .await
            .map(|_| ())
    }

    /// CPUs the engine can give a container (Docker refuses more than this per container).
    pub async fn host_cpus(&self) -> Result<u64, DockerError> {
        let info = self.bounded("info", "engine", self.client.info()).await?;
        Ok(info.ncpu.unwrap_or(1).max(1) as u64)
    }

    /// The OCI runtimes the engine offers (`runc`, `runsc`, ...).
    pub async fn runtimes(&self) -> Result<Vec<String>, DockerError> {
        let info = self.bounded("info", "engine", self.client.info()).await?;
        let mut names: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        names.sort();
        Ok(names)
    }

    pub async fn image_exists(&self, reference: &str) -> Result<bool, DockerError> {
        match self
            .bounded(
                "image inspect",
                reference,
                self.client.inspect_image(reference),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Labels of a local image.
    pub async fn image_labels(
        &self,
        reference: &str,
    ) -> Result<HashMap<String, String>, DockerError> {
        let image = self
            .bounded(
                "image inspect",
                reference,
                self.client.inspect_image(reference),
            )
            .await?;
        Ok(image.config.and_then(|c| c.labels).unwrap_or_default())
    }

    /// Creates volume `name`: a directory of the `local` driver, or with `device` a
    /// filesystem of its own (an ext4 loop device, mounted `nosuid,nodev`).
    pub async fn create_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        device: Option<&str>,
    ) -> Result<(), DockerError> {
        let driver_opts = match device {
            Some(device) => HashMap::from([
                ("type".to_string(), "ext4".to_string()),
                ("device".to_string(), device.to_string()),
                ("o".to_string(), "nosuid,nodev".to_string()),
            ]),
            None => HashMap::new(),
        };
        let options = CreateVolumeOptions {
            name: name.to_string(),
            labels,
            driver_opts,
            ..Default::default()
        };
        self.bounded("volume create", name, self.client.create_volume(options))
            .await
            .map(|_| ())
    }

    /// Makes the bridge network `name` (Linux bridge `bridge`) unless it exists: no
    /// traffic between its containers (`enable_icc=false`), outbound masqueraded.
    /// Returns its subnet.
    pub async fn ensure_isolated_network(
        &self,
        name: &str,
        bridge: &str,
        labels: HashMap<String, String>,
    ) -> Result<Option<String>, DockerError> {
        let subnet = |n: bollard::models::Network| {
            n.ipam
                .and_then(|i| i.config)
                .and_then(|c| c.into_iter().find_map(|c| c.subnet))
        };
        let inspect = bollard::network::InspectNetworkOptions::<String>::default();
        match self
            .bounded(
                "network inspect",
                name,
                self.client.inspect_network(name, Some(inspect.clone())),
            )
            .await
        {
            Ok(n) => {
                // One made by hand (or by something else) is not trusted to be closed.
                let options = n.options.clone().unwrap_or_default();
                let closed = options
                    .get("com.docker.network.bridge.enable_icc")
                    .is_some_and(|v| v == "false")
                    && options
                        .get("com.docker.network.bridge.name")
                        .is_some_and(|v| v == bridge);
                if !closed {
                    return Err(DockerError::Failed {
                        operation: "network inspect",
                        message: format!(
                            "network {name} exists but is not a bridge {bridge} with enable_icc=false; remove it (docker network rm {name}) and berth makes it again"
                        ),
                    });
                }
                return Ok(subnet(n));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let options = bollard::network::CreateNetworkOptions {
            name: name.to_string(),
            driver: "bridge".to_string(),
            check_duplicate: true,
            options: HashMap::from([
                (
                    "com.docker.network.bridge.enable_icc".to_string(),
                    "false".to_string(),
                ),
                (
                    "com.docker.network.bridge.enable_ip_masquerade".to_string(),
                    "true".to_string(),
                ),
                (
                    "com.docker.network.bridge.name".to_string(),
                    bridge.to_string(),
                ),
            ]),
            labels,
            ..Default::default()
        };
        match self
            .bounded("network create", name, self.client.create_network(options))
            .await
        {
            Ok(_) => {}
            // Made meanwhile by a concurrent call.
            Err(e) if e.to_string().contains("already exists") => {}
            Err(e) => return Err(e),
        }
        let n = self
            .bounded(
                "network inspect",
                name,
                self.client.inspect_network(name, Some(inspect)),
            )
            .await?;
        Ok(subnet(n))
    }

    /// The device a volume mounts (its `device` option), if it has one; `None` when the
    /// volume does not exist either.
    pub async fn volume_device(&self, name: &str) -> Result<Option<Option<String>>, DockerError> {
        match self
            .bounded("volume inspect", name, self.client.inspect_volume(name))
            .await
        {
            Ok(v) => Ok(Some(v.options.get("device").cloned())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The host directory holding a container's writable root layer, where the storage
    /// driver says (overlay-style drivers do).
    pub async fn upper_dir(&self, name: &str) -> Result<Option<PathBuf>, DockerError> {
        let inspect = self
            .client
            .inspect_container(name, Some(InspectContainerOptions { size: false }));
        match self.bounded("container inspect", name, inspect).await {
            Ok(info) => Ok(info
                .graph_driver
                .and_then(|g| g.data.get("UpperDir").cloned())
                .map(PathBuf::from)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn volume_exists(&self, name: &str) -> Result<bool, DockerError> {
        match self
            .bounded("volume inspect", name, self.client.inspect_volume(name))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes a volume; a missing one counts as removed. `Conflict` while in use.
    pub async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        let options = Some(RemoveVolumeOptions { force: false });
        match self
            .bounded(
                "volume remove",
                name,
                self.client.remove_volume(name, options),
            )
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    pub async fn create_container(&self, spec: &ContainerSpec) -> Result<(), DockerError> {
        let read_only_bind = |source: &std::path::Path, target: &str| Mount {
            target: Some(target.to_string()),
            source: Some(source.display().to_string()),
            typ: Some(MountTypeEnum::BIND),
            read_only: Some(true),
            ..Default::default()
        };
        let mut mounts = vec![
            read_only_bind(&spec.agent_binary, &spec.agent_binary_target),
            Mount {
                target: Some(spec.socket_dir_target.clone()),
                source: Some(spec.socket_dir.display().to_string()),
                typ: Some(MountTypeEnum::BIND),
                read_only: Some(false),
                ..Default::default()
            },
            Mount {
                target: Some(spec.workdir.clone()),
                source: Some(spec.volume.clone()),
                typ: Some(MountTypeEnum::VOLUME),
                read_only: Some(spec.read_only_volume),
                ..Default::default()
            },
        ];
        mounts.extend(
            spec.read_only_files
                .iter()
                .map(|(source, target)| read_only_bind(source, target)),
        );
        let host_config = HostConfig {
            mounts: Some(mounts),
            nano_cpus: Some(spec.nano_cpus),
            memory: Some(spec.memory_bytes),
            memory_swap: Some(spec.memory_bytes),
            pids_limit: Some(spec.pids),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(spec.capabilities.clone()),
            readonly_rootfs: Some(spec.read_only),
            security_opt: Some(vec!["no-new-privileges".into()]),
            network_mode: Some(spec.network_mode.clone()),
            tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.clone()),
            shm_size: Some(spec.shm_bytes),
            runtime: spec.runtime.clone(),
            cgroup_parent: spec.cgroup_parent.clone(),
            blkio_device_write_bps: throttle(&spec.write_limit, |l| l.bytes_per_s),
            blkio_device_write_iops: throttle(&spec.write_limit, |l| l.iops),
            privileged: Some(false),
            init: Some(false),
            ..Default::default()
        };
        let config = Config {
            image: Some(spec.image.clone()),
            hostname: Some(spec.hostname.clone()),
            env: Some(spec.env.clone()),
            working_dir: Some(spec.workdir.clone()),
            entrypoint: Some(vec![spec.agent_binary_target.clone()]),
            cmd: Some(vec![]),
            labels: Some(spec.labels.clone()),
            host_config: Some(host_config),
            attach_stdin: Some(false),
            tty: Some(false),
            ..Default::default()
        };
        let options = Some(CreateContainerOptions {
            name: spec.name.clone(),
            platform: None,
        });
        self.bounded(
            "container create",
            &spec.name,
            self.client.create_container(options, config),
        )
        .await
        .map(|_| ())
    }

    /// Applies `spec`'s CPU, memory and pids limits to a running container (lowering
    /// memory below what it uses fails).
    pub async fn update_limits(&self, name: &str, spec: &ContainerSpec) -> Result<(), DockerError> {
        let options = bollard::container::UpdateContainerOptions::<String> {
            nano_cpus: Some(spec.nano_cpus),
            memory: Some(spec.memory_bytes),
            memory_swap: Some(spec.memory_bytes),
            pids_limit: Some(spec.pids),
            ..Default::default()
        };
        self.bounded(
            "container update",
            name,
            self.client.update_container(name, options),
        )
        .await
    }

    pub async fn start_container(&self, name: &str) -> Result<(), DockerError> {
        self.bounded(
            "container start",
            name,
            self.client.start_container::<String>(name, None),
        )
        .await
    }

    /// Stops (SIGTERM, then SIGKILL after `grace_s`) and removes a container; a missing
    /// one counts as removed.
    pub async fn stop_and_remove(&self, name: &str, grace_s: i64) -> Result<(), DockerError> {
        let stop = self
            .client
            .stop_container(name, Some(StopContainerOptions { t: grace_s }));
        match self.bounded("container stop", name, stop).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            // 304 (already stopped) and similar are fine; removal below forces anyway.
            Err(DockerError::Failed { .. } | DockerError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        self.remove_container(name).await
    }

    pub async fn remove_container(&self, name: &str) -> Result<(), DockerError> {
        let options = Some(RemoveContainerOptions {
            force: true,
            v: false,
            link: false,
        });
        match self
            .bounded(
                "container remove",
                name,
                self.client.remove_container(name, options),
            )
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            // Removal already in progress (e.g. a concurrent stop): fine.
            Err(DockerError::Conflict { .. }) => Ok(()),
            other => other,
        }
    }

    /// `None` when the container does not exist.
    pub async fn container_status(
        &self,
        name: &str,
    ) -> Result<Option<ContainerStatus>, DockerError> {
        let inspect = self
            .client
            .inspect_container(name, Some(InspectContainerOptions { size: false }));
        match self.bounded("container inspect", name, inspect).await {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                Ok(Some(ContainerStatus {
                    running: state.running.unwrap_or(false),
                    oom_killed: state.oom_killed.unwrap_or(false),
                    exit_code: state.exit_code,
                }))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every container (running or not) of berth instance `instance`.
    pub async fn list_managed(&self, instance: &str) -> Result<Vec<ManagedContainer>, DockerError> {
        let labels = vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_INSTANCE}={instance}"),
        ];
        let filters = HashMap::from([("label".to_string(), labels)]);
        let options = Some(ListContainersOptions {
            all: true,
            filters,
            ..Default::default()
        });
        let list = self
            .bounded(
                "container list",
                "containers",
                self.client.list_containers(options),
            )
            .await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let name = c.names?.first()?.trim_start_matches('/').to_string();
                Some(ManagedContainer {
                    name,
                    sandbox_id: labels.get(LABEL_SANDBOX).cloned().unwrap_or_default(),
                    running: c.state.as_deref() == Some("running"),
                    role: ContainerRole::from_label(labels.get(LABEL_ROLE)),
                })
            })
            .collect())
    }

    /// Containers of berth instance `instance` dying or being removed, as it happens. The
    /// stream ends (with an error) when the daemon goes away.
    pub fn containers_gone(
        &self,
        instance: &str,
    ) -> impl futures_util::Stream<Item = Result<ContainerGone, DockerError>> + Send + 'static {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "event".to_string(),
                vec!["die".to_string(), "destroy".to_string()],
            ),
            (
                "label".to_string(),
                vec![
                    format!("{LABEL_MANAGED}=true"),
                    format!("{LABEL_INSTANCE}={instance}"),
                ],
            ),
        ]);
        let options = bollard::system::EventsOptions::<String> {
            filters,
            ..Default::default()
        };
        self.client.events(Some(options)).map(|event| {
            let event = event.map_err(|e| DockerError::from_bollard("events", "engine", e))?;
            let labels = event.actor.and_then(|a| a.attributes).unwrap_or_default();
            Ok(ContainerGone {
                sandbox_id: labels.get(LABEL_SANDBOX).cloned().unwrap_or_default(),
                role: ContainerRole::from_label(labels.get(LABEL_ROLE)),
            })
        })
    }

    pub async fn usage(&self, name: &str) -> Result<ContainerUsage, DockerError> {
        let mut stream = self.client.stats(
            name,
            Some(StatsOptions {
                stream: false,
                one_shot: true,
            }),
        );
        let stats = match tokio::time::timeout(self.deadline, stream.next()).await {
            Ok(Some(Ok(stats))) => stats,
            Ok(Some(Err(e))) => return Err(DockerError::from_bollard("container stats", name, e)),
            Ok(None) => return Ok(ContainerUsage::default()),
            Err(_) => {
                return Err(DockerError::Timeout {
                    operation: "container stats",
                    seconds: self.deadline.as_secs(),
                })
            }
        };
        Ok(ContainerUsage {
            cpu_s: Some(stats.cpu_stats.cpu_usage.total_usage as f64 / 1e9),
            memory_bytes: stats.memory_stats.usage,
            memory_peak_bytes: stats.memory_stats.max_usage,
        })
    }
}
