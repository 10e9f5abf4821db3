//! Lifecycle events, fanned out in-process to `GET /v1/events` subscribers.

use crate::domain::{Sandbox, SandboxId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventKind {
    #[serde(rename = "sandbox.created")]
    Created,
    #[serde(rename = "sandbox.started")]
    Started,
    #[serde(rename = "sandbox.stopped")]
    Stopped,
    #[serde(rename = "sandbox.resumed")]
    Resumed,
    #[serde(rename = "sandbox.terminated")]
    Terminated,
    #[serde(rename = "sandbox.failed")]
    Failed,
    #[serde(rename = "sandbox.timeout")]
    Timeout,
    #[serde(rename = "sandbox.idle")]
    Idle,
    #[serde(rename = "sandbox.oom")]
    Oom,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Created => "sandbox.created",
            EventKind::Started => "sandbox.started",
            EventKind::Stopped => "sandbox.stopped",
            EventKind::Resumed => "sandbox.resumed",
            EventKind::Terminated => "sandbox.terminated",
            EventKind::Failed => "sandbox.failed",
            EventKind::Timeout => "sandbox.timeout",
            EventKind::Idle => "sandbox.idle",
            EventKind::Oom => "sandbox.oom",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub sandbox_id: SandboxId,
    #[serde(skip)]
    pub tenant: TenantId,
    pub state: crate::domain::SandboxState,
    pub at: DateTime<Utc>,
}

impl Event {
    pub fn new(kind: EventKind, sandbox: &Sandbox) -> Self {
        Event {
            kind,
            sandbox_id: sandbox.id.clone(),
            tenant: sandbox.tenant.clone(),
            state: sandbox.state,
            at: Utc::now(),
        }
    }
}
