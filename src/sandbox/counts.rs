//! Sandboxes by state, counted on every transition (read once from the store at start),
//! so `/metrics` costs nothing however many sandboxes there are.

use crate::domain::SandboxState;
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Default)]
pub struct StateCounts {
    counts: [AtomicI64; SandboxState::ALL.len()],
}

fn slot(state: SandboxState) -> usize {
    SandboxState::ALL
        .iter()
        .position(|s| *s == state)
        .expect("every state is in ALL")
}

impl StateCounts {
    pub fn set(&self, state: SandboxState, n: u64) {
        self.counts[slot(state)].store(n as i64, Ordering::Relaxed);
    }

    pub fn add(&self, state: SandboxState) {
        self.counts[slot(state)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn remove(&self, state: SandboxState) {
        self.counts[slot(state)].fetch_sub(1, Ordering::Relaxed);
    }

    pub fn moved(&self, from: SandboxState, to: SandboxState) {
        if from != to {
            self.remove(from);
            self.add(to);
        }
    }

    /// (state, count) for every state.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        SandboxState::ALL
            .iter()
            .map(|s| {
                let n = self.counts[slot(*s)].load(Ordering::Relaxed);
                (s.as_str(), n.max(0) as u64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_move_one_sandbox_between_states() {
        let counts = StateCounts::default();
        counts.set(SandboxState::Running, 2);
        counts.add(SandboxState::Creating);
        counts.moved(SandboxState::Creating, SandboxState::Running);
        counts.moved(SandboxState::Running, SandboxState::Stopped);
        let snap = counts.snapshot();
        assert!(snap.contains(&("running", 2)));
        assert!(snap.contains(&("stopped", 1)));
        assert!(snap.contains(&("creating", 0)));
    }
}
