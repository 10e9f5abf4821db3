//! The node-to-node credential: a request one node forwards to another carries, instead
//! of the tenant's key, an HMAC-SHA256 (under the cluster's shared secret) of who sends
//! it, for which tenant, when, and which method and path, and the hash of the key the
//! edge checked (so the owner can close a terminal once that key is revoked), with a
//! random nonce, for the one node it is sent to: that node takes each credential once
//! ([`Replays`]) and no other node takes it at all, so one read off the wire cannot be
//! sent again, there or elsewhere.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// `v2:{unix seconds}:{nonce}:{sending node}:{hex mac}`.
pub const AUTH_HEADER: &str = "x-berth-node-auth";
/// The tenant the edge authenticated.
pub const TENANT_HEADER: &str = "x-berth-tenant";
/// The hash of the key the edge authenticated (empty when none).
pub const KEY_HASH_HEADER: &str = "x-berth-key-hash";
/// A hop this much older or newer than the receiver's clock is refused.
pub const SKEW_S: i64 = 60;

/// The cluster's shared secret (never printed).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What a hop says about its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub from: String,
    /// The node it is sent to (not sent: the receiver puts its own name here).
    pub to: String,
    pub tenant: String,
    pub key_hash: String,
    /// Random, hex: what makes each credential one of a kind.
    pub nonce: String,
}

