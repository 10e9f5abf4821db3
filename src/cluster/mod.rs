//! Cluster membership and events over Redis (`BERTH_REDIS_URL`): each node heartbeats
//! `berth:node:{name}` (its address, epoch and load, expiring after the lease), so the
//! nodes alive are the keys present; lifecycle events are published on
//! `berth:events:{tenant}` and every node relays the other nodes' events to its own
//! subscribers. Redis being down never stops a node serving what it owns: heartbeats and
//! publishes are retried, and what needs the other nodes answers `503` meanwhile.

pub mod forward;
pub mod hop;

use crate::domain::{SandboxId, SandboxState, TenantId};
use crate::sandbox::events::{Event, EventHub, EventKind};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node whose heartbeat is this old is gone (its key expires).
pub const LEASE: Duration = Duration::from_secs(5);
/// Deadline of one Redis call: a Redis that does not answer counts as down.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before subscribing again after the event stream broke.
const RESUBSCRIBE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("BERTH_REDIS_URL {url:?} is not a Redis URL: {message}")]
    Config { url: String, message: String },
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        ClusterError::Unavailable(e.to_string())
    }
}

/// The `[cluster]` section: Redis and this node's name and address.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port`: join the cluster of the nodes on this Redis (unset: one node).
    pub redis_url: Option<String>,
    /// This node's name (unique in the cluster; the host's name when unset).
    pub node_name: Option<String>,
    /// The URL other nodes reach this one at (`http://10.0.0.5:8080`; by default the
    /// address it listens on, when that is not a wildcard).
    pub advertise: Option<String>,
    /// The key nodes sign their hops with (the same on every node, 32+ characters):
    /// requests one node forwards to another carry its HMAC, never a tenant's key.
    pub secret: Option<hop::Secret>,
}

/// A node as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Taken once per start: a restarted node has a new one.
    pub epoch: u64,
    pub cpus: f64,
    pub memory_mb: u64,
    /// What its live sandboxes reserve.
    pub reserved_cpu: f64,
    pub reserved_memory_mb: u64,
    pub sandboxes: u64,
    pub heartbeat_at: DateTime<Utc>,
}

/// What a node's sandboxes use, for its heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    pub reserved_cpu: f64,
    pub reserved_memory_mb: u64,
    pub sandboxes: u64,
}

/// An event as it travels between nodes (the tenant travels in the channel's name).
#[derive(Debug, Serialize, Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: EventKind,
    sandbox_id: SandboxId,
    state: SandboxState,
    at: DateTime<Utc>,
    node: String,
}

/// This node's membership, and its link to the other nodes' events.
pub struct Cluster {
    pub node: String,
    pub advertise: Option<String>,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// 0 until Redis gave one.
    epoch: AtomicU64,
    /// The relay is subscribed: other nodes' events reach this one's subscribers.
    events_up: AtomicBool,
    /// This node's events on their way to Redis, in order.
    outbox: tokio::sync::mpsc::Sender<(TenantId, WireEvent)>,
    outbox_rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<(TenantId, WireEvent)>>>,
}

/// A cluster-wide lock this node holds (see [`Cluster::hold`]); released on drop, if it
/// is still this holder's.
pub struct HeldLock {
    cluster: Arc<Cluster>,
    key: String,
    token: String,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let (cluster, key, token) = (
            self.cluster.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        // Compare and delete in one step: a lock that expired and was taken by another
        // node is left to it.
        tokio::spawn(async move {
            let release = redis::cmd("EVAL")
                .arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end")
                .arg(1)
                .arg(&key)
                .arg(&token)
                .clone();
            let _: Result<i64, _> = cluster.query(&release).await;
        });
    }
}

/// Events waiting for Redis before the newest are dropped (and said so).
const OUTBOX: usize = 4096;

fn node_key(name: &str) -> String {
    format!("berth:node:{name}")
}

fn events_channel(tenant: &TenantId) -> String {
    format!("berth:events:{tenant}")
}

const EVENTS_PATTERN: &str = "berth:events:*";

