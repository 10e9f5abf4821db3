//! This node in its cluster: its heartbeat (with what the sandboxes it holds reserve),
//! the relay of the other nodes' events, the list of nodes, and whether what needs the
//! other nodes can be served now; where a sandbox's requests are served (the node that
//! holds it) and where a new one goes (the node asked for, or the least loaded with room).

use super::{SandboxError, SandboxService};
use crate::cluster::{Load, NodeInfo, HEARTBEAT};
use crate::domain::{Sandbox, SandboxId, SandboxState, TenantId};
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
            tokio::spawn(self.clone().watch_node_loss()),
        ]
    }

    /// One heartbeat now, before the start-up reconciliation takes up sandboxes marked
    /// lost while this node was away (so no node marks them lost again meanwhile). Best
    /// effort: Redis down, the heartbeat task keeps trying.
    pub async fn announce(&self) {
        if let Some(cluster) = &self.cluster {
            let load = self.load().await;
            if let Err(e) = cluster.beat(crate::cluster::machine(), load).await {
                tracing::warn!(error = %e, "cannot heartbeat yet");
            }
        }
    }

    /// Whether this node holds `sandbox` (on a single node, every one; in a cluster,
    /// those made on it: their containers and volumes are on its engine).
    pub(super) fn holds(&self, sandbox: &Sandbox) -> bool {
        sandbox.node == self.node_name()
    }

    /// Whether another node of this cluster holds `sandbox` (in a store the nodes share;
    /// never on a single node, whatever its records say).
    pub(super) fn held_elsewhere(&self, sandbox: &Sandbox) -> bool {
        self.cluster.is_some()
            && self.store_is_shared()
            && sandbox.node.is_some()
            && !self.holds(sandbox)
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
            None => Ok(vec![self.this_node(crate::cluster::host_name()).await]),
        }
    }

    /// This node as its heartbeat would describe it now, named `name`.
    async fn this_node(&self, name: String) -> NodeInfo {
        let (cpus, memory_mb) = crate::cluster::machine();
        let load = self.load().await;
        NodeInfo {
            name,
            advertise: None,
            epoch: 0,
            cpus,
            memory_mb,
            reserved_cpu: load.reserved_cpu,
            reserved_memory_mb: load.reserved_memory_mb,
            sandboxes: load.sandboxes,
            heartbeat_at: chrono::Utc::now(),
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

/// Where a request is served.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// On this node.
    Here,
    /// On another node, reached at its advertised address.
    There { node: String, address: String },
}

/// What a new sandbox asks of its node, for placing it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ask {
    pub cpu: f64,
    pub memory_mb: u64,
}

/// The node for `ask` among `nodes`: the least loaded (by the larger of its CPU and
/// memory shares, counting `ask`) of those it fits on; of all when it fits on none (that
/// node then refuses it with its own answer). Ties go to `here` (no hop), then to fewer
/// sandboxes, then by name.
pub fn least_loaded<'a>(nodes: &'a [NodeInfo], ask: Ask, here: &str) -> Option<&'a NodeInfo> {
    let share = |n: &NodeInfo| {
        let cpu = (n.reserved_cpu + ask.cpu) / n.cpus.max(0.01);
        let memory = (n.reserved_memory_mb + ask.memory_mb) as f64 / n.memory_mb.max(1) as f64;
        cpu.max(memory)
    };
    let order = |a: &&NodeInfo, b: &&NodeInfo| {
        share(a)
            .total_cmp(&share(b))
            .then((a.name != here).cmp(&(b.name != here)))
            .then(a.sandboxes.cmp(&b.sandboxes))
            .then(a.name.cmp(&b.name))
    };
    let fitting = nodes.iter().filter(|n| share(n) <= 1.0).min_by(order);
    fitting.or_else(|| nodes.iter().min_by(order))
}