impl Hop {
    /// A hop from `from` to `to` for `tenant` (whose key hashed to `key_hash`), with a
    /// new nonce.
    pub fn new(from: &str, to: &str, tenant: &str, key_hash: &str) -> Hop {
        Hop {
            from: from.to_string(),
            to: to.to_string(),
            tenant: tenant.to_string(),
            key_hash: key_hash.to_string(),
            nonce: hex::encode(rand::random::<[u8; 16]>()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HopError {
    #[error("the node credential is malformed")]
    Malformed,
    #[error("the node credential is {0} s away from this node's clock (at most {SKEW_S} s): check the nodes' clocks")]
    Skewed(i64),
    #[error(
        "the node credential does not verify: is BERTH_CLUSTER_SECRET the same on every node?"
    )]
    Forged,
    #[error("this node is not in a cluster: it takes no node credentials")]
    NoSecret,
    #[error("the node credential was used before: a node takes each one once")]
    Replayed,
}

fn mac(secret: &Secret, at: i64, hop: &Hop, method: &str, path_and_query: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.0.as_bytes()).expect("any key length");
    for part in [
        "berth-hop-v2",
        &at.to_string(),
        &hop.nonce,
        &hop.from,
        &hop.to,
        &hop.tenant,
        &hop.key_hash,
        method,
        path_and_query,
    ] {
        // Length-prefixed: no two different tuples sign the same bytes.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac
}

/// The `x-berth-node-auth` value for `hop` sending `method path_and_query` at `at`.
pub fn sign(secret: &Secret, at: i64, hop: &Hop, method: &str, path_and_query: &str) -> String {
    let tag = mac(secret, at, hop, method, path_and_query).finalize();
    format!(
        "v2:{at}:{}:{}:{}",
        hop.nonce,
        hop.from,
        hex::encode(tag.into_bytes())
    )
}

/// Checks an `x-berth-node-auth` value (with the tenant and key hash headers) against the
/// request it came with, at `now`, on node `me` (a hop signed for another is forged).
#[allow(clippy::too_many_arguments)]
pub fn verify(
    secret: Option<&Secret>,
    me: &str,
    now: i64,
    header: &str,
    tenant: &str,
    key_hash: &str,
    method: &str,
    path_and_query: &str,
) -> Result<Hop, HopError> {
    let secret = secret.ok_or(HopError::NoSecret)?;
    let mut parts = header.splitn(5, ':');
    let (Some("v2"), Some(at), Some(nonce), Some(from), Some(tag)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(HopError::Malformed);
    };
    let at: i64 = at.parse().map_err(|_| HopError::Malformed)?;
    let tag = hex::decode(tag).map_err(|_| HopError::Malformed)?;
    if nonce.is_empty() || nonce.len() > 64 {
        return Err(HopError::Malformed);
    }
    let hop = Hop {
        from: from.to_string(),
        to: me.to_string(),
        tenant: tenant.to_string(),
        key_hash: key_hash.to_string(),
        nonce: nonce.to_string(),
    };
    // Constant-time comparison.
    mac(secret, at, &hop, method, path_and_query)
        .verify_slice(&tag)
        .map_err(|_| HopError::Forged)?;
    if (now - at).abs() > SKEW_S {
        return Err(HopError::Skewed(now - at));
    }
    Ok(hop)
}

/// The nonces of the credentials this node took lately: those still within the clock
/// window (older ones are refused as stale anyway and are forgotten).
#[derive(Default)]
pub struct Replays {
    seen: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

impl Replays {
    /// `Replayed` when a credential with `nonce` was taken before (`at`: its time).
    pub fn take(&self, nonce: &str, at: i64, now: i64) -> Result<(), HopError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= 1024 && seen.len().is_power_of_two() {
            seen.retain(|_, t| (now - *t).abs() <= SKEW_S);
        }
        if seen.insert(nonce.to_string(), at).is_some() {
            return Err(HopError::Replayed);
        }
        Ok(())
    }
}

/// The time a well-formed credential carries (what [`Replays::take`] keeps).
pub fn signed_at(header: &str) -> Option<i64> {
    header.split(':').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret("0123456789abcdef0123456789abcdef".into())
    }

    fn hop() -> Hop {
        Hop {
            from: "node-a".into(),
            to: "node-b".into(),
            tenant: "tenant-a".into(),
            key_hash: "abc".into(),
            nonce: "00ff".into(),
        }
    }

    #[test]
    fn a_signed_hop_verifies_and_names_its_sender_tenant_and_key() {
        let header = sign(&secret(), 1000, &hop(), "POST", "/v1/sandboxes/x/exec?a=1");
        let got = verify(
            Some(&secret()),
            "node-b",
            1010,
            &header,
            "tenant-a",
            "abc",
            "POST",
            "/v1/sandboxes/x/exec?a=1",
        );
        assert_eq!(got, Ok(hop()));
    }

    #[test]
    fn anything_changed_or_stale_is_refused() {
        let header = sign(&secret(), 1000, &hop(), "GET", "/v1/sandboxes/x");
        let check = |secret: &Secret, now, tenant, key, method, path| {
            verify(
                Some(secret),
                "node-b",
                now,
                &header,
                tenant,
                key,
                method,
                path,
            )
        };
        let ok = ("tenant-a", "abc", "GET", "/v1/sandboxes/x");
        assert!(check(&secret(), 1000, ok.0, ok.1, ok.2, ok.3).is_ok());
        let forged = Err(HopError::Forged);
        // Signed for node-b: any other node refuses it.
        assert_eq!(
            verify(
                Some(&secret()),
                "node-c",
                1000,
                &header,
                ok.0,
                ok.1,
                ok.2,
                ok.3
            ),
            forged
        );
        assert_eq!(check(&secret(), 1000, "tenant-b", ok.1, ok.2, ok.3), forged);
        assert_eq!(check(&secret(), 1000, ok.0, "", ok.2, ok.3), forged);
        assert_eq!(check(&secret(), 1000, ok.0, ok.1, "DELETE", ok.3), forged);
        assert_eq!(
            check(&secret(), 1000, ok.0, ok.1, ok.2, "/v1/sandboxes/y"),
            forged
        );
        let other = Secret("another secret of thirty-two chars!".into());
        assert_eq!(check(&other, 1000, ok.0, ok.1, ok.2, ok.3), forged);
        assert_eq!(
            check(&secret(), 1000 + SKEW_S + 1, ok.0, ok.1, ok.2, ok.3),
            Err(HopError::Skewed(SKEW_S + 1))
        );
        // The sender's name is signed too, and so is the nonce.
        for (from, to) in [("node-a", "node-b"), (":00ff:", ":00fe:")] {
            let changed = header.replacen(from, to, 1);
            assert_eq!(
                verify(
                    Some(&secret()),
                    "node-b",
                    1000,
                    &changed,
                    ok.0,
                    ok.1,
                    ok.2,
                    ok.3
                ),
                forged
            );
        }
        for bad in [
            "",
            "v2:x:00ff:node-a:00",
            "v1:1000:node-a:00",
            "v2:1000:00ff:node-a:zz",
            "v2:1000::node-a:00",
        ] {
            assert_eq!(
                verify(Some(&secret()), "node-b", 1000, bad, ok.0, ok.1, ok.2, ok.3),
                Err(HopError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify(None, "node-b", 1000, &header, ok.0, ok.1, ok.2, ok.3),
            Err(HopError::NoSecret)
        );
    }

    #[test]
    fn a_credential_is_taken_once_and_new_hops_have_new_nonces() {
        let replays = Replays::default();
        assert_eq!(replays.take("n1", 1000, 1000), Ok(()));
        assert_eq!(replays.take("n2", 1000, 1001), Ok(()));
        assert_eq!(replays.take("n1", 1000, 1030), Err(HopError::Replayed));
        let header = sign(&secret(), 1000, &hop(), "GET", "/v1/sandboxes/x");
        assert_eq!(signed_at(&header), Some(1000));
        let (a, b) = (Hop::new("a", "b", "t", ""), Hop::new("a", "b", "t", ""));
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(a.nonce.len(), 32);
        // Old nonces are forgotten once they could not verify anyway.
        for i in 0..2048 {
            replays.take(&format!("old{i}"), 0, 0).unwrap();
        }
        replays.take("late", 5000, 5000).unwrap();
        let kept = replays.seen.lock().unwrap().len();
        assert!(kept < 2048, "{kept}");
    }

    #[test]
    fn the_secret_never_prints() {
        assert_eq!(format!("{:?}", Some(secret())), "Some(Secret(..))");
    }
}
