//! Terminals: a PTY the agent owns, so a terminal outlives its clients (and the
//! supervisor). The agent always drains the PTY into a ring of the last [`RING_BYTES`]
//! with a running byte offset, so a program never blocks on an absent viewer; every
//! attached client is a subscriber with a byte-bounded queue, evicted when it falls that
//! far behind, so one slow viewer never stalls the PTY or the others.

use super::error::AgentError;
use super::reaper::ExitStatus;
use super::spawn;
use super::AgentState;
use crate::term::{clamp_size, TermControl, TerminalInfo, MAX_CMD, RING_BYTES};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// Most terminals one sandbox may have running at once.
pub const MAX_TERMINALS: usize = 32;
/// How long an ended terminal stays for recorders to read its last output.
const KEEP_ENDED: std::time::Duration = std::time::Duration::from_secs(30);
/// Bytes a subscriber may have queued before it is evicted. The subscriber is the
/// supervisor, which reads at once (it bounds each client itself), so this only absorbs
/// bursts: a program can write faster than anything reads it, for a while.
pub const SUBSCRIBER_BYTES: usize = 32 * 1024 * 1024;

/// What a subscriber receives.
#[derive(Debug)]
pub enum Out {
    Data(Bytes),
    Control(TermControl),
}

/// How a terminal is created or attached.
#[derive(Debug, Clone, Default)]
pub struct AttachSpec {
    pub cols: Option<u16>,
    pub rows: Option<u16>,
    pub offset: Option<u64>,
    /// The run `offset` counts in; another run's offset means nothing (all kept is sent).
    pub incarnation: Option<String>,
    pub cmd: Option<String>,
    /// Ends when its last viewer leaves (an unnamed terminal).
    pub ephemeral: bool,
    /// A recorder: sees output but is no viewer (never creates, resizes or keeps an
    /// ephemeral terminal alive).
    pub recorder: bool,
}

/// One attached client.
pub struct Subscription {
    pub terminal: Arc<Terminal>,
    pub id: u64,
    pub rx: mpsc::UnboundedReceiver<Out>,
    /// Bytes queued for this subscriber; the consumer subtracts what it sent on.
    pub queued: Arc<AtomicUsize>,
    pub viewer: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.terminal.unsubscribe(self.id, self.viewer);
    }
}

struct Subscriber {
    id: u64,
    tx: mpsc::UnboundedSender<Out>,
    queued: Arc<AtomicUsize>,
    viewer: bool,
}

struct Shared {
    ring: VecDeque<u8>,
    /// Output offset of `ring[0]`.
    start: u64,
    cols: u16,
    rows: u16,
    subscribers: Vec<Subscriber>,
    viewers: usize,
    exited: Option<Option<i32>>,
}

impl Shared {
    fn end(&self) -> u64 {
        self.start + self.ring.len() as u64
    }
}

pub struct Terminal {
    pub name: String,
    /// This run of the session (see `TermControl::Hello`).
    pub incarnation: String,
    pub pid: u32,
    tag: u32,
    ephemeral: bool,
    master: AsyncFd<OwnedFd>,
    shared: Mutex<Shared>,
    /// Serialises writes of input, so one frame's bytes stay together.
    input: tokio::sync::Mutex<()>,
    next_subscriber: AtomicU64,
    pub created_at: String,
}

/// The sandbox's terminals by name.
#[derive(Default)]
pub struct Terminals {
    map: Mutex<HashMap<String, Arc<Terminal>>>,
}

