//! The composition root: the only place that names concrete adapters. Builds the store,
//! the Docker engine, the image and sandbox services and the router; takes a bound
//! listener and a shutdown future so tests can run it on port 0.

use crate::api::{self, AppState};
use crate::config::Config;
use crate::docker::{DockerEngine, DockerError};
use crate::domain::{ApiKey, TenantId};
use crate::images::ImageService;
use crate::sandbox::{HostFiles, SandboxService};
use crate::store::{self, Store, StoreError};
use axum::serve::ListenerExt;
use berth_runtime::wire::STATX_COMPAT_PATH;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The static `berth-agent`, built by `build.rs` and embedded here.
pub static AGENT_BINARY: &[u8] = include_bytes!(env!("BERTH_AGENT_PATH"));

/// The shared object gVisor sandboxes preload (`runtime/gvisor/statx_compat.c`).
pub static STATX_COMPAT: &[u8] = include_bytes!(env!("BERTH_STATX_COMPAT_PATH"));

/// How long open connections may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Name of the file holding the default tenant's first key.
pub const DEFAULT_KEY_FILE: &str = "default-api-key";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot prepare data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot reach Docker ({0}); is the Docker daemon running and is its socket readable by this user?")]
    Docker(#[from] DockerError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("start-up reconciliation failed: {0}")]
    Reconcile(String),
    #[error("another berth server (pid {pid}) is using the data dir {dir}; stop it first, or give this one its own BERTH_DATA_DIR")]
    Locked { dir: PathBuf, pid: String },
    #[error("{0}")]
    Archive(#[from] crate::archive::ArchiveError),
    #[error("{0} (disk_quotas = \"on\"; set BERTH_DISK_QUOTAS=off to run without them)")]
    Disk(crate::disk::DiskError),
    #[error("{0}")]
    Runtime(String),
    #[error("{0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

pub struct Application {
    /// Held while the server lives: a second server on the same data dir is refused.
    _lock: std::fs::File,
    listener: TcpListener,
    state: AppState,
    /// Set when this start created the default tenant: where its key was written.
    pub new_key_file: Option<PathBuf>,
}

impl Application {
    pub async fn build(mut config: Config) -> Result<Self, StartupError> {
        prepare_data_dir(&config.data_dir)?;
        let lock = lock_data_dir(&config.data_dir)?;
        let store = store::open(&config.database_url()).await?;
        let docker = DockerEngine::connect(Duration::from_secs(config.docker_timeout_s)).await?;
        docker.ping().await?;
        fit_to_host(&mut config, docker.host_cpus().await?);
        report_runtimes(&docker, &config).await?;
        let config = Arc::new(config);
        let host_files = install_host_files(&config.data_dir)?;
        let instance = instance_id(&config.data_dir)?;
        let images = ImageService::new(
            docker.clone(),
            config.data_dir.clone(),
            config.images.clone(),
        );
        let archive =
            crate::archive::ArchiveStore::open(&config.archive, &config.data_dir.join("archive"))?;
        let disks = disk_quotas(&config).await?;
        // Bound before joining: a node's address defaults to the one it listens on.
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| StartupError::Listen {
                    addr: config.listen.clone(),
                    source,
                })?;
        let cluster = join_cluster(&config, listener.local_addr().ok())?;
        let adapters = crate::sandbox::Adapters {
            store: store.clone(),
            docker,
            images,
            archive,
            disks,
            cluster,
        };
        let service = SandboxService::new(config.clone(), adapters, host_files, instance);
        service.announce().await;
        let report = service
            .reconcile()
            .await
            .map_err(|e| StartupError::Reconcile(e.to_string()))?;
        tracing::info!(?report, "reconciled with Docker");
        let new_key_file = bootstrap_default_tenant(store.as_ref(), &config.data_dir).await?;
        Ok(Application {
            _lock: lock,
            listener,
            state: AppState::new(service),
            new_key_file,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub fn service(&self) -> Arc<SandboxService> {
        self.state.service.clone()
    }

    /// Serves until `shutdown` completes; the reaper runs alongside. Then `/readyz` turns
    /// 503 and terminals close with 1001 while requests are still taken for
    /// `shutdown_notice_ms`; after that, requests under way get [`SHUTDOWN_GRACE`] to
    /// finish. Sandboxes keep running.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let reaper = self.state.service.spawn_reaper();
        let watcher = self.state.service.spawn_watcher();
        let disk_watch = self.state.service.spawn_disk_watch();
        // Terminals that lived on in running sandboxes are recorded again.
        let recorders = tokio::spawn({
            let service = self.state.service.clone();
            async move { service.resume_recorders().await }
        });
        let pool = self.state.service.spawn_pool_filler();
        let cluster = self.state.service.spawn_cluster();
        let service = self.state.service.clone();
        let ending = self.state.service.clone();
        let app = api::router(self.state);
        let stopping = Arc::new(tokio::sync::Notify::new());
        let signal = stopping.clone();
        // Streamed answers leave in several writes; without TCP_NODELAY the last one waits
        // for the client's delayed ACK (~40 ms a request).
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let notice = Duration::from_millis(service.config().shutdown_notice_ms);
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            // Not ready any more (load balancers take note), terminals told to go; new
            // requests are still served for the notice, then only those under way are.
            service.begin_shutdown();
            tokio::time::sleep(notice).await;
            signal.notify_one();
        });
        let result = tokio::select! {
            result = serve => result,
            _ = async { stopping.notified().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => Ok(()),
        };
        reaper.abort();
        watcher.abort();
        if let Some(disk_watch) = disk_watch {
            disk_watch.abort();
        }
        recorders.abort();
        ending.stop_recorders(SHUTDOWN_GRACE).await;
        cluster.iter().for_each(|task| task.abort());
        if let Some(pool) = pool {
            pool.abort();
        }
        // Read-only helpers run nothing of anyone's: they go with their server (what is
        // still up after this goes at the next start).
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, ending.remove_readers()).await;
        result
    }
}

/// This node's membership of the cluster on `BERTH_REDIS_URL`, if one is set (Redis need
/// not answer yet: the heartbeat keeps trying, and the node serves its own meanwhile).
fn join_cluster(
    config: &Config,
    bound: Option<std::net::SocketAddr>,
) -> Result<Option<Arc<crate::cluster::Cluster>>, StartupError> {
    let Some(url) = &config.cluster.redis_url else {
        return Ok(None);
    };
    let node = config
        .cluster
        .node_name
        .clone()
        .unwrap_or_else(crate::cluster::host_name);
    // Unset, the address it listens on, unless that is every interface's (which one the
    // other nodes reach is not known here: they cannot send it requests then).
    let advertise = config.cluster.advertise.clone().or_else(|| {
        let bound = bound.filter(|a| !a.ip().is_unspecified())?;
        Some(format!("http://{bound}"))
    });
    if advertise.is_none() {
        tracing::warn!(node = %node, "no --advertise and listening on every interface: other nodes cannot forward this node's sandboxes' requests to it");
    }
    tracing::info!(node = %node, advertise = ?advertise, "joining the cluster on redis");
    let cluster = crate::cluster::Cluster::new(url, node, advertise)?;
    Ok(Some(Arc::new(cluster)))
}

/// Loop-backed volumes of `disk_mb` when the config wants them and the host can.
async fn disk_quotas(config: &Config) -> Result<Option<crate::disk::Disks>, StartupError> {
    use crate::config::DiskQuotas;
    if config.disk_quotas == DiskQuotas::Off {
        tracing::info!("disk quotas are off: disk_mb is recorded, not enforced");
        return Ok(None);
    }
    let disks = crate::disk::Disks::new(
        config.data_dir.join("disks"),
        berth_runtime::wire::SANDBOX_USER_IDS,
        crate::disk::WriteLimit {
            bytes_per_s: config.disk_write_mbps * 1_000_000,
            iops: config.disk_write_iops,
        },
    );
    match disks.probe().await {
        Ok(()) => {
            tracing::info!("disk quotas are on: each volume is an ext4 filesystem of its disk_mb");
            Ok(Some(disks))
        }
        Err(e) if config.disk_quotas == DiskQuotas::Auto => {
            tracing::warn!(error = %e, "disk quotas are off: disk_mb is recorded, not enforced");
            Ok(None)
        }
        Err(e) => Err(StartupError::Disk(e)),
    }
}

/// Lowers the CPU ceiling (and default) to what the engine can give one container, so a
/// request past it is a clear 400 rather than Docker's refusal.
fn fit_to_host(config: &mut Config, host_cpus: u64) {
    let cpus = host_cpus as f64;
    if config.limits.max_cpu > cpus {
        tracing::info!(
            configured = config.limits.max_cpu,
            host = cpus,
            "the CPU ceiling is lowered to this host's CPUs"
        );
        config.limits.max_cpu = cpus;
    }
    config.defaults.cpu = config.defaults.cpu.min(cpus);
}

/// How long a start waits for the data dir's lock held by an earlier server of its own
/// process.
const SAME_PROCESS_LOCK_WAIT: Duration = Duration::from_secs(3);

/// Takes the data dir's lock file (an exclusive `flock`, released when the process
/// ends, however it ends) and writes this process's pid into it.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StartupError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = dir.join("berth.lock");
    let err = |source| StartupError::DataDir {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(err)?;
    // A server of this same process that just ended may hold it a moment longer (a child
    // forked meanwhile shares the descriptor until it execs): that one is waited for.
    let deadline = std::time::Instant::now() + SAME_PROCESS_LOCK_WAIT;
    // SAFETY: flock(2) on a descriptor we own.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut pid = String::new();
        let _ = file.rewind().and_then(|_| file.read_to_string(&mut pid));
        let pid = pid.trim().to_string();
        if pid != std::process::id().to_string() || std::time::Instant::now() >= deadline {
            return Err(StartupError::Locked {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    file.set_len(0).map_err(err)?;
    file.rewind().map_err(err)?;
    write!(file, "{}", std::process::id()).map_err(err)?;
    Ok(file)
}

fn prepare_data_dir(dir: &Path) -> Result<(), StartupError> {
    let err = |source| StartupError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir.join("sandboxes")).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    Ok(())
}

/// This data dir's instance id (created on first start): the label that scopes which
/// containers this server owns.
pub fn instance_id(data_dir: &Path) -> Result<String, StartupError> {
    let path = data_dir.join("instance-id");
    let err = |source| StartupError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
            std::fs::write(&path, format!("{id}\n")).map_err(err)?;
            Ok(id)
        }
    }
}

/// Writes the embedded agent to `<data_dir>/bin/berth-agent-<hash>` (once per version).
pub fn install_host_files(data_dir: &Path) -> Result<HostFiles, StartupError> {
    let statx_compat = install_file(data_dir, "berth-statx-compat", ".so", STATX_COMPAT, 0o644)?;
    let preload = format!("{STATX_COMPAT_PATH}\n");
    Ok(HostFiles {
        agent: install_file(data_dir, "berth-agent", "", AGENT_BINARY, 0o755)?,
        statx_compat,
        preload_list: install_file(data_dir, "ld.so.preload", "", preload.as_bytes(), 0o644)?,
    })
}

/// Writes `bytes` once to `data_dir/bin/<stem>-<hash><suffix>` (atomically) and returns
/// that path: a new build gets a new file, and running sandboxes keep theirs.
fn install_file(
    data_dir: &Path,
    stem: &str,
    suffix: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<PathBuf, StartupError> {
    let hash = hex::encode(Sha256::digest(bytes));
    let bin_dir = data_dir.join("bin");
    let target = bin_dir.join(format!("{stem}-{}{suffix}", &hash[..16]));
    let err = |source| StartupError::DataDir {
        path: bin_dir.clone(),
        source,
    };
    if !target.exists() {
        std::fs::create_dir_all(&bin_dir).map_err(err)?;
        let temp = bin_dir.join(format!(".{stem}-{}.tmp{}", &hash[..16], std::process::id()));
        std::fs::write(&temp, bytes).map_err(err)?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
        std::fs::rename(&temp, &target).map_err(err)?;
    }
    Ok(target)
}

/// Creates a key for `tenant` (creating the tenant if new) and returns it; only its hash
/// is stored.
pub async fn create_api_key(store: &dyn Store, tenant: &TenantId) -> Result<ApiKey, StoreError> {
    store.ensure_tenant(tenant).await?;
    let key = ApiKey::generate();
    store
        .add_api_key(tenant, &key.hash(), &key.expose()[..7])
        .await?;
    Ok(key)
}

/// On first start with an empty store: a `default` tenant whose key goes to a 0600 file.
async fn bootstrap_default_tenant(
    store: &dyn Store,
    data_dir: &Path,
) -> Result<Option<PathBuf>, StartupError> {
    if store.tenant_count().await? > 0 {
        return Ok(None);
    }
    let tenant = TenantId::parse("default").expect("valid name");
    let key = create_api_key(store, &tenant).await?;
    let path = data_dir.join(DEFAULT_KEY_FILE);
    let err = |source| StartupError::DataDir {
        path: path.clone(),
        source,
    };
    std::fs::write(&path, format!("{}\n", key.expose())).map_err(err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(Some(path))
}

/// Says which runtimes the engine offers (and so whether `gvisor` can be asked for); a
/// default runtime the engine lacks stops the start.
async fn report_runtimes(docker: &DockerEngine, config: &Config) -> Result<(), StartupError> {
    let offered = docker.runtimes().await?;
    let gvisor = offered.iter().any(|r| r == "runsc");
    tracing::info!(
        runtimes = %offered.join(", "),
        gvisor = if gvisor { "available" } else { "missing (apt-get install runsc; see README)" },
        "engine runtimes"
    );
    if config.defaults.runtime == crate::domain::Runtime::Gvisor && !gvisor {
        return Err(StartupError::Runtime(
            "defaults.runtime is gvisor but the Docker engine has no runsc runtime: apt-get install runsc and register it in /etc/docker/daemon.json (see README)".into(),
        ));
    }
    Ok(())
}
