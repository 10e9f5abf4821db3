//! Terminal recordings. The supervisor attaches to every terminal as a recorder (it sees
//! the output but is no viewer) and writes asciicast v2 to
//! `<data_dir>/recordings/<sandbox>/<session>.cast`, on the host, where the sandbox
//! cannot rewrite it; bounded per session and per sandbox. A `<session>.state` file beside
//! it keeps the run and output offset recorded so far, so a restarted supervisor resumes
//! from there (the agent keeps the last MiB) without repeating what it has; a session name
//! used again for a new run continues the same file after a marker.

use super::terminals::valid_session;
use super::SandboxService;
use crate::domain::{SandboxId, SandboxState};
use berth_runtime::term::{Frame, FrameReader, TermControl, UPGRADE_PROTOCOL};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Times a recorder attaches again after its stream broke while the terminal lived.
const RETRIES: usize = 5;
/// Recorders one sandbox may have (as many as it may have terminals).
const MAX_RECORDERS_PER_SANDBOX: usize = 32;

/// The recorders running now, by sandbox and session; they end with their server (a
/// server started after it on the same data dir records on where they left off, and two
/// recorders must never append to one file).
pub struct Recorders {
    running: Mutex<HashSet<(SandboxId, String)>>,
    /// Cancelled when the server shuts down.
    stop: tokio_util::sync::CancellationToken,
    /// How many run (what a shutdown waits to see at 0).
    live: tokio::sync::watch::Sender<usize>,
}

