//! The warm pool: started sandboxes kept ready per template, so a create that fits one
//! adopts it instead of paying for a container start. A pooled sandbox belongs to a
//! reserved tenant that no key can name (so no tenant sees it) and stays `creating` until
//! adopted: a restart undoes it like any create it cut short, and an adoption cut short
//! by a crash is undone the same way. It is handed out once: a claim takes its id out of
//! the ready queue, then moves its record only if it still belongs to the pool.

use super::{EventKind, SandboxError, SandboxService};
use crate::agent::bytes_body;
use crate::domain::{CreateSandbox, Limits, Network, Sandbox, SandboxId, SandboxState, TenantId};
use berth_runtime::wire::SandboxEnv;
use chrono::Utc;
use hyper::Method;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pause after a failed fill before the next try.
const FILL_BACKOFF: Duration = Duration::from_secs(5);

/// How an adoption went.
enum Adoption {
    Adopted(Box<Sandbox>),
    /// Not the pool's any more, or dead (and removed): try the next one.
    Unusable,
    /// Refused before anything changed (quota, the store): the sandbox stays in the pool.
    Refused(SandboxError),
    /// It failed half way and was removed.
    Failed(SandboxError),
}

/// The pool's bookkeeping: how many each template should have, and which are ready.
pub struct Pool {
    targets: BTreeMap<String, usize>,
    ready: Mutex<HashMap<String, VecDeque<SandboxId>>>,
    /// Wakes the filler (an adoption took one).
    wake: tokio::sync::Notify,
    adopted: AtomicU64,
    missed: AtomicU64,
}

/// One template's figures, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFigures {
    pub template: String,
    pub target: usize,
    pub ready: usize,
}

impl Pool {
    pub fn new(targets: BTreeMap<String, usize>) -> Self {
        Pool {
            targets: targets.into_iter().filter(|(_, n)| *n > 0).collect(),
            ready: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            adopted: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        }
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<SandboxId>>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a ready sandbox of `template`, if there is one: never the same twice.
    fn take(&self, template: &str) -> Option<SandboxId> {
        self.ready().get_mut(template)?.pop_front()
    }

    fn put(&self, template: &str, id: SandboxId) {
        self.ready()
            .entry(template.to_string())
            .or_default()
            .push_back(id);
    }

    /// The template most short of its target, and how many it lacks.
    fn most_needed(&self) -> Option<(String, usize)> {
        let ready = self.ready();
        self.targets
            .iter()
            .map(|(t, n)| (t, n.saturating_sub(ready.get(t).map_or(0, VecDeque::len))))
            .filter(|(_, short)| *short > 0)
            .max_by_key(|(_, short)| *short)
            .map(|(t, short)| (t.clone(), short))
    }

    pub fn figures(&self) -> Vec<PoolFigures> {
        let ready = self.ready();
        self.targets
            .iter()
            .map(|(t, n)| PoolFigures {
                template: t.clone(),
                target: *n,
                ready: ready.get(t).map_or(0, VecDeque::len),
            })
            .collect()
    }

    /// Creates served from the pool, and creates that fit it but found it empty.
    pub fn adopted_and_missed(&self) -> (u64, u64) {
        (
            self.adopted.load(Ordering::Relaxed),
            self.missed.load(Ordering::Relaxed),
        )
    }

    pub fn is_on(&self) -> bool {
        !self.targets.is_empty()
    }
}

impl SandboxService {
    /// The limits every pooled sandbox is started with: the configured defaults.
    fn pool_limits(&self) -> Limits {
        let d = &self.config.defaults;
        Limits {
            cpu: d.cpu,
            memory_mb: d.memory_mb,
            disk_mb: d.disk_mb,
            pids: d.pids,
            timeout_s: d.timeout_s,
            idle_timeout_s: d.idle_timeout_s,
        }
    }

    /// Whether a pooled sandbox of `request.image` can serve `request`: a template the
    /// pool keeps, a volume of its own, no network, the default workdir, and limits no
    /// larger than the pool's (smaller ones are applied on adoption, where the runtime
    /// can change them; elsewhere only the pool's own limits fit).
    fn fits_pool(&self, request: &CreateSandbox) -> bool {
        let pool = self.pool_limits();
        let l = &request.limits;
        let same = (l.cpu, l.memory_mb, l.pids) == (pool.cpu, pool.memory_mb, pool.pids);
        self.pool.targets.contains_key(&request.image)
            && (same || request.runtime.updates_limits())
            && request.volume.is_none()
            && request.from_snapshot.is_none()
            && request.network == Network::None
            && request.runtime == self.config.defaults.runtime
            && request.workdir == self.config.defaults.workdir
            && l.cpu <= pool.cpu
            && l.memory_mb <= pool.memory_mb
            && l.pids <= pool.pids
            // Its volume has the default size (a quota cannot shrink).
            && l.disk_mb == pool.disk_mb
    }

