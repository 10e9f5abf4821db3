//! Start-up reconciliation with Docker by labels: adopt what still runs, record what
//! vanished, remove containers berth does not know.

use super::SandboxService;
use crate::domain::{SandboxId, SandboxState};
use std::collections::HashSet;
use std::time::Duration;

/// What a reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub adopted: usize,
    pub marked_stopped: usize,
    pub marked_failed: usize,
    pub removed_unknown: usize,
}

impl SandboxService {
    pub async fn reconcile(&self) -> Result<Reconciled, super::SandboxError> {
        let mut report = Reconciled::default();
        let containers = self.docker.list_managed(&self.instance).await?;
        let mut seen = HashSet::new();
        for container in containers {
            if container.role == "reader" {
                // Read-only helpers are started on demand; none survives a restart.
                self.docker.remove_container(&container.name).await?;
                continue;
            }
            let known = match SandboxId::parse(&container.sandbox_id) {
                Some(id) => self.store.get_sandbox(&id).await?,
                None => None,
            };
            let Some(sandbox) = known else {
                self.docker.remove_container(&container.name).await?;
                report.removed_unknown += 1;
                continue;
            };
            seen.insert(sandbox.id.clone());
            let healthy = sandbox.state == SandboxState::Running
                && container.running
                && self
                    .agent_client(&sandbox.id)
                    .wait_ready(Duration::from_secs(5))
                    .await
                    .is_ok();
            if healthy {
                report.adopted += 1;
            } else if sandbox.state == SandboxState::Running {
                self.mark_stopped_externally(&sandbox.id, "exited while berth was down")
                    .await?;
                report.marked_stopped += 1;
            } else {
                // A container for a sandbox that is not running (a crash mid-stop): remove it.
                self.docker.remove_container(&container.name).await?;
                report.removed_unknown += 1;
            }
        }
        for mut sandbox in self.store.list_sandboxes(None, None).await? {
            if seen.contains(&sandbox.id) {
                continue;
            }
            match sandbox.state {
                SandboxState::Running => {
                    self.mark_stopped_externally(
                        &sandbox.id,
                        "container vanished while berth was down",
                    )
                    .await?;
                    report.marked_stopped += 1;
                }
                SandboxState::Creating => {
                    sandbox.state = SandboxState::Failed;
                    sandbox.reason =
                        Some("berth stopped while the sandbox was being created".into());
                    self.store.update_sandbox(&sandbox).await?;
                    report.marked_failed += 1;
                }
                _ => {}
            }
        }
        Ok(report)
    }
}