impl SandboxService {
    /// Whether this node's sandboxes are in a store the other nodes read too (PostgreSQL):
    /// only then can a node place a sandbox on another, or serve another's.
    pub(super) fn store_is_shared(&self) -> bool {
        self.config().database_url().starts_with("postgres")
    }

    /// Where requests for `tenant`'s sandbox `id` are served: on the node that holds it.
    /// Here when this is one node, the sandbox is this node's or nobody's (the handler
    /// then answers 404), or the store is not shared.
    pub async fn route_for(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
    ) -> Result<Route, SandboxError> {
        let Some(cluster) = &self.cluster else {
            return Ok(Route::Here);
        };
        if !self.store_is_shared() {
            return Ok(Route::Here);
        }
        let Some(sandbox) = self.store.get_sandbox(id).await? else {
            return Ok(Route::Here);
        };
        match sandbox.node {
            // A lost sandbox comes back on the node the request reached.
            Some(node)
                if &sandbox.tenant == tenant
                    && node != cluster.node
                    && sandbox.state != SandboxState::Lost =>
            {
                self.reach(&node).await
            }
            _ => Ok(Route::Here),
        }
    }

    /// How to reach node `name` now.
    async fn reach(&self, name: &str) -> Result<Route, SandboxError> {
        let nodes = self.nodes().await?;
        match nodes.into_iter().find(|n| n.name == name) {
            Some(NodeInfo {
                advertise: Some(address),
                ..
            }) => Ok(Route::There {
                node: name.to_string(),
                address,
            }),
            Some(_) => Err(SandboxError::NodeUnavailable(format!(
                "node {name}, which holds this sandbox, advertises no address (start it with --advertise)"
            ))),
            None => Err(SandboxError::NodeUnavailable(format!(
                "node {name}, which holds this sandbox, has no heartbeat now; retry when it is back"
            ))),
        }
    }

    /// `Invalid` unless `hint` names the node serving this request (where a create that
    /// was not placed elsewhere is made).
    pub fn check_node_hint(&self, hint: &str) -> Result<(), SandboxError> {
        let name = self.node_name().unwrap_or_else(crate::cluster::host_name);
        if hint == name {
            return Ok(());
        }
        Err(SandboxError::Invalid(match &self.cluster {
            None => {
                format!("node: there is no node {hint:?}: this server is a single node ({name})")
            }
            Some(_) => format!("node: this is node {name}, not {hint:?}"),
        }))
    }

    /// The node holding the newest of `tenant`'s sandboxes on `volume`, if any.
    async fn node_of_volume(
        &self,
        tenant: &TenantId,
        volume: &str,
    ) -> Result<Option<String>, SandboxError> {
        let newest = self
            .store
            .list_sandboxes(Some(tenant), None)
            .await?
            .into_iter()
            .filter(|s| s.volume.as_str() == volume && s.node.is_some())
            .max_by_key(|s| s.created_at);
        Ok(newest.and_then(|s| s.node))
    }

