//! Lifecycle events, fanned out in-process to `GET /v1/events` subscribers: one channel
//! per tenant (a noisy tenant never makes another's stream lag), and a bounded number of
//! subscribers per tenant and on the server.

use crate::domain::{Sandbox, SandboxId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events a subscriber may fall behind by before it is told it missed some.
const CHANNEL_CAPACITY: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    #[serde(rename = "sandbox.archived")]
    Archived,
    #[serde(rename = "sandbox.lost")]
    Lost,
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
            EventKind::Archived => "sandbox.archived",
            EventKind::Lost => "sandbox.lost",
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
    /// The cluster node it happened on (unset on a single node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Event {
    pub fn new(kind: EventKind, sandbox: &Sandbox) -> Self {
        Event {
            kind,
            sandbox_id: sandbox.id.clone(),
            tenant: sandbox.tenant.clone(),
            state: sandbox.state,
            at: Utc::now(),
            node: None,
        }
    }
}

/// Subscriber ceilings.
#[derive(Debug, Clone, Copy)]
pub struct SubscriberLimits {
    pub per_tenant: usize,
    pub total: usize,
}

struct Channel {
    sender: broadcast::Sender<Event>,
    subscribers: usize,
}

/// The per-tenant channels.
pub struct EventHub {
    limits: SubscriberLimits,
    channels: Mutex<(HashMap<TenantId, Channel>, usize)>,
}

/// A subscription to one tenant's events; leaving frees its place.
pub struct Subscription {
    pub receiver: broadcast::Receiver<Event>,
    hub: Arc<EventHub>,
    tenant: TenantId,
}

impl EventHub {
    pub fn new(limits: SubscriberLimits) -> Arc<Self> {
        Arc::new(EventHub {
            limits,
            channels: Mutex::default(),
        })
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, (HashMap<TenantId, Channel>, usize)> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends to the sandbox's tenant's subscribers, if it has any.
    pub fn emit(&self, event: Event) {
        if let Some(channel) = self.channels().0.get(&event.tenant) {
            let _ = channel.sender.send(event);
        }
    }

    /// A new subscriber, or why there is no room for one.
    pub fn subscribe(self: &Arc<Self>, tenant: &TenantId) -> Result<Subscription, String> {
        let mut guard = self.channels();
        let (channels, total) = &mut *guard;
        if *total >= self.limits.total {
            return Err(format!(
                "the server already serves {} event streams",
                self.limits.total
            ));
        }
        let channel = channels.entry(tenant.clone()).or_insert_with(|| Channel {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
            subscribers: 0,
        });
        if channel.subscribers >= self.limits.per_tenant {
            return Err(format!(
                "tenant {tenant} already has {} event streams open",
                self.limits.per_tenant
            ));
        }
        channel.subscribers += 1;
        *total += 1;
        Ok(Subscription {
            receiver: channel.sender.subscribe(),
            hub: self.clone(),
            tenant: tenant.clone(),
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut guard = self.hub.channels();
        let (channels, total) = &mut *guard;
        *total -= 1;
        if let Some(channel) = channels.get_mut(&self.tenant) {
            channel.subscribers -= 1;
            if channel.subscribers == 0 {
                channels.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_sees_only_its_own_events_and_subscribers_are_bounded() {
        let hub = EventHub::new(SubscriberLimits {
            per_tenant: 1,
            total: 2,
        });
        let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
        let mut sub_a = hub.subscribe(&a).unwrap();
        assert!(hub.subscribe(&a).is_err(), "per-tenant ceiling");
        let sub_b = hub.subscribe(&b).unwrap();
        assert!(
            hub.subscribe(&TenantId::parse("c").unwrap()).is_err(),
            "server ceiling"
        );
        let mut sandbox = Sandbox::example(&SandboxId::generate());
        sandbox.tenant = b.clone();
        for _ in 0..1000 {
            hub.emit(Event::new(EventKind::Started, &sandbox));
        }
        assert!(
            sub_a.receiver.try_recv().is_err(),
            "b's events never reach a"
        );
        drop(sub_b);
        assert!(
            !hub.channels().0.contains_key(&b),
            "an unwatched tenant has no channel"
        );
        sandbox.tenant = a;
        hub.emit(Event::new(EventKind::Stopped, &sandbox));
        assert_eq!(sub_a.receiver.try_recv().unwrap().kind, EventKind::Stopped);
    }
}