impl Default for Recorders {
    fn default() -> Self {
        Recorders {
            running: Mutex::default(),
            stop: tokio_util::sync::CancellationToken::new(),
            live: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Recorders {
    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<(SandboxId, String)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `key` (false when it runs already, or the sandbox has its most, or the
    /// server is stopping).
    fn start(&self, key: &(SandboxId, String)) -> bool {
        let mut running = self.running();
        let of_sandbox = running.iter().filter(|(s, _)| *s == key.0).count();
        if self.stop.is_cancelled()
            || of_sandbox >= MAX_RECORDERS_PER_SANDBOX
            || !running.insert(key.clone())
        {
            return false;
        }
        self.live.send_replace(running.len());
        true
    }

    fn end(&self, key: &(SandboxId, String)) {
        let mut running = self.running();
        running.remove(key);
        self.live.send_replace(running.len());
    }
}

/// What a recording has reached (its `.state` file).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    /// The terminal run recorded now (a session name can be used again).
    #[serde(default)]
    incarnation: String,
    /// Output offset recorded up to, in that run.
    offset: u64,
    /// When the recording began, Unix milliseconds.
    started_ms: u64,
    /// Bytes of the `.cast` file.
    bytes: u64,
    /// The size limit was reached; nothing more is written.
    full: bool,
}

/// How one attachment of a recorder ended.
enum Ended {
    /// The program exited, the limit was reached, or the terminal is gone.
    Done,
    /// The stream broke while the terminal may still run.
    Broken,
}

/// The file side of a recording.
struct Cast {
    file: std::fs::File,
    state_path: PathBuf,
    progress: Progress,
    limit: u64,
    /// Bytes of a UTF-8 sequence cut at the end of the last chunk.
    carry: Vec<u8>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Bytes of the recordings in `dir` other than `session`'s.
fn others_bytes(dir: &std::path::Path, session: &str) -> u64 {
    let own = format!("{session}.cast");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".cast") && n != own)
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

impl Cast {
    /// Opens (or continues) `session`'s recording; it may grow to `per_session` bytes and
    /// the sandbox's recordings together to `per_sandbox`.
    fn open(
        dir: &std::path::Path,
        session: &str,
        per_session: u64,
        per_sandbox: u64,
    ) -> std::io::Result<Cast> {
        std::fs::create_dir_all(dir)?;
        let limit = per_session.min(per_sandbox.saturating_sub(others_bytes(dir, session)));
        let state_path = dir.join(format!("{session}.state"));
        let progress = std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{session}.cast")))?;
        Ok(Cast {
            file,
            state_path,
            progress,
            limit,
            carry: Vec::new(),
        })
    }

    fn elapsed(&self) -> f64 {
        now_ms().saturating_sub(self.progress.started_ms) as f64 / 1000.0
    }

    /// One `write` per line (the file is opened to append), so a line is never split.
    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let mut whole = Vec::with_capacity(line.len() + 1);
        whole.extend_from_slice(line.as_bytes());
        whole.push(b'\n');
        self.file.write_all(&whole)?;
        self.progress.bytes += whole.len() as u64;
        Ok(())
    }

    fn save(&self) {
        if let Ok(bytes) = serde_json::to_vec(&self.progress) {
            let _ = std::fs::write(&self.state_path, bytes);
        }
    }

    /// A new run of the session begins at `offset` (0 for a fresh one).
    fn begin_run(&mut self, incarnation: &str, offset: u64) -> std::io::Result<()> {
        if self.progress.incarnation != incarnation {
            if !self.progress.incarnation.is_empty() {
                self.carry.clear();
                self.event("m", "the session was started again")?;
            }
            self.progress.incarnation = incarnation.to_string();
        }
        self.progress.offset = offset;
        self.save();
        Ok(())
    }

    /// The header, once per recording.
    fn header(&mut self, session: &str, cols: u16, rows: u16) -> std::io::Result<()> {
        if self.progress.started_ms != 0 {
            return Ok(());
        }
        self.progress.started_ms = now_ms();
        let header = serde_json::json!({"version": 2, "width": cols, "height": rows,
            "timestamp": self.progress.started_ms / 1000, "title": session,
            "env": {"TERM": "xterm-256color"}});
        self.write_line(&header.to_string())?;
        self.save();
        Ok(())
    }

    fn event(&mut self, kind: &str, text: &str) -> std::io::Result<()> {
        let line =
            serde_json::json!([(self.elapsed() * 1e6).round() / 1e6, kind, text]).to_string();
        if self.progress.bytes + line.len() as u64 + 1 > self.limit {
            let marker = serde_json::json!([
                self.elapsed(),
                "m",
                format!(
                    "recording stopped at its size limit of {} bytes",
                    self.limit
                )
            ])
            .to_string();
            self.write_line(&marker)?;
            self.progress.full = true;
            self.save();
            return Ok(());
        }
        self.write_line(&line)
    }

    /// Output: recorded as text, a UTF-8 sequence cut between chunks kept for the next.
    fn output(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.progress.offset += bytes.len() as u64;
        let mut all = std::mem::take(&mut self.carry);
        all.extend_from_slice(bytes);
        let cut = incomplete_tail(&all);
        self.carry = all.split_off(all.len() - cut);
        let text = String::from_utf8_lossy(&all).into_owned();
        if !text.is_empty() {
            self.event("o", &text)?;
        }
        // After every event: a restart then repeats nothing. Output under load comes in
        // large chunks (the agent coalesces), so this is a small write per 512 KiB.
        self.save();
        Ok(())
    }
}

/// How many bytes at the end of `bytes` begin a UTF-8 sequence that is not complete.
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

impl SandboxService {
    /// Starts recording terminal `session` unless a recorder already runs for it. The
    /// name may come from the (untrusted) agent: one that is not a valid session name is
    /// never recorded (it would name a file), nor more than a sandbox may have.
    pub(super) fn ensure_recorder(self: &Arc<Self>, id: &SandboxId, session: &str) {
        if !valid_session(session) {
            tracing::warn!(sandbox = %id, "the agent listed a terminal with an invalid name");
            return;
        }
        let key = (id.clone(), session.to_string());
        if !self.recorders.start(&key) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            // Cancelled only at an await: each event is written and its progress saved
            // whole before the recorder can stop.
            let recorded = tokio::select! {
                biased;
                _ = this.recorders.stop.cancelled() => Ok(()),
                recorded = this.record(&key.0, &key.1) => recorded,
            };
            if let Err(e) = recorded {
                tracing::warn!(sandbox = %key.0, session = %key.1, error = %e, "terminal recording stopped");
            }
            this.recorders.end(&key);
        });
    }

    /// How many terminals are being recorded now.
    pub fn recorders_running(&self) -> usize {
        *self.recorders.live.borrow()
    }

    /// Ends every recorder (at shutdown) and waits until none runs, at most `grace`.
    pub async fn stop_recorders(&self, grace: Duration) {
        self.recorders.stop.cancel();
        let mut live = self.recorders.live.subscribe();
        let _ = tokio::time::timeout(grace, live.wait_for(|n| *n == 0)).await;
    }

