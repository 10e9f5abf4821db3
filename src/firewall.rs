//! The host's firewall for the sandboxes' bridge: packets from it to the host's own
//! addresses are dropped (replies to connections the host opened still pass), so a
//! bridged sandbox reaches the network beyond the host but no service on the host.
//! Docker's own rules (`enable_icc=false`) keep the bridge's containers apart. Uses
//! the `iptables` that Docker uses; needs root.

use tokio::process::Command;

/// The chain berth owns in the `filter` table.
pub const CHAIN: &str = "BERTH-SANDBOX-INPUT";

#[derive(Debug, thiserror::Error)]
#[error("cannot close the host to the sandbox bridge {bridge}: {message}")]
pub struct FirewallError {
    pub bridge: String,
    pub message: String,
}

/// Makes sure packets arriving on `bridge` for the host itself are dropped: berth's chain
/// (replies pass, the rest drops) and a jump to it first in `INPUT`. Idempotent.
pub async fn close_host(bridge: &str) -> Result<(), FirewallError> {
    let failed = |message: String| FirewallError {
        bridge: bridge.to_string(),
        message,
    };
    if iptables(&["-n", "-L", CHAIN]).await.is_err() {
        if let Err(e) = iptables(&["-N", CHAIN]).await {
            // Made meanwhile by another berth on this host.
            if !e.contains("exists") {
                return Err(failed(e));
            }
        }
    }
    let replies = [
        CHAIN,
        "-m",
        "conntrack",
        "--ctstate",
        "ESTABLISHED,RELATED",
        "-j",
        "RETURN",
    ];
    let drop = [CHAIN, "-j", "DROP"];
    // Filled once; a chain already holding both rules is left alone (no gap).
    if !(has(&replies).await && has(&drop).await) {
        iptables(&["-F", CHAIN]).await.map_err(failed)?;
        for rule in [&replies[..], &drop[..]] {
            let mut append = vec!["-A"];
            append.extend_from_slice(rule);
            iptables(&append).await.map_err(failed)?;
        }
    }
    // Link-local addresses (a cloud's metadata service among them) are never forwarded.
    let link_local = [
        "DOCKER-USER",
        "-i",
        bridge,
        "-d",
        "169.254.0.0/16",
        "-j",
        "DROP",
    ];
    if !has(&link_local).await {
        let mut insert = vec!["-I"];
        insert.extend_from_slice(&link_local);
        iptables(&insert).await.map_err(failed)?;
    }
    let jump = ["INPUT", "-i", bridge, "-j", CHAIN];
    let mut check = vec!["-C"];
    check.extend(jump);
    if iptables(&check).await.is_err() {
        let mut insert = vec!["-I"];
        insert.extend(["INPUT", "1", "-i", bridge, "-j", CHAIN]);
        iptables(&insert).await.map_err(failed)?;
    }
    Ok(())
}

async fn iptables(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run iptables ({e}); apt-get install iptables"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Whether `rule` (a chain and its match) is in place.
async fn has(rule: &[&str]) -> bool {
    let mut check = vec!["-C"];
    check.extend_from_slice(rule);
    iptables(&check).await.is_ok()
}
