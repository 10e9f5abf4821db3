//! Exec: start a command in its own tagged tree, feed stdin, collect or stream capped
//! output, enforce the timeout by killing the whole tree, report how it ended.

use super::error::AgentError;
use super::output::{cut_marker, pump, Chunk, Stream, Utf8Carry};
use super::spawn::{kill_tree, spawn, SpawnSpec, Spawned};
use super::AgentState;
use crate::wire::{ExecEvent, ExecRequest, ExecResult};
use base64::Engine;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Longest any exec may run, whatever the request says (one day).
const MAX_TIMEOUT_S: f64 = 86_400.0;
/// Once the main process has exited, how long to wait for pipes held by its leftovers
/// before the pumps are told to hand over what they hold and end.
const DRAIN_GRACE: Duration = Duration::from_millis(50);

/// Standard base64 that also takes unused bits set in the last symbol, as many encoders
/// (and the JSON Schema pattern) allow.
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// A validated exec, ready to start.
pub struct Prepared {
    pub argv: Vec<String>,
    spec: SpawnSpec,
    stdin: Vec<u8>,
    timeout: Duration,
    cap: u64,
    kill_on_exit: bool,
}

pub fn prepare(state: &AgentState, req: &ExecRequest) -> Result<Prepared, AgentError> {
    let argv = req.argv().map_err(AgentError::BadRequest)?;
    // A background process lives until it ends or is killed, unless a timeout is given;
    // its output goes to a ring buffer, so the per-stream cap does not apply.
    let default_timeout = if req.background {
        MAX_TIMEOUT_S
    } else {
        state.default_timeout_s
    };
    let timeout_s = req.timeout_s.unwrap_or(default_timeout);
    if !(timeout_s.is_finite() && timeout_s > 0.0) {
        return Err(AgentError::BadRequest(
            "`timeout_s` must be a positive number".into(),
        ));
    }
    let cap = if req.background {
        u64::MAX
    } else {
        req.max_output_bytes.unwrap_or(state.default_output_cap)
    };
    let stdin = match (&req.stdin, &req.stdin_b64) {
        (Some(_), Some(_)) => {
            return Err(AgentError::BadRequest(
                "give `stdin` or `stdin_b64`, not both".into(),
            ))
        }
        (Some(text), None) => text.clone().into_bytes(),
        (None, Some(b64)) => LENIENT_BASE64
            .decode(b64)
            .map_err(|e| AgentError::BadRequest(format!("`stdin_b64` is not base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    let creds = state.credentials_for(req.user.as_deref())?;
    let cwd = state.resolve(req.cwd.as_deref().unwrap_or("."))?;
    match std::fs::metadata(&cwd) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(AgentError::Conflict(format!(
                "cwd {} is not a directory in the sandbox",
                cwd.display()
            )))
        }
        Err(_) => {
            return Err(AgentError::NotFound(format!(
                "cwd {} does not exist in the sandbox",
                cwd.display()
            )))
        }
    }
    let mut env = state.exec_env(creds);
    let mut set = |k: &str, v: &str| {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    };
    for (k, v) in &req.env {
        if !valid_env(k, v) {
            return Err(AgentError::BadRequest(format!(
                "invalid env var name or value: {k:?}"
            )));
        }
        set(k, v);
    }
    Ok(Prepared {
        argv: argv.clone(),
        spec: SpawnSpec {
            argv,
            env,
            cwd,
            user: Some(creds),
        },
        stdin,
        timeout: Duration::from_secs_f64(timeout_s.min(MAX_TIMEOUT_S)),
        cap,
        kill_on_exit: req.kill_on_exit,
    })
}

/// Whether `k=v` can be a process's environment entry.
pub fn valid_env(k: &str, v: &str) -> bool {
    !(k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0'))
}

/// How a run ended.
pub struct Finish {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub duration_ms: u64,
}

/// Kills the tree when dropped unless disarmed: a client that goes away kills its exec.
pub struct KillOnDrop {
    pid: u32,
    tag: u32,
    armed: bool,
}

impl KillOnDrop {
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.armed {
            kill_tree(self.pid, self.tag);
        }
    }
}

/// A started exec: output arrives on `chunks`, the ending on `finish`.
pub struct Running {
    pub pid: u32,
    pub chunks: mpsc::Receiver<Chunk>,
    pub finish: JoinHandle<Finish>,
    pub guard: KillOnDrop,
    /// Tells the pumps (detached tasks; they end when told, or at end of their pipes) to take what their pipes hold, send their tails and end.
    stop: watch::Sender<bool>,
    /// When the pumps are told to stop, set at the first chunk asked for after exit.
    drain_until: Option<tokio::time::Instant>,
}

impl Running {
    /// The output still to come once the main process has exited; `None` when the pumps
    /// have ended. Leftovers of the tree may hold the pipes open forever, so past the grace
    /// the pumps are told to stop; they still send what they hold (the tail of a capped
    /// stream, the last of a pipe's buffer), however late a busy machine runs them.
    async fn next_after_exit(&mut self) -> Option<Chunk> {
        let until = *self
            .drain_until
            .get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_GRACE);
        if !*self.stop.borrow() {
            match tokio::time::timeout_at(until, self.chunks.recv()).await {
                Ok(chunk) => return chunk,
                Err(_) => {
                    let _ = self.stop.send(true);
                }
            }
        }
        self.chunks.recv().await
    }
}

/// A run given up (its client gone) stops its pumps too, rather than leave them reading
/// whatever leftovers still write.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub fn start(state: &AgentState, prepared: Prepared) -> Result<Running, AgentError> {
    let Prepared {
        argv,
        spec,
        stdin,
        timeout,
        cap,
        kill_on_exit,
    } = prepared;
    let oom_before = oom_kill_count();
    let started = Instant::now();
    let Spawned {
        pid,
        tag,
        stdin: mut stdin_pipe,
        stdout,
        stderr,
        exit,
    } = spawn(&state.reaper, spec).map_err(|e| AgentError::Spawn {
        exit_code: if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
        message: format!("berth: cannot start {:?}: {e}\n", argv[0]),
    })?;
    tokio::spawn(async move {
        let _ = stdin_pipe.write_all(&stdin).await;
        // Dropping the sender closes the child's stdin.
    });
    let (tx, chunks) = mpsc::channel(32);
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(pump(
        stdout,
        Stream::Stdout,
        cap,
        tx.clone(),
        stopped.clone(),
    ));
    tokio::spawn(pump(stderr, Stream::Stderr, cap, tx, stopped));
    let finish = tokio::spawn(async move {
        let (status, timed_out) = match tokio::time::timeout(timeout, exit).await {
            Ok(status) => (status.ok(), false),
            Err(_) => (None, true),
        };
        if timed_out || kill_on_exit {
            // Off the async workers: it waits for the reaper (a task) to collect the dead.
            let _ = tokio::task::spawn_blocking(move || kill_tree(pid, tag)).await;
        }
        // The OOM killer may pick any process of the tree (often a child of a shell, whose
        // parent then exits 137), so any OOM kill in the container during this exec counts.
        let oom_killed = oom_kill_count() > oom_before;
        Finish {
            exit_code: if timed_out {
                None
            } else {
                status.and_then(|s| s.code())
            },
            signal: if timed_out {
                Some(libc::SIGKILL)
            } else {
                status.and_then(|s| s.signal())
            },
            timed_out,
            oom_killed,
            duration_ms: started.elapsed().as_millis() as u64,
        }
    });
    Ok(Running {
        pid,
        chunks,
        finish,
        guard: KillOnDrop {
            pid,
            tag,
            armed: true,
        },
        stop,
        drain_until: None,
    })
}

