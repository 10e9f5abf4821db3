//! Activity times kept in memory on the hot path (exec, files) and flushed to the store
//! by the reaper, so an exec never waits for a database write.

use crate::domain::{Sandbox, SandboxId};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct ActivityLog {
    latest: Mutex<HashMap<SandboxId, DateTime<Utc>>>,
}

impl ActivityLog {
    pub fn touch(&self, id: &SandboxId) {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Utc::now());
    }

    pub fn latest(&self, id: &SandboxId) -> Option<DateTime<Utc>> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    /// Puts the newest known activity time on a record read from the store.
    pub fn overlay(&self, sandbox: &mut Sandbox) {
        if let Some(at) = self.latest(&sandbox.id) {
            if sandbox.last_activity_at.is_none_or(|stored| stored < at) {
                sandbox.last_activity_at = Some(at);
            }
        }
    }

    pub fn forget(&self, id: &SandboxId) {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub fn snapshot(&self) -> Vec<(SandboxId, DateTime<Utc>)> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}
