//! Creating a sandbox: image, volume, record, container, starter files — in that order,
//! with the record marking `failed` (and the container removed) if a step fails.

use super::{EventKind, SandboxError, SandboxService};
use crate::agent::bytes_body;
use crate::docker::{LABEL_INSTANCE, LABEL_MANAGED, LABEL_SANDBOX, LABEL_TENANT};
use crate::domain::{CreateSandbox, Sandbox, SandboxId, SandboxState, TenantId};
use chrono::Utc;
use hyper::Method;
use std::collections::HashMap;
use std::time::Duration;

impl SandboxService {
    pub async fn create(
        &self,
        tenant: &TenantId,
        request: CreateSandbox,
    ) -> Result<Sandbox, SandboxError> {
        let live = self.store.list_sandboxes(Some(tenant), None).await?;
        let live = live
            .iter()
            .filter(|s| s.state != SandboxState::Terminated)
            .count();
        if live >= self.config.limits.max_sandboxes_per_tenant {
            return Err(SandboxError::Quota(format!(
                "tenant {tenant} already has {live} sandboxes (limit {}); delete some first",
                self.config.limits.max_sandboxes_per_tenant
            )));
        }
        let image_ref = self.images.resolve(&request.image).await?;
        let id = SandboxId::generate();
        let (volume, owns_volume) = match request.volume {
            Some(volume) => {
                if self.store.volume_tenant(&volume).await?.as_ref() != Some(tenant)
                    || !self.docker.volume_exists(volume.as_str()).await?
                {
                    return Err(SandboxError::NotFound(format!("volume {volume}")));
                }
                (volume, false)
            }
            None => {
                let volume = id.default_volume();
                let labels = HashMap::from([
                    (LABEL_MANAGED.to_string(), "true".to_string()),
                    (LABEL_SANDBOX.to_string(), id.to_string()),
                    (LABEL_TENANT.to_string(), tenant.to_string()),
                    (LABEL_INSTANCE.to_string(), self.instance.clone()),
                ]);
                self.docker.create_volume(volume.as_str(), labels).await?;
                self.store.insert_volume(tenant, &volume).await?;
                (volume, true)
            }
        };
        let mut sandbox = Sandbox {
            id: id.clone(),
            tenant: tenant.clone(),
            state: SandboxState::Creating,
            image: request.image,
            image_ref,
            volume,
            owns_volume,
            workdir: request.workdir,
            labels: request.labels,
            env: request.env,
            limits: request.limits,
            network: request.network,
            auto_resume: request.auto_resume,
            created_at: Utc::now(),
            started_at: None,
            expires_at: None,
            stopped_at: None,
            last_activity_at: None,
            reason: None,
        };
        self.store.insert_sandbox(&sandbox).await?;
        self.emit(EventKind::Created, &sandbox);
        let lock = self.lock_for(&id);
        let _held = lock.lock().await;
        let started = async {
            self.bring_up(&sandbox).await?;
            self.write_starter_files(&sandbox, &request.files).await
        }
        .await;
        if let Err(e) = started {
            let _ = self.bring_down(&sandbox).await;
            sandbox.state.check_transition(SandboxState::Failed).ok();
            sandbox.state = SandboxState::Failed;
            sandbox.reason = Some(e.to_string());
            self.store.update_sandbox(&sandbox).await?;
            self.emit(EventKind::Failed, &sandbox);
            return Err(e);
        }
        let now = Utc::now();
        sandbox.state = SandboxState::Running;
        sandbox.started_at = Some(now);
        sandbox.last_activity_at = Some(now);
        sandbox.expires_at = Some(now + chrono::Duration::seconds(sandbox.limits.timeout_s as i64));
        self.store.update_sandbox(&sandbox).await?;
        self.activity.touch(&id);
        self.emit(EventKind::Started, &sandbox);
        Ok(sandbox)
    }

    async fn write_starter_files(
        &self,
        sandbox: &Sandbox,
        files: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), SandboxError> {
        let agent = self.agent_client(&sandbox.id);
        for (path, content) in files {
            let query = crate::api::query_string(&[("path", path.as_str())]);
            agent
                .no_content(
                    Method::PUT,
                    &format!("/files?{query}"),
                    &[],
                    bytes_body(content.clone().into_bytes()),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|e| {
                    SandboxError::Invalid(format!("cannot write starter file {path:?}: {e}"))
                })?;
        }
        Ok(())
    }
}
