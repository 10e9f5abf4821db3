//! A node lost, and what becomes of its sandboxes: once a node's heartbeat has lapsed,
//! one node at a time (under a Redis lock) marks the sandboxes it held `lost`; a lost
//! sandbox is taken over by the node that resumes it (a fencing generation higher, so
//! the lost node's writes are refused from then on) and restored there from its newest
//! snapshot or archive; and a node that finds copies of sandboxes now held elsewhere on
//! its engine (it came back after a pause or a partition) removes them, never running a
//! sandbox twice.

use super::{EventKind, SandboxError, SandboxService};
use crate::cluster::{HEARTBEAT, LEASE};
use crate::domain::{Sandbox, SandboxState, Snapshot, SnapshotState};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// States that hold a node's resources: what a lost node's sandboxes were in.
fn held_on_a_node(state: SandboxState) -> bool {
    matches!(
        state,
        SandboxState::Creating | SandboxState::Running | SandboxState::Stopped
    )
}

/// How often a node looks on its engine for copies of sandboxes held elsewhere.
const STALE_CHECK_EVERY: u32 = 5;

impl SandboxService {
    /// Every heartbeat: marks lost the sandboxes of nodes whose heartbeat has lapsed, and
    /// now and then removes this node's stale copies. Needs a store the nodes share.
    pub(super) async fn watch_node_loss(self: Arc<Self>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        if !self.store_is_shared() {
            return;
        }
        let mut absent: HashMap<String, u32> = HashMap::new();
        let mut redis_up_since: Option<Instant> = None;
        let mut round: u32 = 0;
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            round = round.wrapping_add(1);
            if round.is_multiple_of(STALE_CHECK_EVERY) {
                if let Err(e) = self.remove_stale_copies().await {
                    tracing::warn!(error = %e, "could not look for copies of sandboxes held elsewhere");
                }
            }
            let alive = match cluster.nodes().await {
                Ok(nodes) => nodes,
                Err(_) => {
                    // Nothing can be told about the others now.
                    redis_up_since = None;
                    absent.clear();
                    continue;
                }
            };
            // Redis just came back (perhaps empty): every live node beats again within a
            // heartbeat; until a lease has passed, a missing one proves nothing.
            if redis_up_since.get_or_insert_with(Instant::now).elapsed() < LEASE {
                continue;
            }
            let mut alive: HashSet<String> = alive.into_iter().map(|n| n.name).collect();
            alive.insert(cluster.node.clone());
            let Ok(all) = self.store.list_sandboxes(None, None).await else {
                continue;
            };
            let gone: HashSet<String> = all
                .iter()
                .filter(|s| held_on_a_node(s.state))
                .filter_map(|s| s.node.clone())
                .filter(|n| !alive.contains(n))
                .collect();
            absent.retain(|n, _| gone.contains(n));
            for node in &gone {
                *absent.entry(node.clone()).or_default() += 1;
            }
            // Missing from two looks in a row (its key expired a lease after its last beat).
            let lapsed: HashSet<&String> = absent
                .iter()
                .filter(|(_, seen)| **seen >= 2)
                .map(|(n, _)| n)
                .collect();
            if lapsed.is_empty() {
                continue;
            }
            match cluster.try_lock("node-loss", LEASE).await {
                Ok(true) => {}
                _ => continue,
            }
            // One more look: a node that came back since (and took its sandboxes up
            // again in its start-up reconciliation) is not lost.
            let Ok(now_alive) = cluster.nodes().await else {
                continue;
            };
            let lapsed: HashSet<&String> = lapsed
                .into_iter()
                .filter(|n| !now_alive.iter().any(|a| &&a.name == n))
                .collect();
            // (The warm pool's are nobody's: their node removes them when it is back.)
            for sandbox in all.iter().filter(|s| {
                held_on_a_node(s.state)
                    && !s.tenant.is_pool()
                    && s.node.as_ref().is_some_and(|n| lapsed.contains(n))
            }) {
                if let Err(e) = self.mark_lost(sandbox).await {
                    tracing::warn!(sandbox = %sandbox.id, error = %e, "could not mark a lost node's sandbox lost");
                }
            }
        }
    }

    /// Marks `seen` lost if it is still as it was seen (its node's, in a state that held
    /// resources there).
    async fn mark_lost(&self, seen: &Sandbox) -> Result<(), SandboxError> {
        let lock = self.lock_for(&seen.id);
        let _held = lock.lock().await;
        let Some(mut sandbox) = self.store.get_sandbox(&seen.id).await? else {
            return Ok(());
        };
        if sandbox.node != seen.node || !held_on_a_node(sandbox.state) {
            return Ok(());
        }
        let node = sandbox.node.clone().unwrap_or_default();
        let reason = format!(
            "node {node} stopped answering (no heartbeat for {} s); resume the sandbox to bring it back elsewhere from its newest snapshot",
            LEASE.as_secs()
        );
        self.transition(&mut sandbox, SandboxState::Lost, Some(reason))
            .await?;
        tracing::warn!(sandbox = %sandbox.id, %node, "sandbox lost with its node");
        self.emit(EventKind::Lost, &sandbox);
        Ok(())
    }

    /// A lost sandbox of this node's whose container runs again (the node came back
    /// before anyone took it over): running, as it was.
    pub(super) async fn reclaim(&self, id: &crate::domain::SandboxId) -> Result<(), SandboxError> {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let Some(mut sandbox) = self.store.get_sandbox(id).await? else {
            return Ok(());
        };
        if sandbox.state != SandboxState::Lost || !self.holds(&sandbox) {
            return Ok(());
        }
        self.transition(&mut sandbox, SandboxState::Running, None)
            .await?;
        tracing::info!(sandbox = %id, "took a sandbox marked lost up again: its node is back");
        self.emit(EventKind::Resumed, &sandbox);
        Ok(())
    }

    /// Containers (and volumes) on this node's engine of sandboxes another node holds now
    /// are removed; this node's own that were marked lost while it was away run on.
    pub(super) async fn remove_stale_copies(&self) -> Result<usize, SandboxError> {
        let mut removed = 0;
        for container in self.docker.list_managed(&self.instance).await? {
            let Some(id) = crate::domain::SandboxId::parse(&container.sandbox_id) else {
                continue;
            };
            let Some(sandbox) = self.store.get_sandbox(&id).await? else {
                continue;
            };
            if sandbox.state == SandboxState::Lost && self.holds(&sandbox) {
                // Marked lost while this node was paused or cut off, and not taken over.
                if container.running {
                    self.reclaim(&sandbox.id).await?;
                }
                continue;
            }
            if !self.held_elsewhere(&sandbox) || sandbox.state == SandboxState::Lost {
                continue;
            }
            self.remove_stale_copy(&sandbox).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes this node's copy of `sandbox`, which another node holds now: its
    /// container and its volume here (the records are the holder's).
    pub(super) async fn remove_stale_copy(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        tracing::warn!(sandbox = %sandbox.id, holder = ?sandbox.node,
            "removing this node's copy of a sandbox another node took over");
        self.bring_down(sandbox).await?;
        if sandbox.owns_volume {
            self.unmake_volume(sandbox.volume.as_str()).await?;
        }
        Ok(())
    }

    /// Takes over a lost sandbox another node held: this node's, a generation higher
    /// (the old holder's writes are fenced off from now on), once it is clear there is a
    /// snapshot to bring its files back from. Returns that snapshot.
    pub(super) async fn take_over(&self, sandbox: &mut Sandbox) -> Result<Snapshot, SandboxError> {
        let from = sandbox.node.clone().unwrap_or_default();
        let Some(source) = self.newest_copy(sandbox).await? else {
            return Err(SandboxError::Conflict(format!(
                "sandbox {} was lost with node {from}, which holds its files, and it has no snapshot to come back from: bring node {from} back (it takes the sandbox up again), or delete it",
                sandbox.id
            )));
        };
        let mut taken = sandbox.clone();
        taken.node = self.node_name();
        taken.generation += 1;
        if !self.store.take_over_sandbox(&taken).await? {
            return Err(SandboxError::Conflict(format!(
                "sandbox {} was taken over by another node, or taken up again by its own, meanwhile; retry",
                sandbox.id
            )));
        }
        tracing::info!(sandbox = %sandbox.id, %from, snapshot = %source.id, generation = taken.generation,
            "took over a lost sandbox");
        *sandbox = taken;
        Ok(source)
    }

    /// The newest copy of a sandbox's files in the archive store: its archive, or its
    /// newest ready snapshot.
    async fn newest_copy(&self, sandbox: &Sandbox) -> Result<Option<Snapshot>, SandboxError> {
        if let Some(archive) = &sandbox.archive {
            if let Some(found) = self.store.get_snapshot(archive).await? {
                return Ok(Some(found));
            }
        }
        let newest = self
            .store
            .list_snapshots(Some(&sandbox.tenant))
            .await?
            .into_iter()
            .filter(|s| s.sandbox_id == sandbox.id && s.state == SnapshotState::Ready)
            .max_by_key(|s| s.created_at);
        Ok(newest)
    }

    /// Brings a lost sandbox up on this node: on its volume when this node still has it
    /// (it held it), otherwise from its newest copy, taking it over first if another
    /// node held it.
    pub(super) async fn bring_back_lost(&self, sandbox: &mut Sandbox) -> Result<(), SandboxError> {
        let source = if self.holds(sandbox) {
            None
        } else {
            Some(self.take_over(sandbox).await?)
        };
        if self.docker.volume_exists(sandbox.volume.as_str()).await? {
            return self.bring_up(sandbox).await;
        }
        let source = match source {
            Some(source) => source,
            None => self.newest_copy(sandbox).await?.ok_or_else(|| {
                SandboxError::Conflict(format!(
                    "sandbox {} was lost, its volume is not on this node and it has no snapshot",
                    sandbox.id
                ))
            })?,
        };
        let restored = async {
            self.make_volume(sandbox).await?;
            self.bring_up(sandbox).await?;
            self.restore_into(sandbox, &source).await
        }
        .await;
        if let Err(e) = restored {
            let _ = self.bring_down(sandbox).await;
            let _ = self.unmake_volume(sandbox.volume.as_str()).await;
            return Err(e);
        }
        Ok(())
    }
}
