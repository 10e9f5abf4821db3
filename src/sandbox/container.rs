//! Bringing a sandbox's container up (fresh socket dir, hardened container on its volume,
//! agent answering) and down.

use super::{SandboxError, SandboxService};
use crate::docker::{
    ContainerSpec, LABEL_INSTANCE, LABEL_MANAGED, LABEL_SANDBOX, LABEL_TENANT, SANDBOX_CAPABILITIES,
};
use crate::domain::Sandbox;
use berth_runtime::wire::{
    AGENT_BINARY_PATH, AGENT_SOCKET_DIR, ENV_DEFAULT_EXEC_TIMEOUT, ENV_DEFAULT_OUTPUT_CAP,
    ENV_WORKDIR,
};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// How long a new container's agent may take to answer.
const AGENT_READY_DEADLINE: Duration = Duration::from_secs(30);
/// SIGTERM → SIGKILL grace when stopping a container.
pub const STOP_GRACE_S: i64 = 2;

impl SandboxService {
    pub(super) fn container_spec(&self, sandbox: &Sandbox) -> ContainerSpec {
        let d = &self.config.defaults;
        let mut env = vec![
            format!("{ENV_WORKDIR}={}", sandbox.workdir),
            format!("{ENV_DEFAULT_EXEC_TIMEOUT}={}", d.exec_timeout_s),
            format!("{ENV_DEFAULT_OUTPUT_CAP}={}", d.output_cap_bytes),
            "HOME=/root".to_string(),
        ];
        env.extend(sandbox.env.iter().map(|(k, v)| format!("{k}={v}")));
        ContainerSpec {
            name: sandbox.id.container_name(),
            image: sandbox.image_ref.clone(),
            labels: HashMap::from([
                (LABEL_MANAGED.to_string(), "true".to_string()),
                (LABEL_SANDBOX.to_string(), sandbox.id.to_string()),
                (LABEL_TENANT.to_string(), sandbox.tenant.to_string()),
                (LABEL_INSTANCE.to_string(), self.instance.clone()),
            ]),
            env,
            workdir: sandbox.workdir.clone(),
            volume: sandbox.volume.to_string(),
            agent_binary: self.agent_binary.clone(),
            agent_binary_target: AGENT_BINARY_PATH.to_string(),
            socket_dir: self.socket_dir(&sandbox.id),
            socket_dir_target: AGENT_SOCKET_DIR.to_string(),
            nano_cpus: (sandbox.limits.cpu * 1e9) as i64,
            memory_bytes: (sandbox.limits.memory_mb * 1024 * 1024) as i64,
            pids: sandbox.limits.pids,
            network_mode: sandbox.network.docker_mode().to_string(),
            hostname: "sandbox".to_string(),
            read_only: false,
            capabilities: SANDBOX_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// Creates and starts the container and waits for its agent. On failure nothing is
    /// left behind but the volume.
    pub(super) async fn bring_up(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        let name = sandbox.id.container_name();
        let dir = self.socket_dir(&sandbox.id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| {
                SandboxError::StartFailed(format!("cannot create {}: {e}", dir.display()))
            })?;
        // A leftover container of the same name (a crash mid-operation) goes first.
        self.docker.remove_container(&name).await?;
        let result = async {
            self.docker
                .create_container(&self.container_spec(sandbox))
                .await
                .map_err(|e| match e {
                    crate::docker::DockerError::NotFound { .. } => SandboxError::Invalid(format!(
                        "image {:?} is not in the local Docker engine (build or load it first)",
                        sandbox.image
                    )),
                    other => other.into(),
                })?;
            self.docker.start_container(&name).await?;
            self.agent_client(&sandbox.id)
                .wait_ready(AGENT_READY_DEADLINE)
                .await
                .map_err(|e| {
                    SandboxError::StartFailed(format!(
                        "the sandbox agent did not come up ({e}); is {} a Linux x86_64 image?",
                        sandbox.image
                    ))
                })
        }
        .await;
        if result.is_err() {
            let _ = self.docker.remove_container(&name).await;
        }
        result
    }

    /// Stops and removes the container; the volume stays.
    pub(super) async fn bring_down(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        self.docker
            .stop_and_remove(&sandbox.id.container_name(), STOP_GRACE_S)
            .await?;
        let _ = std::fs::remove_dir_all(self.socket_dir(&sandbox.id));
        Ok(())
    }
}