    /// Serves `request` from the pool when it fits and a sandbox is ready; `None` sends
    /// the caller to a cold start. A pooled sandbox that cannot be adopted (its container
    /// died, its agent does not answer) is removed and the next one is tried.
    pub(super) async fn adopt_pooled(
        &self,
        tenant: &TenantId,
        request: &CreateSandbox,
    ) -> Result<Option<Sandbox>, SandboxError> {
        if !self.fits_pool(request) {
            return Ok(None);
        }
        loop {
            // Checked before a sandbox leaves the queue; checked again, under the
            // admission lock, when the record moves.
            {
                let _admission = self.admission(tenant).await?;
                self.check_quota(tenant).await?;
            }
            let Some(id) = self.pool.take(&request.image) else {
                self.pool.missed.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            };
            self.pool.wake.notify_one();
            match self.adopt(tenant, request, &id).await {
                Adoption::Adopted(sandbox) => {
                    self.pool.adopted.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(*sandbox));
                }
                Adoption::Unusable => {}
                Adoption::Refused(e) => {
                    // Still the pool's and untouched: back in the queue.
                    self.pool.put(&request.image, id);
                    return Err(e);
                }
                Adoption::Failed(e @ SandboxError::Invalid(_)) => return Err(e),
                Adoption::Failed(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "a pooled sandbox could not be adopted");
                }
            }
        }
    }

    /// Adopts pooled sandbox `id` for `tenant`.
    async fn adopt(&self, tenant: &TenantId, request: &CreateSandbox, id: &SandboxId) -> Adoption {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let pool = TenantId::pool();
        let mut sandbox = match self.store.get_sandbox(id).await {
            Ok(Some(s)) if s.tenant == pool && s.state == SandboxState::Creating => s,
            Ok(_) => return Adoption::Unusable,
            Err(e) => return Adoption::Refused(e.into()),
        };
        // A container can die while it waits (a Docker restart, the OOM killer).
        let healthy: Result<berth_runtime::wire::AgentHealth, _> = self
            .agent_client(id)
            .json(Method::GET, "/health", None, Duration::from_secs(2), 4096)
            .await;
        if healthy.is_err() {
            self.discard_pooled(&sandbox).await;
            return Adoption::Unusable;
        }
        let pooled = sandbox.clone();
        {
            let _admission = match self.admission(tenant).await {
                Ok(held) => held,
                Err(e) => return Adoption::Refused(e),
            };
            if let Err(e) = self.check_quota(tenant).await {
                return Adoption::Refused(e);
            }
            sandbox.tenant = tenant.clone();
            sandbox.labels = request.labels.clone();
            sandbox.env = request.env.clone();
            sandbox.limits = request.limits;
            sandbox.auto_resume = request.auto_resume;
            sandbox.allow_root = request.allow_root == Some(true);
            sandbox.created_at = Utc::now();
            match self.store.reassign_sandbox(&sandbox, &pool).await {
                Ok(true) => {}
                Ok(false) => return Adoption::Unusable,
                Err(e) => return Adoption::Refused(e.into()),
            }
            self.counts.add(SandboxState::Creating);
        }
        let ready = async {
            self.store.insert_volume(tenant, &sandbox.volume).await?;
            let (pool, wanted) = (self.pool_limits(), &sandbox.limits);
            if (wanted.cpu, wanted.memory_mb, wanted.pids) != (pool.cpu, pool.memory_mb, pool.pids)
            {
                self.docker
                    .update_limits(&sandbox.id.container_name(), &self.container_spec(&sandbox))
                    .await?;
            }
            self.send_env(&sandbox).await?;
            self.write_starter_files(&sandbox, &request.files).await?;
            self.emit(EventKind::Created, &sandbox);
            self.finish_start(&mut sandbox).await
        }
        .await;
        match ready {
            Ok(()) => Adoption::Adopted(Box::new(sandbox)),
            Err(e) => {
                // Never the tenant's after all: back to the pool's name, then removed.
                self.counts.remove(SandboxState::Creating);
                let _ = self.store.delete_volume(&sandbox.volume).await;
                let mut back = pooled;
                back.reason = Some(e.to_string());
                let _ = self.store.reassign_sandbox(&back, tenant).await;
                self.discard_pooled(&back).await;
                Adoption::Failed(e)
            }
        }
    }

    /// Gives the agent the sandbox's own environment and root policy (a pooled
    /// container was started without them).
    async fn send_env(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        if sandbox.env.is_empty() && !sandbox.allow_root {
            return Ok(());
        }
        let body = serde_json::to_vec(&SandboxEnv {
            env: sandbox.env.clone(),
            allow_root: sandbox.allow_root,
        })
        .map_err(|e| SandboxError::Invalid(e.to_string()))?;
        self.agent_client(&sandbox.id)
            .no_content(
                Method::PUT,
                "/env",
                &[(hyper::header::CONTENT_TYPE, "application/json".into())],
                bytes_body(body),
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| SandboxError::StartFailed(format!("cannot set the environment: {e}")))
    }

    /// Starts one pooled sandbox of `template` and puts it in the ready queue.
    async fn fill_one(&self, template: &str) -> Result<(), SandboxError> {
        let image_ref = self.images.resolve(template).await?;
        let id = SandboxId::generate();
        let lock = self.lock_for(&id);
        let _held = lock.lock().await;
        let mut sandbox = Sandbox {
            id: id.clone(),
            tenant: TenantId::pool(),
            state: SandboxState::Creating,
            image: template.to_string(),
            image_ref,
            volume: id.default_volume(),
            owns_volume: true,
            workdir: self.config.defaults.workdir.clone(),
            labels: BTreeMap::new(),
            env: BTreeMap::new(),
            limits: self.pool_limits(),
            network: Network::None,
            auto_resume: true,
            created_at: Utc::now(),
            started_at: None,
            expires_at: None,
            stopped_at: None,
            last_activity_at: None,
            reason: None,
            archive: None,
            volume_kept: false,
            allow_root: false,
            runtime: self.config.defaults.runtime,
            node: self.node_name(),
            generation: 0,
        };
        self.store.insert_sandbox(&sandbox).await?;
        let started = async {
            self.make_volume(&sandbox).await?;
            self.bring_up(&sandbox).await
        }
        .await;
        if let Err(e) = started {
            sandbox.reason = Some(e.to_string());
            self.discard_pooled(&sandbox).await;
            return Err(e);
        }
        self.pool.put(template, id);
        Ok(())
    }

    /// Removes an unused pooled sandbox: container, volume and record.
    pub(super) async fn discard_pooled(&self, sandbox: &Sandbox) {
        let removed = async {
            self.bring_down(sandbox).await?;
            self.unmake_volume(sandbox.volume.as_str()).await?;
            self.store.delete_sandbox(&sandbox.id).await?;
            Ok::<_, SandboxError>(())
        }
        .await;
        if let Err(e) = removed {
            tracing::warn!(sandbox = %sandbox.id, error = %e,
                "could not remove a pooled sandbox; the next start's reconciliation will");
        }
    }

    /// Keeps the pool at its targets until the task is dropped: one start at a time
    /// (most-needed template first), woken by every adoption.
    pub fn spawn_pool_filler(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.pool.is_on() {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = this.store.ensure_tenant(&TenantId::pool()).await {
                tracing::error!(error = %e, "the warm pool cannot start");
                return;
            }
            loop {
                let Some((template, short)) = this.pool.most_needed() else {
                    this.pool.wake.notified().await;
                    continue;
                };
                match this.fill_one(&template).await {
                    Ok(()) => {
                        if short == 1 {
                            tracing::debug!(template, "warm pool full");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(template, error = %e, "cannot start a pooled sandbox; retrying");
                        tokio::time::sleep(FILL_BACKOFF).await;
                    }
                }
            }
        }))
    }

    /// The warm pool's figures, for `/metrics`.
    pub fn pool_figures(&self) -> (Vec<PoolFigures>, u64, u64) {
        let (adopted, missed) = self.pool.adopted_and_missed();
        (self.pool.figures(), adopted, missed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_short_template_fills_first_and_each_id_is_taken_once() {
        let pool = Pool::new(BTreeMap::from([
            ("python".to_string(), 2),
            ("node".to_string(), 1),
            ("base".to_string(), 0),
        ]));
        assert_eq!(pool.most_needed(), Some(("python".to_string(), 2)));
        let a = SandboxId::generate();
        pool.put("python", a.clone());
        pool.put("python", SandboxId::generate());
        assert_eq!(pool.most_needed(), Some(("node".to_string(), 1)));
        pool.put("node", SandboxId::generate());
        assert_eq!(pool.most_needed(), None);
        assert_eq!(pool.take("python"), Some(a.clone()));
        assert_ne!(pool.take("python"), Some(a));
        assert_eq!(pool.take("python"), None);
        assert_eq!(pool.take("base"), None);
        let figures = pool.figures();
        assert_eq!(
            figures.len(),
            2,
            "a template with a target of 0 is not kept"
        );
    }
}
