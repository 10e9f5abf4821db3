//! This node in its cluster: its heartbeat (with what the sandboxes it holds reserve),
//! the relay of the other nodes' events, the list of nodes, and whether what needs the
//! other nodes can be served now.

use super::{SandboxError, SandboxService};
use crate::cluster::{Load, NodeInfo, HEARTBEAT};
use crate::domain::{Sandbox, SandboxState};
use std::sync::Arc;
use tokio::task::JoinHandle;

impl SandboxService {
    /// Starts the heartbeat, the event relay and the event publisher (none on a single
    /// node).
    pub fn spawn_cluster(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let Some(cluster) = self.cluster.clone() else {
            return Vec::new();
        };
        let this = self.clone();
        let beating = cluster.clone();
        let heartbeat = tokio::spawn(async move {
            let machine = crate::cluster::machine();
            let mut down = false;
            loop {
                let load = this.load().await;
                match beating.beat(machine, load).await {
                    Ok(_) if down => {
                        tracing::info!(node = %beating.node, "redis answers again: heartbeats resume");
                        down = false;
                    }
                    Ok(_) => {}
                    Err(e) if !down => {
                        tracing::warn!(node = %beating.node, error = %e,
                            "cannot heartbeat: the other nodes see this one as gone until redis answers (it keeps serving its own sandboxes)");
                        down = true;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(HEARTBEAT).await;
            }
        });
        vec![
            heartbeat,
            tokio::spawn(cluster.clone().relay_events(self.events.clone())),
            tokio::spawn(cluster.run_publisher()),
        ]
    }

    /// Whether this node holds `sandbox` (on a single node, every one; in a cluster,
    /// those made on it: their containers and volumes are on its engine).
    pub(super) fn holds(&self, sandbox: &Sandbox) -> bool {
        sandbox.node == self.node_name()
    }

    /// The sandboxes this node holds, in `state` (all states when `None`).
    pub(super) async fn local_sandboxes(
        &self,
        state: Option<SandboxState>,
    ) -> Result<Vec<Sandbox>, SandboxError> {
        let mut all = self.store.list_sandboxes(None, state).await?;
        all.retain(|s| self.holds(s));
        Ok(all)
    }

    /// What this node's running sandboxes reserve (the warm pool's included: they hold
    /// their CPU and memory too).
    async fn load(&self) -> Load {
        let node = self.node_name();
        let running = self
            .local_sandboxes(Some(SandboxState::Running))
            .await
            .unwrap_or_default();
        running
            .iter()
            .filter(|s| s.node == node)
            .fold(Load::default(), |load, s| Load {
                reserved_cpu: load.reserved_cpu + s.limits.cpu,
                reserved_memory_mb: load.reserved_memory_mb + s.limits.memory_mb,
                sandboxes: load.sandboxes + 1,
            })
    }

    /// The nodes alive in the cluster; on a single node, this one.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, SandboxError> {
        match &self.cluster {
            Some(cluster) => cluster
                .nodes()
                .await
                .map_err(|e| SandboxError::ClusterDown(e.to_string())),
            None => {
                let (cpus, memory_mb) = crate::cluster::machine();
                let load = self.load().await;
                Ok(vec![NodeInfo {
                    name: crate::cluster::host_name(),
                    advertise: None,
                    epoch: 0,
                    cpus,
                    memory_mb,
                    reserved_cpu: load.reserved_cpu,
                    reserved_memory_mb: load.reserved_memory_mb,
                    sandboxes: load.sandboxes,
                    heartbeat_at: chrono::Utc::now(),
                }])
            }
        }
    }

    /// `ClusterDown` when this node is in a cluster and cannot follow the other nodes'
    /// events now (an event stream would silently show this node's alone).
    pub fn cluster_events_available(&self) -> Result<(), SandboxError> {
        match &self.cluster {
            Some(cluster) if !cluster.events_up() => Err(SandboxError::ClusterDown(
                "the other nodes' events cannot be followed while redis is unavailable".into(),
            )),
            _ => Ok(()),
        }
    }
}
