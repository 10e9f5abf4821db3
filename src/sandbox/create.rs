//! Creating a sandbox: admission (quota, idempotency), image, volume, record, container,
//! starter files — in that order. A create runs to the end on its own task, whatever the
//! client does; if a step fails it is undone (container and its own volume removed) and
//! the record says `failed`.

use super::{EventKind, SandboxError, SandboxService};
use crate::agent::{bytes_body, query_string};
use crate::docker::{LABEL_INSTANCE, LABEL_MANAGED, LABEL_SANDBOX, LABEL_TENANT};
use crate::domain::{CreateSandbox, Runtime, Sandbox, SandboxId, SandboxState, TenantId};
use crate::store::IdempotencyStart;
use chrono::Utc;
use hyper::Method;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// An `Idempotency-Key` and the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub body_hash: String,
}

impl SandboxService {
    /// Creates a sandbox. With `idempotency`, the same key and body answer with the
    /// sandbox of the first request.
    pub async fn create(
        self: &Arc<Self>,
        tenant: &TenantId,
        request: CreateSandbox,
        idempotency: Option<Idempotency>,
    ) -> Result<Sandbox, SandboxError> {
        let this = self.clone();
        let tenant = tenant.clone();
        super::detached(async move {
            let Some(idem) = idempotency else {
                return this.create_now(&tenant, request).await;
            };
            let store = &this.store;
            match store
                .idempotency_start(
                    &tenant,
                    &idem.key,
                    &idem.body_hash,
                    &this.node_name().unwrap_or_default(),
                )
                .await?
            {
                IdempotencyStart::InFlight => Err(SandboxError::Conflict(
                    "a request with this Idempotency-Key is still in progress; retry shortly"
                        .into(),
                )),
                IdempotencyStart::BodyMismatch => Err(SandboxError::Unprocessable(
                    "this Idempotency-Key was used with a different request body".into(),
                )),
                IdempotencyStart::Done(id) => this.get(&tenant, &id).await,
                IdempotencyStart::Fresh => match this.create_now(&tenant, request).await {
                    Ok(sandbox) => {
                        store
                            .idempotency_finish(&tenant, &idem.key, &sandbox.id)
                            .await?;
                        Ok(sandbox)
                    }
                    Err(e) => {
                        store.idempotency_abandon(&tenant, &idem.key).await?;
                        Err(e)
                    }
                },
            }
        })
        .await
    }

    /// Checks the quota and inserts the `creating` record, under one lock so concurrent
    /// creates cannot pass the quota together.
    async fn admit(
        &self,
        tenant: &TenantId,
        request: &CreateSandbox,
        id: SandboxId,
        image_ref: String,
    ) -> Result<Sandbox, SandboxError> {
        let _admission = self.admission(tenant).await?;
        self.check_quota(tenant).await?;
        crate::crash::pause("admission.after_count").await;
        let (volume, owns_volume) = match &request.volume {
            Some(volume) => {
                if self.store.volume_tenant(volume).await?.as_ref() != Some(tenant)
                    || !self.docker.volume_exists(volume.as_str()).await?
                {
                    return Err(SandboxError::NotFound(format!("volume {volume}")));
                }
                (volume.clone(), false)
            }
            None => (id.default_volume(), true),
        };
        let sandbox = Sandbox {
            id: id.clone(),
            tenant: tenant.clone(),
            state: SandboxState::Creating,
            image: request.image.clone(),
            image_ref,
            volume,
            owns_volume,
            workdir: request.workdir.clone(),
            labels: request.labels.clone(),
            env: request.env.clone(),
            limits: request.limits,
            network: request.network,
            auto_resume: request.auto_resume,
            created_at: Utc::now(),
            started_at: None,
            expires_at: None,
            stopped_at: None,
            last_activity_at: None,
            reason: None,
            archive: None,
            volume_kept: false,
            allow_root: request.allow_root == Some(true),
            runtime: request.runtime,
            node: self.node_name(),
            generation: 0,
        };
        self.store.insert_sandbox(&sandbox).await?;
        self.counts.add(sandbox.state);
        Ok(sandbox)
    }