impl Terminals {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Terminal>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running terminals.
    pub fn list(&self) -> Vec<TerminalInfo> {
        let mut list: Vec<_> = self
            .map()
            .values()
            .filter(|t| !t.ended())
            .map(|t| t.info())
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Ends a running terminal: its whole process tree is killed; its viewers get `exit`.
    pub fn kill(&self, name: &str) -> Result<(), AgentError> {
        let terminal = self
            .map()
            .get(name)
            .filter(|t| !t.ended())
            .cloned()
            .ok_or_else(|| AgentError::NotFound(format!("no terminal {name:?}")))?;
        terminal.kill();
        Ok(())
    }

    /// Forgets `terminal` (ended a while ago) unless its name was taken again meanwhile.
    fn forget(&self, terminal: &Arc<Terminal>) {
        let mut map = self.map();
        if map
            .get(&terminal.name)
            .is_some_and(|t| Arc::ptr_eq(t, terminal))
        {
            map.remove(&terminal.name);
        }
    }
}

/// A new run's id: when this agent started, and a count.
fn next_incarnation() -> String {
    static STARTED: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let started = STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    format!("{started}-{}", COUNT.fetch_add(1, Ordering::Relaxed))
}

/// Attaches to terminal `name`. A viewer starts it (running `cmd`, or a shell) unless it
/// runs; a recorder never starts one, but may still read one that ended a moment ago.
pub fn attach(
    state: &Arc<AgentState>,
    name: &str,
    spec: AttachSpec,
) -> Result<Subscription, AgentError> {
    let terminal = {
        let mut map = state.terminals.map();
        match map.get(name) {
            Some(t) if spec.recorder || !t.ended() => t.clone(),
            _ if spec.recorder => {
                return Err(AgentError::NotFound(format!("no terminal {name:?}")));
            }
            _ => {
                let running = map.values().filter(|t| !t.ended()).count();
                if running >= MAX_TERMINALS {
                    return Err(AgentError::Conflict(format!(
                        "this sandbox already has {MAX_TERMINALS} terminals; end one first"
                    )));
                }
                let t = start(state, name, &spec)?;
                map.insert(name.to_string(), t.clone());
                t
            }
        }
    };
    let offset = spec.offset.filter(|_| {
        spec.incarnation
            .as_deref()
            .is_none_or(|i| i == terminal.incarnation)
    });
    if !spec.recorder {
        if let (Some(cols), Some(rows)) = (spec.cols, spec.rows) {
            terminal.resize(cols, rows);
        }
    }
    Ok(terminal.subscribe(offset, !spec.recorder))
}

/// Starts a program on a new PTY.
fn start(
    state: &Arc<AgentState>,
    name: &str,
    spec: &AttachSpec,
) -> Result<Arc<Terminal>, AgentError> {
    let cols = clamp_size(spec.cols.unwrap_or(80));
    let rows = clamp_size(spec.rows.unwrap_or(24));
    let argv = match spec.cmd.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(cmd) if cmd.len() > MAX_CMD || cmd.contains('\0') => {
            return Err(AgentError::BadRequest(format!(
                "`cmd` must be at most {MAX_CMD} bytes without NUL"
            )))
        }
        Some(cmd) => vec!["/bin/sh".to_string(), "-c".into(), cmd.to_string()],
        None if std::path::Path::new("/bin/bash").exists() => vec!["/bin/bash".to_string()],
        None => vec!["/bin/sh".to_string()],
    };
    let winsize = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&winsize), None)
        .map_err(|e| AgentError::Io(format!("cannot open a terminal: {e}")))?;
    set_nonblocking(&pty.master).map_err(|e| AgentError::Io(e.to_string()))?;
    let creds = state.credentials_for(None)?;
    let mut env = state.exec_env(creds);
    env.retain(|(k, _)| k != "TERM");
    env.push(("TERM".into(), "xterm-256color".into()));
    let tag = spawn::next_tag();
    let stdio = |fd: &OwnedFd| -> Result<std::process::Stdio, AgentError> {
        fd.try_clone()
            .map(std::process::Stdio::from)
            .map_err(|e| AgentError::Io(e.to_string()))
    };
    let mut command = std::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .current_dir(&state.workdir)
        .stdin(stdio(&pty.slave)?)
        .stdout(stdio(&pty.slave)?)
        .stderr(stdio(&pty.slave)?);
    let user = Some(creds);
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The user's own terminal, as a login gives it (programs reopen it by name).
            libc::fchown(0, creds.uid, creds.gid);
            spawn::drop_into_sandbox_identity(tag, user)
        });
    }
    let (child, exit) = state
        .reaper
        .spawn_watched(|| command.spawn())
        .map_err(|e| AgentError::Spawn {
            exit_code: 127,
            message: format!("cannot start {:?}: {e}", argv[0]),
        })?;
    drop(pty.slave);
    // SAFETY: an OwnedFd is a valid open descriptor, and the AsyncFd owns it (and so
    // keeps it open, on the same file description) until it is dropped.
    let master = unsafe { AsyncFd::register(pty.master) }
        .map_err(|e| AgentError::Io(format!("cannot watch the terminal: {e}")))?;
    let terminal = Arc::new(Terminal {
        name: name.to_string(),
        incarnation: next_incarnation(),
        pid: child.id(),
        tag,
        ephemeral: spec.ephemeral,
        master,
        shared: Mutex::new(Shared {
            ring: VecDeque::new(),
            start: 0,
            cols,
            rows,
            subscribers: Vec::new(),
            viewers: 0,
            exited: None,
        }),
        input: tokio::sync::Mutex::new(()),
        next_subscriber: AtomicU64::new(1),
        created_at: super::files::rfc3339(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        ),
    });
    let (reader, waiter) = (terminal.clone(), terminal.clone());
    let state = state.clone();
    let drained = tokio::spawn(async move { reader.drain().await });
    tokio::spawn(async move {
        let status = exit.await.ok();
        // What the program left running goes with it; then the PTY closes and its last
        // output is read before anyone hears of the exit.
        spawn::kill_tree(waiter.pid, waiter.tag);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drained).await;
        waiter.finish(status);
        // Kept a little, for a recorder that attaches late (a short command's output).
        tokio::time::sleep(KEEP_ENDED).await;
        state.terminals.forget(&waiter);
    });
    Ok(terminal)
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl(2) on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Terminal {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the program has exited.
    pub fn ended(&self) -> bool {
        self.shared().exited.is_some()
    }

    /// An unnamed terminal whose last viewer left ends (call without the lock held).
    fn end_if_abandoned(&self, viewers_left: usize) {
        if self.ephemeral && viewers_left == 0 && !self.ended() {
            self.kill();
        }
    }

    pub fn info(&self) -> TerminalInfo {
        let s = self.shared();
        TerminalInfo {
            name: self.name.clone(),
            pid: self.pid,
            cols: s.cols,
            rows: s.rows,
            clients: s.viewers,
            offset: s.end(),
            created_at: self.created_at.clone(),
        }
    }

    /// Registers a subscriber: the hello, then what is kept from `offset` on (or all that
    /// is kept), then live output, with nothing lost or repeated between them.
    fn subscribe(self: &Arc<Self>, offset: Option<u64>, viewer: bool) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let mut s = self.shared();
        let from = offset.unwrap_or(s.start).clamp(s.start, s.end());
        let _ = tx.send(Out::Control(TermControl::Hello {
            session: self.name.clone(),
            cols: s.cols,
            rows: s.rows,
            offset: from,
            incarnation: self.incarnation.clone(),
        }));
        if let Some(asked) = offset.filter(|o| *o < s.start) {
            let _ = tx.send(Out::Control(TermControl::Dropped {
                bytes: s.start - asked,
            }));
        }
        let skip = (from - s.start) as usize;
        let (a, b) = s.ring.as_slices();
        let kept: Vec<u8> = if skip < a.len() {
            a[skip..].iter().chain(b).copied().collect()
        } else {
            b[skip - a.len()..].to_vec()
        };
        if !kept.is_empty() {
            queued.fetch_add(kept.len(), Ordering::Relaxed);
            let _ = tx.send(Out::Data(Bytes::from(kept)));
        }
        match s.exited {
            Some(code) => {
                let _ = tx.send(Out::Control(TermControl::Exit { exit_code: code }));
            }
            None => {
                if viewer {
                    s.viewers += 1;
                }
                s.subscribers.push(Subscriber {
                    id,
                    tx,
                    queued: queued.clone(),
                    viewer,
                });
            }
        }
        Subscription {
            terminal: self.clone(),
            id,
            rx,
            queued,
            viewer,
        }
    }

    fn unsubscribe(&self, id: u64, viewer: bool) {
        let mut s = self.shared();
        let before = s.subscribers.len();
        s.subscribers.retain(|sub| sub.id != id);
        if s.subscribers.len() < before && viewer {
            s.viewers -= 1;
            let left = s.viewers;
            drop(s);
            self.end_if_abandoned(left);
        }
    }

    /// Sets the PTY's size (the program gets SIGWINCH); subscribers hear of it.
    pub fn resize(&self, cols: u16, rows: u16) {
        let (cols, rows) = (clamp_size(cols), clamp_size(rows));
        let winsize = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ on our PTY master with a valid winsize.
        unsafe {
            libc::ioctl(
                self.master.get_ref().as_raw_fd(),
                libc::TIOCSWINSZ,
                &winsize,
            );
        }
        let mut s = self.shared();
        if (s.cols, s.rows) != (cols, rows) {
            s.cols = cols;
            s.rows = rows;
            for sub in &s.subscribers {
                let _ = sub
                    .tx
                    .send(Out::Control(TermControl::Resize { cols, rows }));
            }
        }
    }

    /// Writes client input to the PTY; waits (this client only) while the program is not
    /// reading it.
    pub async fn write_input(&self, mut data: &[u8]) -> io::Result<()> {
        let _one_at_a_time = self.input.lock().await;
        while !data.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| {
                // SAFETY: write(2) from a valid buffer to our PTY master.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Kills the program's whole tree; its exit is reported as usual.
    pub fn kill(&self) {
        spawn::kill_tree(self.pid, self.tag);
    }

    /// Reads the PTY until it closes, into the ring and to every subscriber. A PTY gives
    /// at most a few KiB a read, so reads continue while there is more (up to 64 KiB)
    /// and what they gathered is published as one chunk.
    async fn drain(self: Arc<Self>) {
        const GATHER: usize = 64 * 1024;
        let mut buf = vec![0u8; GATHER];
        loop {
            let mut guard = match self.master.readable().await {
                Ok(g) => g,
                Err(_) => return,
            };
            let mut filled = 0;
            let mut closed = false;
            while filled < GATHER {
                let read = guard.try_io(|fd| {
                    let rest = &mut buf[filled..];
                    // SAFETY: read(2) into the unfilled part of a buffer we own.
                    let n =
                        unsafe { libc::read(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                });
                match read {
                    Ok(Ok(0)) => {
                        closed = true;
                        break;
                    }
                    Ok(Ok(n)) => filled += n,
                    // EIO: every slave side is closed (the program and its children are gone).
                    Ok(Err(_)) => {
                        closed = true;
                        break;
                    }
                    Err(_would_block) => break,
                }
            }
            if filled > 0 {
                self.publish(&buf[..filled]);
            }
            if closed {
                return;
            }
        }
    }

    fn publish(&self, data: &[u8]) {
        let chunk = Bytes::copy_from_slice(data);
        let mut s = self.shared();
        s.ring.extend(data);
        let over = s.ring.len().saturating_sub(RING_BYTES);
        if over > 0 {
            s.ring.drain(..over);
            s.start += over as u64;
        }
        let mut evicted = Vec::new();
        for sub in &s.subscribers {
            let queued = sub.queued.load(Ordering::Relaxed);
            if queued + data.len() > SUBSCRIBER_BYTES {
                let _ = sub.tx.send(Out::Control(TermControl::Evicted {
                    reason: format!("the viewer fell {queued} bytes behind"),
                }));
                evicted.push((sub.id, sub.viewer));
                continue;
            }
            sub.queued.fetch_add(data.len(), Ordering::Relaxed);
            if sub.tx.send(Out::Data(chunk.clone())).is_err() {
                evicted.push((sub.id, sub.viewer));
            }
        }
        let evicted_viewer = evicted.iter().any(|(_, viewer)| *viewer);
        for (id, viewer) in evicted {
            s.subscribers.retain(|sub| sub.id != id);
            if viewer {
                s.viewers -= 1;
            }
        }
        let left = s.viewers;
        drop(s);
        if evicted_viewer {
            self.end_if_abandoned(left);
        }
    }

    /// The program exited: everyone hears it.
    fn finish(&self, status: Option<ExitStatus>) {
        let code = status.map(|s| match s {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(sig) => 128 + sig,
        });
        let mut s = self.shared();
        s.exited = Some(code);
        for sub in s.subscribers.drain(..) {
            let _ = sub
                .tx
                .send(Out::Control(TermControl::Exit { exit_code: code }));
        }
        s.viewers = 0;
    }
}