/// Runs to the end and returns the whole (capped) result: the head of each stream, and
/// where output was cut, a marker line and the tail.
pub async fn run_buffered(mut running: Running, base64_out: bool) -> ExecResult {
    let mut out: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut cut: [Option<u64>; 2] = [None, None];
    let mut collect = |chunk: Chunk| match chunk {
        Chunk::Data(s, bytes) => out[s as usize].extend_from_slice(&bytes),
        Chunk::Tail(s, n, bytes) => {
            if n > 0 {
                out[s as usize].extend_from_slice(cut_marker(s, n).as_bytes());
                cut[s as usize] = Some(n);
            }
            out[s as usize].extend_from_slice(&bytes);
        }
    };
    let finish = loop {
        tokio::select! {
            Some(chunk) = running.chunks.recv() => collect(chunk),
            finish = &mut running.finish => break finish,
        }
    };
    while let Some(chunk) = running.next_after_exit().await {
        collect(chunk);
    }
    running.guard.disarm();
    let finish = finish.unwrap_or(Finish {
        exit_code: None,
        signal: None,
        timed_out: false,
        oom_killed: false,
        duration_ms: 0,
    });
    let [stdout, stderr] = out;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (stdout_b64, stderr_b64) = if base64_out {
        (Some(b64(&stdout)), Some(b64(&stderr)))
    } else {
        (None, None)
    };
    ExecResult {
        exit_code: finish.exit_code,
        stdout_b64,
        stderr_b64,
        stdout: lossy(stdout),
        stderr: lossy(stderr),
        timed_out: finish.timed_out,
        oom_killed: finish.oom_killed,
        truncated: cut.iter().any(Option::is_some),
        duration_ms: finish.duration_ms,
        signal: finish.signal,
        stdout_cut_bytes: cut[0],
        stderr_cut_bytes: cut[1],
    }
}

