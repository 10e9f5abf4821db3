//! Background processes: started by `exec` with `background: true`, listed, followed
//! (their output from the start, in a bounded buffer that drops its oldest part with a
//! marker) and signalled as a process group.

use super::error::AgentError;
use super::exec::{start, Prepared};
use super::output::{Chunk, Stream, Utf8Carry};
use super::spawn::signal_group;
use super::AgentState;
use crate::wire::{ExecEvent, ProcessInfo};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Bytes of output kept per background process.
const BUFFER_BYTES: usize = 1024 * 1024;
/// Background processes remembered at most (finished ones are forgotten first).
const MAX_PROCESSES: usize = 256;

pub struct BackgroundProcess {
    pub pid: u32,
    pub cmd: Vec<String>,
    log: Mutex<Log>,
    /// Bumped whenever the log grows or the process ends.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Log {
    /// (sequence number, event); sequence numbers are dense.
    events: VecDeque<(u64, ExecEvent)>,
    next_seq: u64,
    bytes: usize,
    exit: Option<ExecEvent>,
}

impl BackgroundProcess {
    pub fn info(&self) -> ProcessInfo {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let exit_code = match &log.exit {
            Some(ExecEvent::Exit { exit_code, .. }) => *exit_code,
            _ => None,
        };
        ProcessInfo {
            pid: self.pid,
            cmd: self.cmd.clone(),
            running: log.exit.is_none(),
            exit_code,
        }
    }

    fn push(&self, event: ExecEvent) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let size = match &event {
            ExecEvent::Stdout { data } | ExecEvent::Stderr { data } => data.len(),
            _ => 0,
        };
        let seq = log.next_seq;
        log.next_seq += 1;
        log.bytes += size;
        log.events.push_back((seq, event));
        while log.bytes > BUFFER_BYTES {
            let Some((_, old)) = log.events.pop_front() else {
                break;
            };
            if let ExecEvent::Stdout { data } | ExecEvent::Stderr { data } = old {
                log.bytes -= data.len();
            }
        }
        drop(log);
        self.changed.send_modify(|v| *v += 1);
    }

    fn end(&self, exit: ExecEvent) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).exit = Some(exit);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Streams events from the start (or the oldest kept, after a `truncated` marker);
    /// with `follow`, waits for more until the process ends.
    pub async fn follow(self: Arc<Self>, follow: bool, tx: mpsc::Sender<ExecEvent>) {
        let mut changes = self.changed.subscribe();
        let mut next: u64 = 0;
        loop {
            changes.borrow_and_update();
            let (batch, exit) = {
                let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                let batch: Vec<(u64, ExecEvent)> = log
                    .events
                    .iter()
                    .filter(|(seq, _)| *seq >= next)
                    .cloned()
                    .collect();
                (batch, log.exit.clone())
            };
            for (seq, event) in batch {
                if seq > next
                    && tx
                        .send(ExecEvent::Truncated {
                            stream: "buffer".into(),
                            cut_bytes: None,
                        })
                        .await
                        .is_err()
                {
                    return;
                }
                next = seq + 1;
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if let Some(exit) = exit {
                let _ = tx.send(exit).await;
                return;
            }
            if !follow {
                return;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    }
}

/// Starts `prepared` in the background and records it.
pub fn start_background(state: &Arc<AgentState>, prepared: Prepared) -> Result<u32, AgentError> {
    let cmd = prepared.argv.clone();
    let mut running = start(state, prepared)?;
    running.guard.disarm();
    let (changed, _) = watch::channel(0);
    let proc = Arc::new(BackgroundProcess {
        pid: running.pid,
        cmd,
        log: Mutex::new(Log::default()),
        changed,
    });
    {
        let mut procs = state.processes.lock().unwrap_or_else(|p| p.into_inner());
        if procs.len() >= MAX_PROCESSES {
            procs.retain(|_, p| p.info().running);
        }
        procs.insert(running.pid, proc.clone());
    }
    let pid = running.pid;
    // The task owns the whole run (its pumps' stop with it) until both pipes close.
    tokio::spawn(async move {
        let mut text = [Utf8Carry::default(), Utf8Carry::default()];
        let mut record = |chunk: Chunk| match chunk {
            Chunk::Data(s, bytes) => {
                let data = text[s as usize].push(&bytes);
                if !data.is_empty() {
                    proc.push(match s {
                        Stream::Stdout => ExecEvent::Stdout { data },
                        Stream::Stderr => ExecEvent::Stderr { data },
                    });
                }
            }
            // Background output is uncapped (the ring below bounds it), so these never come.
            Chunk::Tail(..) => {}
        };
        // Background output is not capped by a client; leftovers hold pipes, so read
        // until both pipes close.
        while let Some(chunk) = running.chunks.recv().await {
            record(chunk);
        }
        let exit = match (&mut running.finish).await {
            Ok(f) => ExecEvent::Exit {
                exit_code: f.exit_code,
                timed_out: f.timed_out,
                oom_killed: f.oom_killed,
                duration_ms: f.duration_ms,
                signal: f.signal,
            },
            Err(e) => ExecEvent::Error {
                message: format!("process supervisor failed: {e}"),
            },
        };
        proc.end(exit);
    });
    Ok(pid)
}

pub fn get(state: &AgentState, pid: u32) -> Result<Arc<BackgroundProcess>, AgentError> {
    state
        .processes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&pid)
        .cloned()
        .ok_or_else(|| AgentError::NotFound(format!("no background process with pid {pid}")))
}

pub fn list(state: &AgentState) -> Vec<ProcessInfo> {
    let procs = state.processes.lock().unwrap_or_else(|p| p.into_inner());
    let mut infos: Vec<ProcessInfo> = procs.values().map(|p| p.info()).collect();
    infos.sort_by_key(|p| p.pid);
    infos
}

pub fn kill(state: &AgentState, pid: u32, signal: Option<&str>) -> Result<(), AgentError> {
    let proc = get(state, pid)?;
    if !proc.info().running {
        return Err(AgentError::Conflict(format!(
            "process {pid} has already exited"
        )));
    }
    let signal = parse_signal(signal.unwrap_or("TERM"))?;
    signal_group(pid, signal)
        .map_err(|e| AgentError::Conflict(format!("cannot signal process {pid}: {e}")))
}

fn parse_signal(name: &str) -> Result<i32, AgentError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Ok(match bare {
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        other => match other.parse::<i32>() {
            Ok(n) if (1..=64).contains(&n) => n,
            _ => return Err(AgentError::BadRequest(format!("unknown signal {name:?}"))),
        },
    })
}
