//! Terminals of a sandbox, as the service offers them: attaching (the terminal lives in
//! the agent; this hands back the upgraded stream to it, with the request's share of the
//! budget), listing, ending, and the host-side recording (see `recorder`).

use super::{Access, SandboxError, SandboxService};
use crate::agent::query_string;
use crate::domain::{SandboxId, TenantId};
use berth_runtime::term::{clamp_size, MAX_CMD, UPGRADE_PROTOCOL};
use hyper::Method;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// How long an attach may take (the agent answers at once; a resume comes first).
const ATTACH_DEADLINE: Duration = Duration::from_secs(30);
/// Terminal clients one sandbox may have attached at once. They have a budget of their
/// own: open terminals (tabs left open) never use up the budget of execs and file routes.
pub const MAX_VIEWERS_PER_SANDBOX: usize = 32;

/// Terminal clients attached, per sandbox.
#[derive(Default)]
pub struct Viewers {
    counts: Mutex<HashMap<SandboxId, usize>>,
}

/// One attached client's place, given back when dropped.
pub struct ViewerSlot {
    viewers: Arc<Viewers>,
    sandbox: SandboxId,
}

impl Viewers {
    fn take(self: &Arc<Self>, sandbox: &SandboxId) -> Option<ViewerSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(sandbox.clone()).or_default();
        if *n >= MAX_VIEWERS_PER_SANDBOX {
            return None;
        }
        *n += 1;
        Some(ViewerSlot {
            viewers: self.clone(),
            sandbox: sandbox.clone(),
        })
    }
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        let mut counts = self
            .viewers
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.sandbox) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.sandbox);
            }
        }
    }
}

pub use berth_runtime::term::TerminalInfo;

/// What a client asks for.
#[derive(Debug, Clone, Default)]
pub struct TerminalRequest {
    pub session: Option<String>,
    pub cols: Option<u16>,
    pub rows: Option<u16>,
    pub offset: Option<u64>,
    pub cmd: Option<String>,
}

/// An attached terminal: the stream to the agent, and what the attachment holds while it
/// lasts (its share of the budget).
pub struct TerminalAttach {
    pub sandbox: SandboxId,
    pub session: String,
    pub io: TokioIo<hyper::upgrade::Upgraded>,
    _slot: ViewerSlot,
}

/// A session name: 1–64 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn valid_session(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn check_session(name: &str) -> Result<(), SandboxError> {
    if valid_session(name) {
        Ok(())
    } else {
        Err(SandboxError::Invalid(
            "`session` must be 1-64 of A-Z a-z 0-9 _ . - (not starting with . or -)".into(),
        ))
    }
}

impl SandboxService {
    /// Attaches to terminal `session` of the sandbox (created if it is not live), resuming
    /// a stopped sandbox as `auto_resume` allows. Without a session the terminal is
    /// unnamed and ends with its client.
    pub async fn open_terminal(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        request: TerminalRequest,
    ) -> Result<TerminalAttach, SandboxError> {
        let (session, ephemeral) = match &request.session {
            Some(name) => {
                check_session(name)?;
                (name.clone(), false)
            }
            None => (
                format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
                true,
            ),
        };
        if let Some(cmd) = &request.cmd {
            if cmd.len() > MAX_CMD || cmd.contains('\0') {
                return Err(SandboxError::Invalid(format!(
                    "`cmd` must be at most {MAX_CMD} bytes without NUL"
                )));
            }
        }
        let slot = self.viewers.take(id).ok_or_else(|| {
            SandboxError::Busy(format!(
                "this sandbox already has {MAX_VIEWERS_PER_SANDBOX} terminal clients attached"
            ))
        })?;
        let (sandbox, agent, _) = self.agent_for(tenant, id, Access::Mutating).await?;
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(cols) = request.cols {
            pairs.push(("cols", clamp_size(cols).to_string()));
        }
        if let Some(rows) = request.rows {
            pairs.push(("rows", clamp_size(rows).to_string()));
        }
        if let Some(offset) = request.offset {
            pairs.push(("offset", offset.to_string()));
        }
        if let Some(cmd) = &request.cmd {
            pairs.push(("cmd", cmd.clone()));
        }
        pairs.push(("ephemeral", ephemeral.to_string()));
        let query: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let uri = format!("/terminals/{session}/attach?{}", query_string(&query));
        let io = match agent.upgrade(&uri, UPGRADE_PROTOCOL, ATTACH_DEADLINE).await {
            Ok(io) => io,
            Err(e) => return Err(self.explain_failure(&sandbox, e).await),
        };
        self.ensure_recorder(&sandbox.id, &session);
        Ok(TerminalAttach {
            sandbox: sandbox.id.clone(),
            session,
            io,
            _slot: slot,
        })
    }

    /// Live terminals of a running sandbox (none when it is not running).
    pub async fn terminals(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
    ) -> Result<Vec<TerminalInfo>, SandboxError> {
        let sandbox = self.get(tenant, id).await?;
        if sandbox.state != crate::domain::SandboxState::Running {
            return Ok(Vec::new());
        }
        self.agent_terminals(id).await.map_err(SandboxError::Agent)
    }

    /// What the sandbox's agent lists (untrusted: names are checked before use).
    pub(super) async fn agent_terminals(
        &self,
        id: &SandboxId,
    ) -> Result<Vec<TerminalInfo>, crate::agent::AgentError> {
        self.agent_client(id)
            .json(
                Method::GET,
                "/terminals",
                None,
                Duration::from_secs(10),
                1024 * 1024,
            )
            .await
    }

    /// Ends a live terminal (its whole process tree).
    pub async fn end_terminal(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        session: &str,
    ) -> Result<(), SandboxError> {
        check_session(session)?;
        let sandbox = self.get(tenant, id).await?;
        if sandbox.state != crate::domain::SandboxState::Running {
            return Err(SandboxError::NotFound(format!("terminal {session}")));
        }
        self.agent_client(id)
            .no_content(
                Method::DELETE,
                &format!("/terminals/{session}"),
                &[],
                crate::agent::empty_body(),
                Duration::from_secs(10),
            )
            .await
            .map_err(SandboxError::Agent)
    }

    /// The recording of terminal `session` (asciicast v2), while the sandbox's record is kept.
    pub async fn terminal_recording(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
        session: &str,
    ) -> Result<tokio::fs::File, SandboxError> {
        check_session(session)?;
        self.get(tenant, id).await?;
        tokio::fs::File::open(self.recording_path(id, session))
            .await
            .map_err(|_| SandboxError::NotFound(format!("recording of terminal {session}")))
    }

    pub(super) fn recordings_dir(&self, id: &SandboxId) -> PathBuf {
        self.config.data_dir.join("recordings").join(id.as_str())
    }

    pub(super) fn recording_path(&self, id: &SandboxId, session: &str) -> PathBuf {
        self.recordings_dir(id).join(format!("{session}.cast"))
    }

    /// Terminal input or output: activity, like an exec.
    pub fn terminal_activity(&self, id: &SandboxId) {
        self.activity.touch(id);
    }
}

#[cfg(test)]
mod tests {
    use super::valid_session;

    #[test]
    fn session_names_are_short_and_plain() {
        for good in ["main", "interview-1", "a.b_c", "X9"] {
            assert!(valid_session(good), "{good}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "../x", "a b", &"x".repeat(65)] {
            assert!(!valid_session(bad), "{bad}");
        }
    }
}
