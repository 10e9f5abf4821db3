//! Activity times kept in memory on the hot path (exec, files) and flushed to the store
//! by the reaper, so an exec never waits for a database write. Only times that changed
//! since the last flush are written.

use crate::domain::{Sandbox, SandboxId};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

#[derive(Default)]
pub struct ActivityLog {
    state: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    latest: HashMap<SandboxId, DateTime<Utc>>,
    unflushed: HashSet<SandboxId>,
}

impl ActivityLog {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn touch(&self, id: &SandboxId) {
        let mut log = self.log();
        log.latest.insert(id.clone(), Utc::now());
        log.unflushed.insert(id.clone());
    }

    /// Puts the newest known activity time on a record read from the store.
    pub fn overlay(&self, sandbox: &mut Sandbox) {
        if let Some(at) = self.log().latest.get(&sandbox.id).copied() {
            if sandbox.last_activity_at.is_none_or(|stored| stored < at) {
                sandbox.last_activity_at = Some(at);
            }
        }
    }

    pub fn forget(&self, id: &SandboxId) {
        let mut log = self.log();
        log.latest.remove(id);
        log.unflushed.remove(id);
    }

    /// The times touched since the last call, to write to the store.
    pub fn take_unflushed(&self) -> Vec<(SandboxId, DateTime<Utc>)> {
        let mut log = self.log();
        let ids: Vec<SandboxId> = log.unflushed.drain().collect();
        ids.into_iter()
            .filter_map(|id| log.latest.get(&id).map(|at| (id.clone(), *at)))
            .collect()
    }

    /// Puts times back for the next flush (the store write failed).
    pub fn retry_later(&self, seen: &[(SandboxId, DateTime<Utc>)]) {
        let mut log = self.log();
        for (id, _) in seen {
            if log.latest.contains_key(id) {
                log.unflushed.insert(id.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_times_touched_since_the_last_flush_are_flushed() {
        let log = ActivityLog::default();
        let (a, b) = (SandboxId::generate(), SandboxId::generate());
        log.touch(&a);
        log.touch(&b);
        assert_eq!(log.take_unflushed().len(), 2);
        assert!(log.take_unflushed().is_empty(), "nothing changed since");
        log.touch(&a);
        let again = log.take_unflushed();
        assert_eq!(again.iter().map(|(id, _)| id).collect::<Vec<_>>(), [&a]);
        log.retry_later(&again);
        assert_eq!(log.take_unflushed().len(), 1, "a failed write is retried");
        log.forget(&a);
        log.retry_later(&again);
        assert!(
            log.take_unflushed().is_empty(),
            "a forgotten sandbox is not written"
        );
    }
}
