//! Named sessions (the Modal-compatible `sessionId`): one sandbox per tenant and session,
//! created on first use and labelled `session=<id>`, resumed when stopped. Concurrent first
//! uses of one session create one sandbox.

use super::{Route, SandboxError, SandboxService};
use crate::domain::{CreateSandboxRequest, LabelFilter, Sandbox, SandboxState, TenantId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The label that names a sandbox's session.
pub const SESSION_LABEL: &str = "session";

impl SandboxService {
    /// The sandbox of `tenant`'s session `session`, running: found, resumed, or created
    /// from `image`.
    pub async fn session_sandbox(
        self: &Arc<Self>,
        tenant: &TenantId,
        session: &str,
        image: &str,
    ) -> Result<Sandbox, SandboxError> {
        let valid = !session.is_empty()
            && session.len() <= 128
            && !session.contains(['=', ',', '\0'])
            && !session.chars().any(char::is_control);
        if !valid {
            return Err(SandboxError::Invalid(
                "`sessionId` must be 1-128 characters without '=', ',' or control characters"
                    .into(),
            ));
        }
        let lock = self.session_lock(tenant, session);
        let _held = lock.lock().await;
        match self.find_session(tenant, session).await? {
            Some(sandbox) if sandbox.state == SandboxState::Running => Ok(sandbox),
            Some(sandbox) if sandbox.state.is_resumable() => self.resume(tenant, &sandbox.id).await,
            Some(sandbox) => Err(SandboxError::Conflict(format!(
                "the sandbox of session {session:?} is {}; retry shortly",
                sandbox.state
            ))),
            None => {
                let request = CreateSandboxRequest {
                    image: Some(image.into()),
                    labels: BTreeMap::from([(SESSION_LABEL.to_string(), session.to_string())]),
                    ..Default::default()
                };
                let parsed = request
                    .parse(&self.config)
                    .map_err(|e| SandboxError::Invalid(e.0))?;
                self.create(tenant, parsed, None).await
            }
        }
    }

    /// The live sandbox of `tenant`'s session `session`, if it has one.
    async fn find_session(
        self: &Arc<Self>,
        tenant: &TenantId,
        session: &str,
    ) -> Result<Option<Sandbox>, SandboxError> {
        let filter = LabelFilter {
            key: SESSION_LABEL.into(),
            value: Some(session.into()),
        };
        Ok(self
            .list(tenant, None, &[filter])
            .await?
            .into_iter()
            .find(|s| !matches!(s.state, SandboxState::Terminated | SandboxState::Failed)))
    }

    /// Where requests of `tenant`'s session `session` are served: on the node that holds
    /// its sandbox; here when it has none yet (it is made here) or this is one node.
    pub async fn session_route(
        self: &Arc<Self>,
        tenant: &TenantId,
        session: &str,
    ) -> Result<Route, SandboxError> {
        if self.cluster.is_none() || !self.store_is_shared() {
            return Ok(Route::Here);
        }
        match self.find_session(tenant, session).await? {
            Some(sandbox) => self.route_for(tenant, &sandbox.id).await,
            None => Ok(Route::Here),
        }
    }
}
