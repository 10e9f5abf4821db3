//! The network of bridged sandboxes: one Docker bridge with traffic between its
//! containers off and the host's own addresses closed by the host's firewall, so a
//! sandbox reaches the network beyond the host but neither its neighbours nor the
//! host's services. Made (and its firewall rules checked) on first use per start.

use super::{SandboxError, SandboxService};
use crate::docker::LABEL_MANAGED;
use crate::domain::Network;
use std::collections::HashMap;

/// The Docker network every bridged sandbox joins.
pub const SANDBOX_NETWORK: &str = "berth-sandboxes";
/// Its Linux bridge (what the firewall rules name).
pub const SANDBOX_BRIDGE: &str = "berth0";

/// The Docker network mode of a sandbox's network.
pub fn docker_mode(network: Network) -> &'static str {
    match network {
        Network::None => "none",
        Network::Bridge => SANDBOX_NETWORK,
    }
}

impl SandboxService {
    /// Makes sure the sandboxes' bridge exists and the host is closed to it; a
    /// `bridge` sandbox is refused (400) where that cannot be done.
    pub(super) async fn ensure_bridge(&self) -> Result<(), SandboxError> {
        let mut ready = self.bridge_ready.lock().await;
        if *ready {
            return Ok(());
        }
        let labels = HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]);
        self.docker
            .ensure_isolated_network(SANDBOX_NETWORK, SANDBOX_BRIDGE, labels)
            .await?;
        crate::firewall::close_host(SANDBOX_BRIDGE)
            .await
            .map_err(|e| {
                SandboxError::Invalid(format!(
                    "`\"network\": \"bridge\"` is not available on this server: {e} \
                     (berth needs root and iptables to keep bridged sandboxes off the host)"
                ))
            })?;
        *ready = true;
        Ok(())
    }
}