    /// `Invalid` when the runtime asked for is not in the engine.
    async fn check_runtime(&self, runtime: Runtime) -> Result<(), SandboxError> {
        let Some(name) = runtime.engine_name() else {
            return Ok(());
        };
        if self.docker.runtimes().await?.iter().any(|r| r == name) {
            return Ok(());
        }
        Err(SandboxError::Invalid(format!(
            "`runtime: \"gvisor\"` needs the {name} runtime, which this Docker engine does not \
             offer. Install it (apt-get install runsc), register it in /etc/docker/daemon.json as \
             {{\"runtimes\": {{\"{name}\": {{\"path\": \"/usr/bin/runsc\", \"runtimeArgs\": \
             [\"--network=none\", \"--host-uds=all\"]}}}}}} and reload Docker (kill -HUP $(pidof dockerd))"
        )))
    }

    /// `Forbidden` when `tenant` may not run this image or ask for root.
    /// Settles `allow_root` (the server's default where the request left it out, never
    /// for a tenant denied it).
    fn check_policy(
        &self,
        tenant: &TenantId,
        request: &mut CreateSandbox,
    ) -> Result<(), SandboxError> {
        let security = &self.config.security;
        let root_allowed = security.root_allowed(tenant.as_str());
        let asked = request.allow_root;
        request.allow_root = Some(asked.unwrap_or(security.allow_root && root_allowed));
        if asked == Some(true) && !root_allowed {
            return Err(SandboxError::Forbidden(format!(
                "tenant {tenant} may not create sandboxes with \"allow_root\": true on this server \
                 (it is in [security] deny_root_tenants)"
            )));
        }
        let template = crate::images::template(&request.image).is_some();
        if !template && !security.image_allowed(tenant.as_str(), &request.image) {
            return Err(SandboxError::Forbidden(format!(
                "image {:?} is not allowed on this server: use a template (base, python, node), \
                 or have the operator add a pattern for it to [security] allowed_images \
                 (BERTH_ALLOWED_IMAGES, e.g. \"myorg/*\")",
                request.image
            )));
        }
        Ok(())
    }

