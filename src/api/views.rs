//! Response bodies: what a client sees of the domain's records, and nothing more.

use crate::domain::{
    Limits, Network, Runtime, Sandbox, SandboxId, SandboxState, Usage, VolumeName,
};
use crate::sandbox::VolumeInfo;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// A sandbox as `GET /v1/sandboxes/{id}` and every lifecycle answer show it.
#[derive(Debug, Serialize)]
pub struct SandboxView {
    pub id: SandboxId,
    pub state: SandboxState,
    pub image: String,
    pub volume: VolumeName,
    pub workdir: String,
    pub labels: BTreeMap<String, String>,
    pub limits: Limits,
    pub network: Network,
    pub auto_resume: bool,
    pub allow_root: bool,
    pub runtime: Runtime,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub last_activity_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The cluster node that holds it (absent on a single node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl SandboxView {
    pub fn new(sandbox: Sandbox, usage: Option<Usage>) -> Self {
        SandboxView {
            id: sandbox.id,
            state: sandbox.state,
            image: sandbox.image,
            volume: sandbox.volume,
            workdir: sandbox.workdir,
            labels: sandbox.labels,
            limits: sandbox.limits,
            network: sandbox.network,
            auto_resume: sandbox.auto_resume,
            allow_root: sandbox.allow_root,
            runtime: sandbox.runtime,
            created_at: sandbox.created_at,
            started_at: sandbox.started_at,
            expires_at: sandbox.expires_at,
            stopped_at: sandbox.stopped_at,
            last_activity_at: sandbox.last_activity_at,
            reason: sandbox.reason,
            usage,
            node: sandbox.node,
        }
    }
}

impl From<Sandbox> for SandboxView {
    fn from(sandbox: Sandbox) -> Self {
        SandboxView::new(sandbox, None)
    }
}

#[derive(Debug, Serialize)]
pub struct SandboxList {
    pub sandboxes: Vec<SandboxView>,
}

/// A volume and the sandboxes that use it.
#[derive(Debug, Serialize)]
pub struct VolumeView {
    pub name: VolumeName,
    pub created_at: DateTime<Utc>,
    pub sandboxes: Vec<SandboxId>,
    pub mounted: bool,
}

impl From<VolumeInfo> for VolumeView {
    fn from(v: VolumeInfo) -> Self {
        VolumeView {
            name: v.name,
            created_at: v.created_at,
            sandboxes: v.users,
            mounted: v.mounted,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct VolumeList {
    pub volumes: Vec<VolumeView>,
}
