//! How records are kept in either database: the whole sandbox or snapshot as JSON, with
//! times as RFC 3339 text, so both backends order and compare them alike.

use crate::domain::{Sandbox, SandboxId, Snapshot};
use chrono::Utc;

use super::{IdempotencyStart, StoreError};

/// Idempotency keys older than this are forgotten.
pub(super) const IDEMPOTENCY_TTL_HOURS: i64 = 24;

pub(super) fn now() -> String {
    Utc::now().to_rfc3339()
}

pub(super) fn decode(data: &str) -> Result<Sandbox, StoreError> {
    serde_json::from_str(data).map_err(|e| StoreError::Corrupt(format!("sandbox record: {e}")))
}

pub(super) fn encode(sandbox: &Sandbox) -> Result<String, StoreError> {
    serde_json::to_string(sandbox).map_err(|e| StoreError::Corrupt(format!("sandbox record: {e}")))
}

pub(super) fn decode_snapshot(data: &str) -> Result<Snapshot, StoreError> {
    serde_json::from_str(data).map_err(|e| StoreError::Corrupt(format!("snapshot record: {e}")))
}

pub(super) fn encode_snapshot(snapshot: &Snapshot) -> Result<String, StoreError> {
    serde_json::to_string(snapshot)
        .map_err(|e| StoreError::Corrupt(format!("snapshot record: {e}")))
}

pub(super) fn kind_str(snapshot: &Snapshot) -> &'static str {
    match snapshot.kind {
        crate::domain::SnapshotKind::Snapshot => "snapshot",
        crate::domain::SnapshotKind::Archive => "archive",
    }
}

/// How a request with a key already stored begins: the same body waits for (or gets) the
/// first one's sandbox; another body is refused.
pub(super) fn idempotency_seen(
    stored_hash: String,
    sandbox: Option<String>,
    body_hash: &str,
) -> IdempotencyStart {
    if stored_hash != body_hash {
        return IdempotencyStart::BodyMismatch;
    }
    match sandbox.as_deref().and_then(SandboxId::parse) {
        Some(id) => IdempotencyStart::Done(id),
        None => IdempotencyStart::InFlight,
    }
}
