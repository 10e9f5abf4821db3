//! The sandbox state machine: which transitions exist, and guards for what each state
//! allows.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Creating,
    Running,
    /// Container gone or stopped, volume kept: resumable.
    Stopped,
    /// Container gone; volume kept until retention or deletion.
    Terminated,
    Failed,
    /// Volume content moved to the archive store; resumable.
    Archived,
    /// In a cluster: its node's heartbeat lapsed, so its container and volume cannot be
    /// reached. Resumable on another node from its newest snapshot or archive (what was
    /// written since is on the lost node), or by its node when that comes back.
    Lost,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {from} sandbox cannot become {to}")]
pub struct TransitionError {
    pub from: SandboxState,
    pub to: SandboxState,
}

impl SandboxState {
    pub const ALL: [SandboxState; 7] = [
        SandboxState::Creating,
        SandboxState::Running,
        SandboxState::Stopped,
        SandboxState::Terminated,
        SandboxState::Failed,
        SandboxState::Archived,
        SandboxState::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Stopped => "stopped",
            SandboxState::Terminated => "terminated",
            SandboxState::Failed => "failed",
            SandboxState::Archived => "archived",
            SandboxState::Lost => "lost",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// The transitions that exist; everything else is a conflict.
    pub fn check_transition(self, to: SandboxState) -> Result<(), TransitionError> {
        use SandboxState::*;
        let allowed = matches!(
            (self, to),
            (Creating, Running)
                | (Creating, Failed)
                | (Running, Stopped)
                | (Running, Failed)
                | (Stopped, Running)
                | (Stopped, Archived)
                | (Archived, Running)
                | (Creating | Running | Stopped, Lost)
                | (Lost, Running | Stopped)
                | (
                    Creating | Running | Stopped | Failed | Archived | Lost,
                    Terminated
                )
        );
        if allowed {
            Ok(())
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    /// Can come back with `resume`.
    pub fn is_resumable(self) -> bool {
        matches!(
            self,
            SandboxState::Stopped | SandboxState::Archived | SandboxState::Lost
        )
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SandboxState::*;
    use super::*;

    #[test]
    fn a_stopped_sandbox_resumes_but_a_terminated_one_does_not() {
        assert!(Stopped.check_transition(Running).is_ok());
        assert!(Terminated.check_transition(Running).is_err());
        assert!(Stopped.is_resumable());
        assert!(!Terminated.is_resumable());
    }

    #[test]
    fn terminated_is_final() {
        for to in SandboxState::ALL {
            assert!(
                Terminated.check_transition(to).is_err(),
                "terminated -> {to}"
            );
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in SandboxState::ALL {
            assert_eq!(SandboxState::parse(s.as_str()), Some(s));
        }
        assert_eq!(SandboxState::parse("paused"), None);
    }
}
