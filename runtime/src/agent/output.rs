//! Output handling: reading a pipe under a byte cap — the first half of the cap is passed
//! on as it comes, the last half is kept in a ring until the end, and everything between
//! is drained and dropped, never buffered — and cutting byte chunks into lossless UTF-8
//! pieces.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

const CHUNK: usize = 64 * 1024;
/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A piece of output on its way to a client.
#[derive(Debug)]
pub enum Chunk {
    Data(Stream, Vec<u8>),
    /// At the end of a capped stream: how many bytes were cut between head and tail,
    /// then the tail itself.
    Tail(Stream, u64, Vec<u8>),
}

/// How a cap of `cap` bytes is split: the head streams, the tail waits for the end.
pub fn head_budget(cap: u64) -> u64 {
    cap - cap / 2
}

/// Reads `pipe` to EOF, or until `stop` turns true and what the pipe already holds is
/// read. Passes on the first [`head_budget`] bytes as chunks, keeps the last `cap - head`
/// bytes in a ring and sends them (with the count of bytes cut) at the end, stopped or
/// not; drains the rest. Returns the number of bytes cut.
pub async fn pump(
    mut pipe: pipe::Receiver,
    stream: Stream,
    cap: u64,
    tx: mpsc::Sender<Chunk>,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let mut buf = vec![0u8; CHUNK];
    let head = head_budget(cap);
    let tail_cap = usize::try_from(cap - head).unwrap_or(usize::MAX);
    let mut sent: u64 = 0;
    let mut tail: VecDeque<u8> = VecDeque::new();
    let mut cut: u64 = 0;
    let mut capped = false;
    let mut receiver_alive = true;
    // Once stopped: the bytes the pipe held then, still to take (never what a writer
    // that keeps going adds later).
    let mut after_stop: Option<usize> = None;
    loop {
        let read = match after_stop {
            None => tokio::select! {
                // Stop first: a writer that never pauses must not keep the pump reading.
                biased;
                // A stop that is never sent (its sender gone) leaves the pump to EOF.
                _ = told_to_stop(&mut stop) => {
                    after_stop = Some(bytes_held(&pipe));
                    continue;
                }
                read = pipe.read(&mut buf) => read,
            },
            Some(0) => break,
            Some(left) => {
                let want = buf.len().min(left);
                // The pipe's own non-blocking read, not tokio's `try_read`: that one
                // answers from readiness the reactor may not have seen yet.
                let read = loop {
                    match nix::unistd::read(pipe.as_raw_fd(), &mut buf[..want]) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        other => break other.map_err(std::io::Error::from),
                    }
                };
                if let Ok(n) = read {
                    after_stop = Some(left - n);
                }
                read
            }
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let keep = n.min(head.saturating_sub(sent) as usize);
        if keep > 0 && receiver_alive {
            sent += keep as u64;
            receiver_alive = tx
                .send(Chunk::Data(stream, buf[..keep].to_vec()))
                .await
                .is_ok();
        }
        if keep < n {
            capped = true;
            tail.extend(&buf[keep..n]);
            if tail.len() > tail_cap {
                let excess = tail.len() - tail_cap;
                tail.drain(..excess);
                cut += excess as u64;
            }
        }
    }
    if capped && receiver_alive {
        let _ = tx.send(Chunk::Tail(stream, cut, Vec::from(tail))).await;
    }
    cut
}

/// The bytes waiting in `pipe` now (`FIONREAD`); 0 if it cannot say.
fn bytes_held(pipe: &pipe::Receiver) -> usize {
    let mut held: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a valid pointer; the fd is the pipe's own.
    let ok = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut held) } == 0;
    if ok {
        usize::try_from(held).unwrap_or(0)
    } else {
        0
    }
}

/// Resolves once `stop` turns true; never when its sender is gone without saying so.
async fn told_to_stop(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The line put where output was cut, in text and in base64 alike.
pub fn cut_marker(stream: Stream, cut: u64) -> String {
    let name = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    };
    format!("\n[berth: {cut} bytes of {name} cut here; raise max_output_bytes to keep more]\n")
}

