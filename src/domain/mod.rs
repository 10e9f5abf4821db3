//! Domain types every layer shares: ids, the sandbox state machine, limits, the sandbox
//! record and the parsed create request. No I/O here.

pub mod evaluation;
mod ids;
pub mod image_ref;
mod request;
mod sandbox;
mod snapshot;
mod state;

pub use ids::{ApiKey, SandboxId, SnapshotId, TenantId, VolumeName};
pub use snapshot::{Snapshot, SnapshotKind, SnapshotState};

/// Unix seconds as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
pub use request::{CreateSandbox, CreateSandboxRequest, LabelFilter, PatchSandbox, RequestError};
pub use sandbox::{Limits, Network, Runtime, Sandbox, Usage};
pub use state::{SandboxState, TransitionError};