/// Text without a copy when it is valid UTF-8.
fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Runs to the end, sending NDJSON events; stops (and so kills the tree) as soon as the
/// receiver is gone. Past half the cap a stream goes quiet; its tail follows at the end,
/// after a `truncated` event that says how much was cut.
pub async fn run_streaming(mut running: Running, tx: mpsc::Sender<ExecEvent>) {
    let mut text = [Utf8Carry::default(), Utf8Carry::default()];
    let event = |s: Stream, data: String| match s {
        Stream::Stdout => ExecEvent::Stdout { data },
        Stream::Stderr => ExecEvent::Stderr { data },
    };
    let to_events = |chunk: Chunk, text: &mut [Utf8Carry; 2]| -> Vec<ExecEvent> {
        let mut events = Vec::new();
        match chunk {
            Chunk::Data(s, bytes) => {
                let data = text[s as usize].push(&bytes);
                if !data.is_empty() {
                    events.push(event(s, data));
                }
            }
            Chunk::Tail(s, n, bytes) => {
                if n > 0 {
                    let head_rest = text[s as usize].finish();
                    if !head_rest.is_empty() {
                        events.push(event(s, head_rest));
                    }
                    events.push(ExecEvent::Truncated {
                        stream: stream_name(s).into(),
                        cut_bytes: Some(n),
                    });
                }
                let data = text[s as usize].push(&bytes);
                if !data.is_empty() {
                    events.push(event(s, data));
                }
            }
        }
        events
    };
    let finish = loop {
        tokio::select! {
            Some(chunk) = running.chunks.recv() => {
                for ev in to_events(chunk, &mut text) {
                    if tx.send(ev).await.is_err() { return; }
                }
            }
            finish = &mut running.finish => break finish,
            _ = tx.closed() => return,
        }
    };
    while let Some(chunk) = running.next_after_exit().await {
        for ev in to_events(chunk, &mut text) {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }
    running.guard.disarm();
    for s in [Stream::Stdout, Stream::Stderr] {
        let rest = text[s as usize].finish();
        if !rest.is_empty() && tx.send(event(s, rest)).await.is_err() {
            return;
        }
    }
    let exit = match finish {
        Ok(f) => ExecEvent::Exit {
            exit_code: f.exit_code,
            timed_out: f.timed_out,
            oom_killed: f.oom_killed,
            duration_ms: f.duration_ms,
            signal: f.signal,
        },
        Err(e) => ExecEvent::Error {
            message: format!("exec supervisor failed: {e}"),
        },
    };
    let _ = tx.send(exit).await;
}

pub fn stream_name(s: Stream) -> &'static str {
    match s {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

/// The container's OOM-kill counter (cgroup v1 `memory.oom_control`, or v2
/// `memory.events`); 0 where neither is readable.
fn oom_kill_count() -> u64 {
    let read_counter = |path: &str| -> Option<u64> {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
    };
    let cgroup = read_counter("/sys/fs/cgroup/memory/memory.oom_control")
        .or_else(|| read_counter("/sys/fs/cgroup/memory.events"))
        .unwrap_or(0);
    cgroup + super::memory_guard::kills()
}
