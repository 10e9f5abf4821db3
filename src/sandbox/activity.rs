//! Activity times kept in memory on the hot path (exec, files) and flushed to the store
//! by the reaper, so an exec never waits for a database write. Only times that changed
//! since the last flush are written. A sandbox with a request in flight is active *now*,
//! for as long as the request runs (a 20-minute exec keeps its sandbox from idling).

use crate::domain::{Sandbox, SandboxId};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct ActivityLog {
    state: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    latest: HashMap<SandboxId, DateTime<Utc>>,
    unflushed: HashSet<SandboxId>,
    /// Requests in flight per sandbox.
    busy: HashMap<SandboxId, usize>,
}

/// Marks a sandbox busy while it lives; its end counts as activity.
pub struct BusyGuard {
    log: Arc<ActivityLog>,
    id: SandboxId,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut log = self.log.log();
        if let Some(n) = log.busy.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                log.busy.remove(&self.id);
            }
        }
        // A sandbox forgotten meanwhile (stopped, deleted) is not brought back.
        if log.latest.contains_key(&self.id) {
            log.latest.insert(self.id.clone(), Utc::now());
            log.unflushed.insert(self.id.clone());
        }
    }
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

    /// Counts a request in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>, id: &SandboxId) -> BusyGuard {
        self.touch(id);
        *self.log().busy.entry(id.clone()).or_default() += 1;
        BusyGuard {
            log: self.clone(),
            id: id.clone(),
        }
    }

    /// Puts the newest known activity time on a record read from the store: now, while
    /// a request is in flight.
    pub fn overlay(&self, sandbox: &mut Sandbox) {
        let log = self.log();
        let latest = if log.busy.contains_key(&sandbox.id) {
            Some(Utc::now())
        } else {
            log.latest.get(&sandbox.id).copied()
        };
        drop(log);
        if let Some(at) = latest {
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

    #[test]
    fn a_sandbox_with_a_request_in_flight_is_active_now() {
        let log = Arc::new(ActivityLog::default());
        let id = SandboxId::generate();
        let guard = log.begin(&id);
        let mut sandbox = crate::domain::Sandbox::example(&id);
        sandbox.last_activity_at = Some(Utc::now() - chrono::Duration::hours(1));
        std::thread::sleep(std::time::Duration::from_millis(5));
        let begun = Utc::now();
        log.overlay(&mut sandbox);
        assert!(sandbox.last_activity_at.unwrap() >= begun, "busy means now");
        drop(guard);
        let ended = log.log().latest.get(&id).copied().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        log.overlay(&mut sandbox);
        assert_eq!(
            sandbox.last_activity_at,
            Some(ended),
            "idle time counts from the end"
        );
    }
}