    /// The admission lock for `tenant`'s creates: this node's, and in a cluster on one
    /// store the tenant's lock in Redis too, so creates through two nodes cannot pass the
    /// quota together (Redis down: this node's alone, as on a single node).
    pub(super) async fn admission(&self, tenant: &TenantId) -> Result<Admission<'_>, SandboxError> {
        // The tenant's lock first: waiting for it holds up no other tenant here.
        let cluster = match &self.cluster {
            Some(cluster) if self.store_is_shared() => {
                let name = format!("admission:{tenant}");
                match cluster.hold(&name, ADMISSION_TTL, ADMISSION_WAIT).await {
                    Ok(Some(held)) => Some(held),
                    Ok(None) => {
                        return Err(SandboxError::Busy(format!(
                            "another node is admitting a sandbox of tenant {tenant}"
                        )))
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "admission without the cluster's lock");
                        None
                    }
                }
            }
            _ => None,
        };
        Ok(Admission {
            _local: self.admission.lock().await,
            _cluster: cluster,
        })
    }

    /// `Quota` when `tenant` may not have another sandbox (call under the admission lock).
    pub(super) async fn check_quota(&self, tenant: &TenantId) -> Result<(), SandboxError> {
        let live = self.store.count_live_sandboxes(tenant).await?;
        let max = self.config.limits.max_sandboxes_per_tenant as u64;
        if live >= max {
            return Err(SandboxError::Quota(format!(
                "tenant {tenant} already has {live} sandboxes (limit {max}); delete some first"
            )));
        }
        Ok(())
    }

    async fn create_now(
        &self,
        tenant: &TenantId,
        mut request: CreateSandbox,
    ) -> Result<Sandbox, SandboxError> {
        self.check_policy(tenant, &mut request)?;
        self.check_runtime(request.runtime).await?;
        if let Some(sandbox) = self.adopt_pooled(tenant, &request).await? {
            return Ok(sandbox);
        }
        // Checked before anything is made for it.
        let snapshot = match &request.from_snapshot {
            Some(id) => Some(self.restorable(tenant, id).await?),
            None => None,
        };
        // A missing template is built here, outside the admission lock (it can take minutes).
        let image_ref = self.images.resolve(&request.image).await?;
        let id = SandboxId::generate();
        // Held from before the record exists, so no other operation sees it half made.
        let lock = self.lock_for(&id);
        let _held = lock.lock().await;
        let mut sandbox = self.admit(tenant, &request, id, image_ref).await?;
        crate::crash::point("create.after_record");
        self.emit(EventKind::Created, &sandbox);
        let started = async {
            if sandbox.owns_volume {
                self.create_volume(&sandbox).await?;
            }
            crate::crash::point("create.after_volume");
            self.bring_up(&sandbox).await?;
            crate::crash::point("create.after_container");
            if let Some(snapshot) = &snapshot {
                self.restore_into(&sandbox, snapshot).await?;
                crate::crash::point("create.after_restore");
            }
            self.write_starter_files(&sandbox, &request.files).await
        }
        .await;
        if let Err(e) = started {
            if let Err(undo) = self.undo_create(&mut sandbox, &e.to_string()).await {
                tracing::error!(sandbox = %sandbox.id, error = %undo,
                    "could not undo a failed create; the next start's reconciliation will");
            }
            return Err(e);
        }
        self.finish_start(&mut sandbox).await?;
        Ok(sandbox)
    }

    /// A created sandbox (its container up, its files written) becomes `running`: its
    /// clocks start now (call with its lifecycle lock held).
    pub(super) async fn finish_start(&self, sandbox: &mut Sandbox) -> Result<(), SandboxError> {
        let now = Utc::now();
        sandbox.started_at = Some(now);
        sandbox.last_activity_at = Some(now);
        sandbox.expires_at = Some(now + chrono::Duration::seconds(sandbox.limits.timeout_s as i64));
        self.transition(sandbox, SandboxState::Running, None)
            .await?;
        self.activity.touch(&sandbox.id);
        self.emit(EventKind::Started, sandbox);
        Ok(())
    }

    /// The labels of a sandbox's own volume.
    pub(super) fn volume_labels(&self, sandbox: &Sandbox) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_SANDBOX.to_string(), sandbox.id.to_string()),
            (LABEL_TENANT.to_string(), sandbox.tenant.to_string()),
            (LABEL_INSTANCE.to_string(), self.instance.clone()),
        ])
    }

    /// Makes the sandbox's own volume and records it.
    pub(super) async fn create_volume(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        self.make_volume(sandbox).await?;
        self.store
            .insert_volume(&sandbox.tenant, &sandbox.volume)
            .await?;
        Ok(())
    }

    /// Undoes a create that did not finish: container gone, the sandbox's own volume gone,
    /// the record `failed` with `why` (call with the sandbox's lifecycle lock held).
    pub(super) async fn undo_create(
        &self,
        sandbox: &mut Sandbox,
        why: &str,
    ) -> Result<(), SandboxError> {
        let _ = self.bring_down(sandbox).await;
        if sandbox.owns_volume {
            self.remove_volume_record(&sandbox.volume).await?;
        }
        self.transition(sandbox, SandboxState::Failed, Some(why.to_string()))
            .await?;
        self.emit(EventKind::Failed, sandbox);
        Ok(())
    }

    pub(super) async fn write_starter_files(
        &self,
        sandbox: &Sandbox,
        files: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), SandboxError> {
        let agent = self.agent_client(&sandbox.id);
        for (path, content) in files {
            let query = query_string(&[("path", path.as_str())]);
            agent
                .no_content(
                    Method::PUT,
                    &format!("/files?{query}"),
                    &[],
                    bytes_body(content.clone().into_bytes()),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|e| match e {
                    // The file's path or content was refused: the client's to fix.
                    crate::agent::AgentError::Rejected { message, .. } => SandboxError::Invalid(
                        format!("cannot write starter file {path:?}: {message}"),
                    ),
                    other => SandboxError::StartFailed(format!(
                        "cannot write starter file {path:?}: {other}"
                    )),
                })?;
        }
        Ok(())
    }
}

/// Held while a create is admitted (see [`SandboxService::admission`]).
pub(super) struct Admission<'a> {
    _local: tokio::sync::MutexGuard<'a, ()>,
    _cluster: Option<crate::cluster::HeldLock>,
}

/// A cluster admission lock a stopped node held lapses after this.
const ADMISSION_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a create waits for another node's admission of the same tenant.
const ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