impl Cluster {
    /// A member named `node` of the cluster on `url` (nothing is contacted yet: a Redis
    /// that is down at start is retried by the heartbeat).
    pub fn new(url: &str, node: String, advertise: Option<String>) -> Result<Self, ClusterError> {
        let client = redis::Client::open(url).map_err(|e| ClusterError::Config {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        let (outbox, outbox_rx) = tokio::sync::mpsc::channel(OUTBOX);
        Ok(Cluster {
            node,
            advertise,
            client,
            conn: tokio::sync::Mutex::new(None),
            epoch: AtomicU64::new(0),
            events_up: AtomicBool::new(false),
            outbox,
            outbox_rx: std::sync::Mutex::new(Some(outbox_rx)),
        })
    }

    /// Runs one command on the shared connection (made again when it broke), bounded by
    /// [`REDIS_TIMEOUT`].
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ClusterError> {
        let mut conn = {
            let mut slot = self.conn.lock().await;
            match slot.as_ref() {
                Some(conn) => conn.clone(),
                None => {
                    let made = tokio::time::timeout(
                        REDIS_TIMEOUT,
                        self.client.get_multiplexed_async_connection(),
                    )
                    .await
                    .map_err(|_| ClusterError::Unavailable("connecting timed out".into()))??;
                    *slot = Some(made.clone());
                    made
                }
            }
        };
        match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            failed => {
                // The next call connects afresh.
                *self.conn.lock().await = None;
                Err(match failed {
                    Ok(Err(e)) => e.into(),
                    _ => ClusterError::Unavailable("a call timed out".into()),
                })
            }
        }
    }

    /// Says this node is alive, with its load (its epoch taken first, once).
    pub async fn beat(&self, machine: (f64, u64), load: Load) -> Result<NodeInfo, ClusterError> {
        let mut epoch = self.epoch.load(Ordering::SeqCst);
        if epoch == 0 {
            epoch = self
                .query(redis::cmd("INCR").arg(format!("berth:epoch:{}", self.node)))
                .await?;
            self.epoch.store(epoch, Ordering::SeqCst);
        }
        let info = NodeInfo {
            name: self.node.clone(),
            advertise: self.advertise.clone(),
            epoch,
            cpus: machine.0,
            memory_mb: machine.1,
            reserved_cpu: load.reserved_cpu,
            reserved_memory_mb: load.reserved_memory_mb,
            sandboxes: load.sandboxes,
            heartbeat_at: Utc::now(),
        };
        let value = serde_json::to_string(&info)
            .map_err(|e| ClusterError::Unavailable(format!("encoding the heartbeat: {e}")))?;
        let _: () = self
            .query(
                redis::cmd("SET")
                    .arg(node_key(&self.node))
                    .arg(value)
                    .arg("PX")
                    .arg(LEASE.as_millis() as u64),
            )
            .await?;
        Ok(info)
    }

    /// Takes the cluster-wide lock `name` for `ttl` if no node holds it (or this one
    /// does: it is renewed); false when another node does. For sweeps one node does at a
    /// time: the holder that stops renewing it loses it after `ttl`.
    pub async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, ClusterError> {
        let key = format!("berth:lock:{name}");
        let taken: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&self.node)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64),
            )
            .await?;
        if taken.is_some() {
            return Ok(true);
        }
        let holder: Option<String> = self.query(redis::cmd("GET").arg(&key)).await?;
        if holder.as_deref() != Some(self.node.as_str()) {
            return Ok(false);
        }
        let _: () = self
            .query(redis::cmd("PEXPIRE").arg(&key).arg(ttl.as_millis() as u64))
            .await?;
        Ok(true)
    }

    /// Holds the cluster-wide lock `name` until the guard drops (or `ttl` passes, if this
    /// node stops meanwhile), waiting up to `wait` for another node to release it: None
    /// when it stayed taken.
    pub async fn hold(
        self: &Arc<Self>,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<HeldLock>, ClusterError> {
        let key = format!("berth:lock:{name}");
        let token = uuid::Uuid::new_v4().to_string();
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(2);
        loop {
            let taken: Option<String> = self
                .query(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&token)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl.as_millis() as u64),
                )
                .await?;
            if taken.is_some() {
                return Ok(Some(HeldLock {
                    cluster: self.clone(),
                    key,
                    token,
                }));
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The nodes alive now (their heartbeats not expired), by name.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg("berth:node:*")
                        .arg("COUNT")
                        .arg(500),
                )
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = self.query(redis::cmd("MGET").arg(&keys)).await?;
        let mut nodes: Vec<NodeInfo> = values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }

    /// Queues `event` for the other nodes (this node's subscribers have it already); an
    /// event that finds the queue full (Redis down a long while) is dropped and logged.
    pub fn send(&self, event: &Event) {
        let wire = WireEvent {
            kind: event.kind,
            sandbox_id: event.sandbox_id.clone(),
            state: event.state,
            at: event.at,
            node: self.node.clone(),
        };
        if self.outbox.try_send((event.tenant.clone(), wire)).is_err() {
            tracing::warn!(sandbox = %event.sandbox_id, "the cluster's event queue is full (redis down?): an event goes to this node's subscribers only");
        }
    }

    /// Publishes the queued events in order, each retried until Redis takes it, until the
    /// task is dropped.
    pub async fn run_publisher(self: Arc<Self>) {
        let Some(mut queue) = self
            .outbox_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        while let Some((tenant, wire)) = queue.recv().await {
            let Ok(payload) = serde_json::to_string(&wire) else {
                continue;
            };
            let channel = events_channel(&tenant);
            loop {
                let sent: Result<i64, _> = self
                    .query(redis::cmd("PUBLISH").arg(&channel).arg(&payload))
                    .await;
                match sent {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "an event waits for redis");
                        tokio::time::sleep(RESUBSCRIBE).await;
                    }
                }
            }
        }
    }

    /// Whether other nodes' events reach this node now.
    pub fn events_up(&self) -> bool {
        self.events_up.load(Ordering::SeqCst)
    }

    /// Relays the other nodes' events to this node's subscribers, subscribing again
    /// whenever the stream breaks, until the task is dropped.
    pub async fn relay_events(self: Arc<Self>, hub: Arc<EventHub>) {
        loop {
            match self.subscribe().await {
                Ok(mut pubsub) => {
                    self.events_up.store(true, Ordering::SeqCst);
                    tracing::info!(node = %self.node, "following the cluster's events");
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        if let Some(event) = self.remote_event(&message) {
                            hub.emit(event);
                        }
                    }
                    self.events_up.store(false, Ordering::SeqCst);
                    tracing::warn!(
                        "the cluster's event stream broke (redis went away?); subscribing again"
                    );
                }
                Err(e) => {
                    self.events_up.store(false, Ordering::SeqCst);
                    tracing::debug!(error = %e, "cannot follow the cluster's events yet");
                }
            }
            tokio::time::sleep(RESUBSCRIBE).await;
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, ClusterError> {
        let mut pubsub = tokio::time::timeout(REDIS_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| ClusterError::Unavailable("connecting timed out".into()))??;
        tokio::time::timeout(REDIS_TIMEOUT, pubsub.psubscribe(EVENTS_PATTERN))
            .await
            .map_err(|_| ClusterError::Unavailable("subscribing timed out".into()))??;
        Ok(pubsub)
    }

    /// Another node's event out of a message (this node's own, and anything malformed,
    /// are skipped).
    fn remote_event(&self, message: &redis::Msg) -> Option<Event> {
        let tenant = message
            .get_channel_name()
            .strip_prefix("berth:events:")
            .and_then(|t| TenantId::parse(t).ok())?;
        let payload: String = message.get_payload().ok()?;
        let wire: WireEvent = serde_json::from_str(&payload).ok()?;
        (wire.node != self.node).then_some(Event {
            kind: wire.kind,
            sandbox_id: wire.sandbox_id,
            tenant,
            state: wire.state,
            at: wire.at,
            node: Some(wire.node),
        })
    }
}

/// This machine's CPUs and memory (MiB), as heartbeats report them.
pub fn machine() -> (f64, u64) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    (cpus, memory_kib / 1024)
}

/// The host's name, the default node name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "berth".to_string())
}