/// Splits a byte stream into UTF-8 text without breaking a multi-byte character across
/// chunks; invalid bytes become U+FFFD.
#[derive(Default)]
pub struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let cut = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self
                .pending
                .len()
                .saturating_sub(incomplete_tail(&self.pending)),
        };
        let rest = self.pending.split_off(cut);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Length of a trailing, possibly incomplete UTF-8 sequence (0..=3 bytes).
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        if b & 0b1100_0000 == 0b1100_0000 {
            let need = if b >= 0xF0 {
                4
            } else if b >= 0xE0 {
                3
            } else {
                2
            };
            return if need > back { back } else { 0 };
        }
        if b & 0b1100_0000 != 0b1000_0000 {
            return 0;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_chunks_is_kept_whole() {
        let mut carry = Utf8Carry::default();
        let euro = "€".as_bytes();
        assert_eq!(carry.push(&euro[..1]), "");
        assert_eq!(carry.push(&euro[1..]), "€");
        assert_eq!(carry.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut carry = Utf8Carry::default();
        assert_eq!(carry.push(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn an_invalid_byte_before_a_split_character_keeps_the_tail() {
        let mut carry = Utf8Carry::default();
        let mut bytes = b"\xff".to_vec();
        bytes.extend_from_slice(&"€".as_bytes()[..2]);
        assert_eq!(carry.push(&bytes), "\u{fffd}");
        assert_eq!(carry.push(&"€".as_bytes()[2..]), "€");
    }

    /// Runs `pump` on `reader` already told to stop, and gathers what it sends.
    async fn stopped_pump(reader: pipe::Receiver, cap: u64) -> (Vec<u8>, u64, Vec<u8>) {
        let (tx, mut rx) = mpsc::channel(32);
        let (_stop, stopped) = watch::channel(true);
        let run = tokio::spawn(pump(reader, Stream::Stdout, cap, tx, stopped));
        let (mut head, mut cut, mut tail) = (Vec::new(), 0, Vec::new());
        let gather = async {
            while let Some(chunk) = rx.recv().await {
                match chunk {
                    Chunk::Data(_, bytes) => head.extend(bytes),
                    Chunk::Tail(_, n, bytes) => (cut, tail) = (n, bytes),
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), gather)
            .await
            .expect("a stopped pump ends although its pipe stays open");
        run.await.unwrap();
        (head, cut, tail)
    }

    #[tokio::test]
    async fn a_stopped_pump_still_sends_what_its_pipe_holds_head_and_tail() {
        use tokio::io::AsyncWriteExt;
        let (mut writer, reader) = pipe::pipe().unwrap();
        let bytes: Vec<u8> = (0..40 * 1024).map(|i| (i % 251) as u8).collect();
        writer.write_all(&bytes).await.unwrap();
        // The writer stays open, as a leftover of the tree holding the pipe would.
        let (head, cut, tail) = stopped_pump(reader, 16 * 1024).await;
        assert!(head == bytes[..8 * 1024], "head of {} bytes", head.len());
        assert_eq!(cut, 24 * 1024);
        assert!(tail == bytes[32 * 1024..], "tail of {} bytes", tail.len());
        drop(writer);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_never_pauses_cannot_keep_a_stopped_pump_reading() {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        let reader = pipe::Receiver::from_owned_fd(reader).unwrap();
        let mut writer = std::fs::File::from(writer);
        let block = vec![b'y'; CHUNK];
        std::io::Write::write_all(&mut writer, &block[..2000]).unwrap();
        // A thread that writes as long as the pipe is open, blocking when it is full.
        let writing = std::thread::spawn(move || {
            let mut wrote = 2000u64;
            while std::io::Write::write_all(&mut writer, &block).is_ok() {
                wrote += CHUNK as u64;
            }
            wrote
        });
        let (head, cut, tail) = stopped_pump(reader, 1024).await;
        assert_eq!((head.len(), tail.len()), (512, 512));
        // What the pipe held when the pump was told to stop: at most its 64 KiB buffer.
        assert!(cut <= CHUNK as u64, "{cut}");
        // The pump closed the pipe as it ended, which ended the writer.
        assert!(writing.join().unwrap() >= 2000);
    }
}
