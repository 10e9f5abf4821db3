//! Terminal recordings. The supervisor attaches to every terminal as a recorder (it sees
//! the output but is no viewer) and writes asciicast v2 to
//! `<data_dir>/recordings/<sandbox>/<session>.cast`, on the host, where the sandbox
//! cannot rewrite it; bounded in size. A `<session>.state` file beside it keeps the
//! output offset recorded so far, so a restarted supervisor resumes from there (the agent
//! keeps the last MiB), without repeating what it has.

use super::SandboxService;
use crate::domain::{SandboxId, SandboxState};
use berth_runtime::term::{Decoder, Frame, TermControl, UPGRADE_PROTOCOL};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Times a recorder attaches again after its stream broke while the terminal lived.
const RETRIES: usize = 5;

/// The recorders running now, by sandbox and session.
#[derive(Default)]
pub struct Recorders {
    running: Mutex<HashSet<(SandboxId, String)>>,
}

impl Recorders {
    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<(SandboxId, String)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a recording has reached (its `.state` file).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Progress {
    /// Output offset recorded up to.
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

impl Cast {
    fn open(dir: &std::path::Path, session: &str, limit: u64) -> std::io::Result<Cast> {
        std::fs::create_dir_all(dir)?;
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

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.progress.bytes += line.len() as u64 + 1;
        Ok(())
    }

    fn save(&self) {
        if let Ok(bytes) = serde_json::to_vec(&self.progress) {
            let _ = std::fs::write(&self.state_path, bytes);
        }
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
    /// Starts recording terminal `session` unless a recorder already runs for it.
    pub(super) fn ensure_recorder(self: &Arc<Self>, id: &SandboxId, session: &str) {
        let key = (id.clone(), session.to_string());
        if !self.recorders.running().insert(key.clone()) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.record(&key.0, &key.1).await {
                tracing::warn!(sandbox = %key.0, session = %key.1, error = %e, "terminal recording stopped");
            }
            this.recorders.running().remove(&key);
        });
    }

    async fn record(&self, id: &SandboxId, session: &str) -> std::io::Result<()> {
        let dir = self.recordings_dir(id);
        let limit = self.config.limits.max_recording_bytes;
        let mut cast = Cast::open(&dir, session, limit)?;
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
            "/terminals/{session}/attach?recorder=true&offset={}",
            cast.progress.offset
        );
        let mut io = match self
            .agent_client(id)
            .upgrade(&uri, UPGRADE_PROTOCOL, Duration::from_secs(10))
            .await
        {
            Ok(io) => io,
            Err(crate::agent::AgentError::Rejected { .. }) => return Ok(Ended::Done),
            Err(_) => return Ok(Ended::Broken),
        };
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match io.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(Ended::Broken),
                Ok(n) => n,
            };
            decoder.push(&buf[..n]);
            loop {
                let frame = match decoder.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(_) => return Ok(Ended::Broken),
                };
                match frame {
                    Frame::Data(bytes) => {
                        self.activity.touch(id);
                        cast.output(&bytes)?;
                        if cast.progress.full {
                            return Ok(Ended::Done);
                        }
                    }
                    Frame::Control(TermControl::Hello {
                        cols, rows, offset, ..
                    }) => {
                        cast.header(session, cols, rows)?;
                        cast.progress.offset = offset;
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
    }

    /// After a start: records the terminals that live on in running sandboxes.
    pub async fn resume_recorders(self: &Arc<Self>) {
        let Ok(running) = self
            .store
            .list_sandboxes(None, Some(SandboxState::Running))
            .await
        else {
            return;
        };
        for sandbox in running {
            let listed: Result<Vec<super::terminals::TerminalInfo>, _> = self
                .agent_client(&sandbox.id)
                .json(
                    hyper::Method::GET,
                    "/terminals",
                    None,
                    Duration::from_secs(5),
                    1024 * 1024,
                )
                .await;
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
    fn a_utf8_sequence_cut_at_the_end_is_held_back() {
        let check = "é✓🎉".as_bytes();
        assert_eq!(incomplete_tail(check), 0);
        assert_eq!(incomplete_tail(&check[..check.len() - 1]), 3);
        assert_eq!(incomplete_tail(&check[..1]), 1);
        assert_eq!(incomplete_tail(b"plain"), 0);
    }
}