    async fn record(&self, id: &SandboxId, session: &str) -> std::io::Result<()> {
        let dir = self.recordings_dir(id);
        let limits = &self.config.limits;
        let mut cast = Cast::open(
            &dir,
            session,
            limits.max_recording_bytes,
            limits.max_recordings_bytes_per_sandbox,
        )?;
        for _ in 0..=RETRIES {
            if cast.progress.full {
                return Ok(());
            }
            match self.record_once(id, session, &mut cast).await? {
                Ended::Done => return Ok(()),
                Ended::Broken => {
                    let running = matches!(self.store.get_sandbox(id).await,
                        Ok(Some(s)) if s.state == SandboxState::Running);
                    if !running {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Ok(())
    }

    async fn record_once(
        &self,
        id: &SandboxId,
        session: &str,
        cast: &mut Cast,
    ) -> std::io::Result<Ended> {
        let uri = format!(
            "/terminals/{session}/attach?recorder=true&offset={}&incarnation={}",
            cast.progress.offset, cast.progress.incarnation
        );
        let io = match self
            .agent_client(id)
            .upgrade(&uri, UPGRADE_PROTOCOL, Duration::from_secs(10))
            .await
        {
            Ok(io) => io,
            Err(crate::agent::AgentError::Rejected { .. }) => return Ok(Ended::Done),
            Err(_) => return Ok(Ended::Broken),
        };
        let mut frames = FrameReader::new(io);
        loop {
            let frame = match frames.next().await {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(_) => {
                    cast.save();
                    return Ok(Ended::Broken);
                }
            };
            match frame {
                Frame::Data(bytes) => {
                    // Output is activity even with nobody attached, like a running
                    // background process; the lifetime still ends the sandbox.
                    self.activity.touch(id);
                    cast.output(&bytes)?;
                    if cast.progress.full {
                        return Ok(Ended::Done);
                    }
                }
                Frame::Control(TermControl::Hello {
                    cols,
                    rows,
                    offset,
                    incarnation,
                    ..
                }) => {
                    cast.header(session, cols, rows)?;
                    cast.begin_run(&incarnation, offset)?;
                }
                Frame::Control(TermControl::Resize { cols, rows }) => {
                    cast.event("r", &format!("{cols}x{rows}"))?;
                }
                Frame::Control(TermControl::Dropped { bytes }) => {
                    cast.event("m", &format!("{bytes} bytes of output were not recorded"))?;
                }
                Frame::Control(TermControl::Exit { .. }) => {
                    cast.save();
                    return Ok(Ended::Done);
                }
                Frame::Control(_) => {}
            }
        }
    }

    /// After a start: records the terminals that live on in running sandboxes.
    pub async fn resume_recorders(self: &Arc<Self>) {
        let Ok(running) = self.local_sandboxes(Some(SandboxState::Running)).await else {
            return;
        };
        for sandbox in running {
            let listed = self.agent_terminals(&sandbox.id).await;
            for terminal in listed.unwrap_or_default() {
                self.ensure_recorder(&sandbox.id, &terminal.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::incomplete_tail;

    #[test]
    fn a_recording_stops_at_its_share_of_the_sandboxs_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.cast"), vec![b'x'; 900]).unwrap();
        let mut cast = super::Cast::open(dir.path(), "new", 10_000, 1_000).unwrap();
        assert_eq!(cast.limit, 100, "what the other recordings leave");
        cast.header("new", 80, 24).unwrap();
        cast.output(&vec![b'y'; 500]).unwrap();
        assert!(cast.progress.full);
        let text = std::fs::read_to_string(dir.path().join("new.cast")).unwrap();
        assert!(text.contains("size limit"), "{text}");
        assert!(!text.contains("yyyy"), "{text}");
    }

    #[test]
    fn a_utf8_sequence_cut_at_the_end_is_held_back() {
        let check = "é✓🎉".as_bytes();
        assert_eq!(incomplete_tail(check), 0);
        assert_eq!(incomplete_tail(&check[..check.len() - 1]), 3);
        assert_eq!(incomplete_tail(&check[..1]), 1);
        assert_eq!(incomplete_tail(b"plain"), 0);
    }
}