    /// `NodeUnavailable` when another node holds `sandbox` (and it is not lost): what
    /// changes it runs there, and a request reaches it there through any node's API.
    pub(super) fn here_or_refuse(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        let settled = matches!(
            sandbox.state,
            SandboxState::Lost | SandboxState::Terminated | SandboxState::Failed
        );
        if self.held_elsewhere(sandbox) && !settled {
            return Err(SandboxError::NodeUnavailable(format!(
                "sandbox {} is held by node {}, not this one; retry through the cluster's URL (any node forwards it there)",
                sandbox.id,
                sandbox.node.as_deref().unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Where a new sandbox asking `ask` goes: the node `hint` names, else the node of the
    /// `volume` it names, else the least loaded alive with room, leaving out the nodes in
    /// `avoid`. On one node, or with Redis down and no hint elsewhere, here.
    pub async fn place(
        &self,
        tenant: &TenantId,
        hint: Option<&str>,
        volume: Option<&str>,
        ask: Ask,
        avoid: &[String],
    ) -> Result<Route, SandboxError> {
        let Some(cluster) = &self.cluster else {
            return hint
                .map_or(Ok(()), |h| self.check_node_hint(h))
                .map(|()| Route::Here);
        };
        let here = cluster.node.clone();
        // A named volume is on the engine of the node whose sandboxes used it.
        let pinned = match (hint, volume) {
            (None, Some(volume)) if self.store_is_shared() => {
                self.node_of_volume(tenant, volume).await?
            }
            _ => None,
        };
        let hint = hint.or(pinned.as_deref());
        if hint == Some(here.as_str()) {
            return Ok(Route::Here);
        }
        if !self.store_is_shared() {
            return match hint {
                None => Ok(Route::Here),
                Some(_) => Err(SandboxError::Invalid(
                    "node: placing a sandbox on another node needs the nodes to share PostgreSQL (BERTH_DATABASE_URL)".into(),
                )),
            };
        }
        let mut nodes = match self.nodes().await {
            Ok(nodes) => nodes,
            // Redis down: this node keeps making its own.
            Err(_) if hint.is_none() => return Ok(Route::Here),
            Err(e) => return Err(e),
        };
        // This node is a candidate even before its first heartbeat is in.
        if !nodes.iter().any(|n| n.name == here) {
            nodes.push(self.this_node(here.clone()).await);
        }
        // Nodes a forward of this create could not reach (never this one).
        nodes.retain(|n| n.name == here || !avoid.contains(&n.name));
        let chosen = match hint {
            Some(name) => nodes.iter().find(|n| n.name == name).ok_or_else(|| {
                let alive: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
                SandboxError::Invalid(format!(
                    "node: {name:?} is not in the cluster now (alive: {})",
                    alive.join(", ")
                ))
            })?,
            None => match least_loaded(&nodes, ask, &here) {
                Some(node) => node,
                None => return Ok(Route::Here),
            },
        };
        if chosen.name == here {
            return Ok(Route::Here);
        }
        self.reach(&chosen.name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpus: f64, memory_mb: u64, cpu: f64, mem: u64, n: u64) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            advertise: None,
            epoch: 1,
            cpus,
            memory_mb,
            reserved_cpu: cpu,
            reserved_memory_mb: mem,
            sandboxes: n,
            heartbeat_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn the_least_loaded_node_with_room_gets_the_sandbox() {
        let ask = Ask {
            cpu: 1.0,
            memory_mb: 1024,
        };
        let nodes = [
            node("a", 4.0, 8192, 2.0, 1024, 2),
            node("b", 4.0, 8192, 1.0, 4096, 1),
            node("c", 4.0, 8192, 1.0, 1024, 5),
        ];
        // a: max(3/4, 2/8) = .75; b: max(2/4, 5/8) = .625; c: max(2/4, 2/8) = .5.
        assert_eq!(least_loaded(&nodes, ask, "x").unwrap().name, "c");
        // Equal shares: fewer sandboxes first, then the name.
        let tied = [
            node("b", 4.0, 8192, 0.0, 0, 1),
            node("a", 4.0, 8192, 0.0, 0, 1),
        ];
        assert_eq!(least_loaded(&tied, ask, "x").unwrap().name, "a");
        // ... unless one of them is this node: no hop then.
        assert_eq!(least_loaded(&tied, ask, "b").unwrap().name, "b");
        // A node it does not fit on is passed over, however empty it is otherwise.
        let small = [
            node("tiny", 0.5, 512, 0.0, 0, 0),
            node("big", 8.0, 16384, 6.0, 8192, 9),
        ];
        assert_eq!(least_loaded(&small, ask, "x").unwrap().name, "big");
        // Fits nowhere: the least loaded anyway (it answers with its own refusal).
        let full = [
            node("x", 1.0, 1024, 1.0, 1024, 1),
            node("y", 1.0, 1024, 0.5, 512, 1),
        ];
        assert_eq!(least_loaded(&full, ask, "x").unwrap().name, "y");
        assert!(least_loaded(&[], ask, "x").is_none());
    }
}
