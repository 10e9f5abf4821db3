//! Identifier newtypes, parsed once at the edge.

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn random_token(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `sb-` and 16 lowercase alphanumerics; also the Docker container name's stem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SandboxId(String);

impl SandboxId {
    pub fn generate() -> Self {
        SandboxId(format!("sb-{}", random_token(16)))
    }

    /// Accepts only ids of the generated shape, so an id can never smuggle a path or a
    /// Docker name of something else.
    pub fn parse(raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix("sb-")?;
        (rest.len() == 16 && rest.bytes().all(|b| ALPHABET.contains(&b)))
            .then(|| SandboxId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Docker container name.
    pub fn container_name(&self) -> String {
        format!("berth-{}", self.0)
    }

    /// The name of the volume created for this sandbox.
    pub fn default_volume(&self) -> VolumeName {
        VolumeName(format!("berth-{}", self.0))
    }
}

/// `snap-` and 16 lowercase alphanumerics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(String);

impl SnapshotId {
    pub fn generate() -> Self {
        SnapshotId(format!("snap-{}", random_token(16)))
    }

    /// Accepts only ids of the generated shape (they name archive objects).
    pub fn parse(raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix("snap-")?;
        (rest.len() == 16 && rest.bytes().all(|b| ALPHABET.contains(&b)))
            .then(|| SnapshotId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The archive object holding it.
    pub fn object_key(&self) -> String {
        format!("snapshots/{}.tar.zst", self.0)
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant's name: 1–64 of `[a-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(TenantId(raw.to_string()))
        } else {
            Err(format!(
                "tenant name {raw:?} must be 1-64 characters of a-z, 0-9, '-' and '_'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The reserved tenant that owns the warm pool's sandboxes. Its name is not one
    /// `parse` accepts, so no key can ever belong to it.
    pub fn pool() -> Self {
        TenantId("berth.pool".to_string())
    }

    pub fn is_pool(&self) -> bool {
        self.0 == "berth.pool"
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Docker volume name that berth manages: `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VolumeName(String);

impl VolumeName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut bytes = raw.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
        let rest_ok =
            raw.len() <= 128 && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if first_ok && rest_ok {
            Ok(VolumeName(raw.to_string()))
        } else {
            Err(format!(
                "volume name {raw:?} is not a valid Docker volume name"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A plaintext API key (`bk_` + 40 alphanumerics). Only its hash is ever stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn generate() -> Self {
        ApiKey(format!("bk_{}", random_token(40)))
    }

    pub fn from_presented(raw: &str) -> Self {
        ApiKey(raw.to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 hex of the key: keys are high-entropy, so a fast hash is enough.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids_round_trip_and_refuse_other_shapes() {
        let id = SandboxId::generate();
        assert_eq!(SandboxId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(SandboxId::parse("sb-../../etc/passwd"), None);
        assert_eq!(SandboxId::parse("sb-ABCDEFGHIJKLMNOP"), None);
        assert_eq!(SandboxId::parse("berth-sb-0123456789abcdef"), None);
    }

    #[test]
    fn tenant_and_volume_names_are_checked() {
        assert!(TenantId::parse("team-a").is_ok());
        assert!(TenantId::parse("Team A").is_err());
        assert!(TenantId::parse("").is_err());
        assert!(VolumeName::parse("my-vol.1").is_ok());
        assert!(VolumeName::parse("../x").is_err());
        assert!(VolumeName::parse("/var/lib").is_err());
    }

    #[test]
    fn keys_hash_stably_and_never_print() {
        let key = ApiKey::generate();
        assert_eq!(key.hash(), ApiKey::from_presented(key.expose()).hash());
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert!(key.expose().starts_with("bk_"));
    }
}
