//! A snapshot: a zstd-compressed tar of a sandbox's volume in the archive store. The same
//! record carries an archived sandbox's volume (`kind: archive`, not listed as a snapshot).

use super::{SandboxId, SnapshotId, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Asked for by a client; listed, kept until deleted or its retention.
    Snapshot,
    /// An archived sandbox's volume; goes when the sandbox resumes or is deleted.
    Archive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// Being written (a crash here is undone at the next start).
    Creating,
    Ready,
    Failed,
}

impl SnapshotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Creating => "creating",
            SnapshotState::Ready => "ready",
            SnapshotState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub tenant: TenantId,
    pub sandbox_id: SandboxId,
    pub kind: SnapshotKind,
    pub state: SnapshotState,
    pub label: Option<String>,
    /// Bytes of the compressed object.
    pub size_bytes: u64,
    /// SHA-256 of the compressed object.
    pub sha256: Option<String>,
    /// The workdir the tar's entries are relative to.
    pub workdir: String,
    pub created_at: DateTime<Utc>,
    /// Why it failed.
    pub reason: Option<String>,
}
