//! The sandbox lifecycle service: the state machine applied to real containers and
//! volumes, limits, activity and deadlines, and access to a sandbox's agent.

mod activity;
mod budget;
mod container;
mod counts;
mod create;
mod delete;
mod disk_watch;
mod error;
pub(crate) mod events;
mod fairness;
mod locks;
mod membership;
mod network;
mod node_loss;
mod ops;
mod pool;
mod reader;
mod reaper;
mod reconcile;
mod recorder;
mod resume;
mod run_tests;
mod sessions;
mod snapshots;
mod stop;
mod tar_guard;
mod terminals;
mod volumes;
mod watch;

pub use create::Idempotency;
pub use error::SandboxError;
pub use events::{Event, EventKind, Subscription};
pub use membership::{Ask, Route};
pub use ops::{AgentReply, ExecReply, MAX_LIST_DEPTH, MAX_SEARCH_RESULTS};
pub use pool::PoolFigures;
pub use sessions::SESSION_LABEL;
pub use snapshots::SnapshotRead;
pub use terminals::{valid_session, TerminalAttach, TerminalInfo, TerminalRequest};
pub use volumes::VolumeInfo;

use crate::agent::AgentClient;
use crate::config::Config;
use crate::docker::DockerEngine;
use crate::domain::{
    LabelFilter, PatchSandbox, Sandbox, SandboxId, SandboxState, SnapshotState, TenantId, Usage,
};
use crate::images::ImageService;
use crate::store::Store;
use activity::ActivityLog;
use budget::{Budget, BudgetLimits};
use counts::StateCounts;
use std::path::PathBuf;
use std::sync::Arc;

/// What an operation on a sandbox's agent does, for auto-resume and idle tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// exec, file writes, terminals: may resume a stopped sandbox with `auto_resume`.
    Mutating,
    /// reads: never resume anything.
    ReadOnly,
}

pub struct SandboxService {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    docker: DockerEngine,
    images: Arc<ImageService>,
    host_files: HostFiles,
    /// This server's instance id (labels its containers).
    instance: String,
    locks: locks::LockMap<SandboxId>,
    /// Serialises the first use of a named session (tenant, session id).
    session_locks: locks::LockMap<(TenantId, String)>,
    /// Read-only helpers of sandboxes that are not running, with their last use.
    readers: reader::Readers,
    activity: Arc<ActivityLog>,
    budget: Arc<Budget>,
    /// Held while a create checks the quota and inserts its record.
    admission: tokio::sync::Mutex<()>,
    counts: StateCounts,
    events: Arc<events::EventHub>,
    pool: pool::Pool,
    recorders: recorder::Recorders,
    viewers: Arc<terminals::Viewers>,
    archive: crate::archive::ArchiveStore,
    /// Fixed-size filesystems for volumes (`None`: disk quotas are off).
    disks: Option<crate::disk::Disks>,
    /// Membership and events of the cluster (`None`: a single node).
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Where running sandboxes' root layers are (for the disk check).
    layers: disk_watch::Layers,
    /// An archive pass is running (one at a time).
    archiving: std::sync::atomic::AtomicBool,
    /// Reads out of snapshots under way (each holds a blocking thread).
    snapshot_reads: Arc<tokio::sync::Semaphore>,
    /// Sandboxes whose archiving failed, and when to try again.
    archive_backoff: std::sync::Mutex<std::collections::HashMap<SandboxId, std::time::Instant>>,
    /// True once the server began shutting down.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The sandboxes' bridge network is made and the host closed to it.
    bridge_ready: tokio::sync::Mutex<bool>,
}

/// berth's own files on the host that sandboxes get read-only.
#[derive(Debug, Clone)]
pub struct HostFiles {
    /// The agent binary (PID 1 of every sandbox).
    pub agent: PathBuf,
    /// The statx shim gVisor sandboxes preload, and the `/etc/ld.so.preload` naming it.
    pub statx_compat: PathBuf,
    pub preload_list: PathBuf,
}

