//! Zombie reaping for PID 1: one SIGCHLD loop reaps every child (ours and orphans that
//! were re-parented to us) and hands each exit status to whoever spawned that pid.

use std::collections::HashMap;
use std::io;
use std::process::Child;
use std::sync::{Arc, Mutex};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }

    pub fn signal(self) -> Option<i32> {
        match self {
            ExitStatus::Signal(s) => Some(s),
            ExitStatus::Code(_) => None,
        }
    }
}

/// Owns `waitpid(-1)`. Nobody else in the agent may wait on a child.
pub struct Reaper {
    waiting: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts the reaping loop; call before any spawn.
    pub fn start() -> io::Result<Arc<Self>> {
        let reaper = Arc::new(Reaper {
            waiting: Mutex::new(HashMap::new()),
        });
        let mut sigchld = signal(SignalKind::child())?;
        let this = reaper.clone();
        tokio::spawn(async move {
            loop {
                this.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Spawns a child under the lock so its exit cannot be reaped before it is watched.
    pub fn spawn_watched(
        &self,
        spawn: impl FnOnce() -> io::Result<Child>,
    ) -> io::Result<(Child, oneshot::Receiver<ExitStatus>)> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let child = spawn()?;
        let (tx, rx) = oneshot::channel();
        waiting.insert(child.id() as i32, tx);
        // Every child the agent starts is user code: the memory guard watches it now.
        super::memory_guard::user_code_started();
        Ok((child, rx))
    }

    /// Reaps under the lock: a `spawn` in progress holds it, and std waits for a child
    /// whose `exec` failed itself, so that child must not be reaped from under it.
    fn reap_all(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: plain syscall with a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let exit = if libc::WIFEXITED(status) {
                ExitStatus::Code(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                ExitStatus::Signal(libc::WTERMSIG(status))
            } else {
                continue;
            };
            if let Some(sender) = waiting.remove(&pid) {
                let _ = sender.send(exit);
            }
        }
    }
}