/// The adapters a [`SandboxService`] drives.
pub struct Adapters {
    pub store: Arc<dyn Store>,
    pub docker: DockerEngine,
    pub images: Arc<ImageService>,
    pub archive: crate::archive::ArchiveStore,
    /// Fixed-size volume filesystems, where this host can make them.
    pub disks: Option<crate::disk::Disks>,
    /// The cluster this node belongs to (`BERTH_REDIS_URL`), if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl SandboxService {
    pub fn new(
        config: Arc<Config>,
        adapters: Adapters,
        host_files: HostFiles,
        instance: String,
    ) -> Arc<Self> {
        let Adapters {
            store,
            docker,
            images,
            archive,
            disks,
            cluster,
        } = adapters;
        let budget = Budget::new(BudgetLimits {
            per_sandbox: config.limits.max_requests_per_sandbox,
            per_tenant: config.limits.max_requests_per_tenant,
            total: config.limits.max_requests,
        });
        let events = events::EventHub::new(events::SubscriberLimits {
            per_tenant: config.limits.max_event_streams_per_tenant,
            total: config.limits.max_event_streams,
        });
        Arc::new(SandboxService {
            store,
            docker,
            images,
            host_files,
            instance,
            locks: locks::LockMap::default(),
            session_locks: locks::LockMap::default(),
            readers: reader::Readers::default(),
            activity: Arc::default(),
            budget,
            admission: tokio::sync::Mutex::new(()),
            counts: StateCounts::default(),
            events,
            pool: pool::Pool::new(config.pool.clone()),
            recorders: recorder::Recorders::default(),
            viewers: Arc::default(),
            archive,
            disks,
            cluster,
            layers: Default::default(),
            archiving: Default::default(),
            snapshot_reads: Arc::new(tokio::sync::Semaphore::new(snapshots::MAX_SNAPSHOT_READS)),
            archive_backoff: Default::default(),
            shutdown: tokio::sync::watch::Sender::new(false),
            bridge_ready: tokio::sync::Mutex::new(false),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The server is shutting down: readiness turns false, open terminals close with
    /// 1001. Sandboxes keep running.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves once the server began shutting down.
    pub fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|down| *down).await;
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The tenant an API key (by its hash) belongs to.
    pub async fn tenant_for_key(&self, key_hash: &str) -> Result<Option<TenantId>, SandboxError> {
        Ok(self.store.tenant_for_key(key_hash).await?)
    }

    /// Subscribes to `tenant`'s lifecycle events; `Busy` when too many streams are open.
    pub fn subscribe(&self, tenant: &TenantId) -> Result<Subscription, SandboxError> {
        self.cluster_events_available()?;
        self.events.subscribe(tenant).map_err(SandboxError::Busy)
    }

    pub async fn docker_ready(&self) -> Result<(), SandboxError> {
        Ok(self.docker.ping().await?)
    }

    pub async fn database_ready(&self) -> Result<(), SandboxError> {
        Ok(self.store.ping().await?)
    }

    /// Sandboxes by state, kept current on every transition.
    pub fn state_counts(&self) -> Vec<(&'static str, u64)> {
        self.counts.snapshot()
    }

    /// Agent requests in flight on the whole server.
    pub fn requests_in_flight(&self) -> usize {
        self.budget.in_flight()
    }

    /// Moves `sandbox` to `to` through the state machine's guard, with `reason`, and
    /// saves it (call with its lifecycle lock held).
    async fn transition(
        &self,
        sandbox: &mut Sandbox,
        to: SandboxState,
        reason: Option<String>,
    ) -> Result<(), SandboxError> {
        let from = sandbox.state;
        if from != to {
            from.check_transition(to)
                .map_err(|e| SandboxError::Conflict(format!("sandbox {}: {e}", sandbox.id)))?;
        }
        sandbox.state = to;
        sandbox.reason = reason;
        self.store.update_sandbox(sandbox).await?;
        // The pool's sandboxes are nobody's yet: not counted until adopted.
        if !sandbox.tenant.is_pool() {
            self.counts.moved(from, to);
        }
        Ok(())
    }

    /// Tells the tenant's subscribers here, and the other nodes' through the cluster.
    fn emit(&self, kind: EventKind, sandbox: &Sandbox) {
        let mut event = Event::new(kind, sandbox);
        if let Some(cluster) = &self.cluster {
            event.node = Some(cluster.node.clone());
            cluster.send(&event);
        }
        self.events.emit(event);
    }

    /// This node's name in its cluster (`None` on a single node).
    fn node_name(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.node.clone())
    }

    /// In a cluster, this node's name and the secret its hops are signed with.
    pub fn hop_identity(&self) -> Option<(String, crate::cluster::hop::Secret)> {
        let cluster = self.cluster.as_ref()?;
        let secret = self.config().cluster.secret.clone()?;
        Some((cluster.node.clone(), secret))
    }

    /// The lock that serialises lifecycle operations on one sandbox.
    fn lock_for(&self, id: &SandboxId) -> locks::KeyLock {
        self.locks.get(id.clone())
    }

    /// The lock that serialises finding or creating one named session's sandbox.
    fn session_lock(&self, tenant: &TenantId, session: &str) -> locks::KeyLock {
        self.session_locks
            .get((tenant.clone(), session.to_string()))
    }

    /// Forgets the locks nobody holds or waits for.
    fn prune_locks(&self) {
        self.locks.prune();
        self.session_locks.prune();
    }

    fn socket_dir(&self, id: &SandboxId) -> PathBuf {
        self.config.data_dir.join("sandboxes").join(id.as_str())
    }

    pub fn agent_client(&self, id: &SandboxId) -> AgentClient {
        AgentClient::new(self.socket_dir(id))
    }

    /// The sandbox if it exists and belongs to `tenant`; another tenant's is `NotFound`.
    pub async fn get(&self, tenant: &TenantId, id: &SandboxId) -> Result<Sandbox, SandboxError> {
        match self.store.get_sandbox(id).await? {
            Some(mut sandbox) if &sandbox.tenant == tenant => {
                self.activity.overlay(&mut sandbox);
                Ok(sandbox)
            }
            _ => Err(SandboxError::NotFound(id.to_string())),
        }
    }

    /// Resource usage: CPU and memory from Docker and the volume's bytes on disk from the
    /// agent while it runs; a stopped sandbox's bytes on disk from its volume's disk image
    /// (with disk quotas); what the archive store holds of it (its archive while it is
    /// archived, and its snapshots) in every state.
    pub async fn usage(&self, sandbox: &Sandbox) -> Option<Usage> {
        let mut usage = Usage {
            archive_bytes: self.archive_bytes(sandbox).await,
            ..Usage::default()
        };
        match sandbox.state {
            SandboxState::Running => {
                let (name, agent) = (sandbox.id.container_name(), self.agent_client(&sandbox.id));
                let (docker, disk) = tokio::join!(
                    self.docker.usage(&name),
                    agent.json::<berth_runtime::wire::DiskUsage>(
                        hyper::Method::GET,
                        "/usage",
                        None,
                        std::time::Duration::from_secs(5),
                        4096,
                    )
                );
                if let Ok(u) = docker {
                    usage.cpu_s = u.cpu_s;
                    usage.memory_bytes = u.memory_bytes;
                    usage.memory_peak_bytes = u.memory_peak_bytes;
                }
                usage.disk_bytes = disk.ok().map(|d| d.bytes);
            }
            SandboxState::Stopped => {
                usage.disk_bytes = self
                    .disks
                    .as_ref()
                    .and_then(|d| d.allocated_bytes(sandbox.volume.as_str()));
            }
            _ => {}
        }
        (usage != Usage::default()).then_some(usage)
    }

    /// Bytes the archive store holds for `sandbox`: its snapshots and its archive.
    async fn archive_bytes(&self, sandbox: &Sandbox) -> Option<u64> {
        let snapshots = self
            .store
            .list_snapshots(Some(&sandbox.tenant))
            .await
            .ok()?;
        let bytes: u64 = snapshots
            .iter()
            .filter(|s| s.sandbox_id == sandbox.id && s.state == SnapshotState::Ready)
            .map(|s| s.size_bytes)
            .sum();
        (bytes > 0).then_some(bytes)
    }

    pub async fn list(
        &self,
        tenant: &TenantId,
        state: Option<SandboxState>,
        labels: &[LabelFilter],
    ) -> Result<Vec<Sandbox>, SandboxError> {
        let mut all = self.store.list_sandboxes(Some(tenant), state).await?;
        all.retain(|s| labels.iter().all(|f| f.matches(&s.labels)));
        for s in &mut all {
            self.activity.overlay(s);
        }
        Ok(all)
    }

    pub async fn patch(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
        patch: PatchSandbox,
    ) -> Result<Sandbox, SandboxError> {
        patch
            .check(&self.config)
            .map_err(|e| SandboxError::Invalid(e.0))?;
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let mut sandbox = self.get(tenant, id).await?;
        if sandbox.state == SandboxState::Terminated {
            return Err(SandboxError::Conflict(format!(
                "sandbox {id} is terminated"
            )));
        }
        if let Some(timeout_s) = patch.timeout_s {
            sandbox.limits.timeout_s = timeout_s;
            sandbox.expires_at = sandbox
                .started_at
                .map(|t| t + chrono::Duration::seconds(timeout_s as i64));
        }
        if let Some(idle) = patch.idle_timeout_s {
            sandbox.limits.idle_timeout_s = idle;
        }
        if let Some(labels) = patch.labels {
            sandbox.labels = labels;
        }
        self.store.update_sandbox(&sandbox).await?;
        Ok(sandbox)
    }

    /// The agent of a sandbox the caller may use now: running, or resumed first when it is
    /// stopped with `auto_resume` and the access is mutating (counts as activity); for
    /// reads of a stopped or terminated sandbox, a read-only helper on its volume (of an
    /// archived one, on its archive), with this request's use of it, to keep while the
    /// request runs.
    pub(super) async fn agent_for(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        access: Access,
    ) -> Result<(Sandbox, AgentClient, Option<reader::ReaderUse>), SandboxError> {
        let mut sandbox = self.get(tenant, id).await?;
        self.here_or_refuse(&sandbox)?;
        let readable = matches!(
            sandbox.state,
            SandboxState::Stopped | SandboxState::Terminated | SandboxState::Archived
        );
        if access == Access::ReadOnly && readable {
            // Reads never resume a sandbox and are not activity.
            let (reader, using) = self.reader_agent(&sandbox).await?;
            return Ok((sandbox, reader, Some(using)));
        }
        if sandbox.state != SandboxState::Running {
            let resumable =
                sandbox.state.is_resumable() && sandbox.auto_resume && access == Access::Mutating;
            if !sandbox.state.is_resumable() {
                return Err(SandboxError::Conflict(format!(
                    "sandbox {id} is {}; it cannot run anything again (create a new sandbox)",
                    sandbox.state
                )));
            }
            if !resumable {
                return Err(SandboxError::Conflict(format!(
                    "sandbox {id} is {}; resume it first (POST /v1/sandboxes/{id}/resume)",
                    sandbox.state
                )));
            }
            sandbox = self.resume(tenant, id).await?;
        }
        self.activity.touch(id);
        Ok((sandbox.clone(), self.agent_client(id), None))
    }

    /// Called when a running sandbox's agent cannot be reached: if its container is gone
    /// or exited, the sandbox is marked stopped and the caller gets a conflict.
    pub async fn on_agent_failure(
        &self,
        sandbox: &Sandbox,
        err: crate::agent::AgentError,
    ) -> SandboxError {
        if !matches!(err, crate::agent::AgentError::Unreachable(_)) {
            return SandboxError::Agent(err);
        }
        let status = self
            .docker
            .container_status(&sandbox.id.container_name())
            .await;
        let (running, oom) = match &status {
            Ok(Some(s)) => (s.running, s.oom_killed),
            Ok(None) => (false, false),
            Err(_) => return SandboxError::Agent(err),
        };
        if running {
            return SandboxError::Agent(err);
        }
        let reason = if oom {
            stop::StopReason::Oom
        } else {
            stop::StopReason::Exited
        };
        let _ = self.mark_stopped_externally(&sandbox.id, reason).await;
        SandboxError::Conflict(format!(
            "sandbox {} stopped unexpectedly (its container {}); resume it to continue",
            sandbox.id,
            if oom {
                "was killed for exceeding its memory limit"
            } else {
                "exited"
            }
        ))
    }
}

/// Runs a lifecycle operation on its own task, so a client that goes away mid-request
/// cannot cancel it halfway: it runs to the end (or undoes itself) either way.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, SandboxError>> + Send + 'static,
) -> Result<T, SandboxError> {
    tokio::spawn(work).await.unwrap_or_else(|e| {
        Err(SandboxError::Internal(format!(
            "lifecycle task failed: {e}"
        )))
    })
}
