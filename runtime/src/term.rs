//! The terminal stream between the supervisor and the agent: after an HTTP upgrade on the
//! agent's socket, both sides send frames of `[kind: u8][length: u32 big-endian][payload]`.
//! Kind 1 carries terminal bytes (input one way, output the other); kind 2 carries one
//! [`TermControl`] as JSON. The same control messages reach WebSocket clients as text.

use serde::{Deserialize, Serialize};

/// Frame kind: raw terminal bytes.
pub const DATA: u8 = 1;
/// Frame kind: a JSON [`TermControl`].
pub const CONTROL: u8 = 2;
/// Largest payload a frame may carry; a longer one ends the stream.
pub const MAX_FRAME: usize = 1024 * 1024;
/// The `Upgrade` protocol name of an attach.
pub const UPGRADE_PROTOCOL: &str = "berth-terminal";
/// Bytes of output a terminal keeps for reattaching clients.
pub const RING_BYTES: usize = 1024 * 1024;
/// Terminal sizes are clamped to this range (columns and rows).
pub const MIN_SIZE: u16 = 2;
pub const MAX_SIZE: u16 = 1000;
/// Longest `cmd` a terminal may run.
pub const MAX_CMD: usize = 4096;

/// Control messages, both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TermControl {
    /// First message to a client: the session, its size, and the output offset of the
    /// first byte that follows.
    Hello {
        session: String,
        cols: u16,
        rows: u16,
        offset: u64,
        /// Which run of the session this is: a session name ended and started again gets
        /// a new one (and offsets start again at 0). Not sent to WebSocket clients.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        incarnation: String,
    },
    /// Client → terminal: a new size (clamped).
    Resize {
        cols: u16,
        rows: u16,
    },
    /// The program ended; the stream closes after this.
    Exit {
        exit_code: Option<i32>,
    },
    /// Output the client asked for (by `offset`) is no longer kept: `bytes` were lost.
    Dropped {
        bytes: u64,
    },
    /// This viewer fell too far behind and is being disconnected.
    Evicted {
        reason: String,
    },
    Error {
        message: String,
    },
}

/// A live terminal as the agent lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalInfo {
    pub name: String,
    pub pid: u32,
    pub cols: u16,
    pub rows: u16,
    /// Viewers attached now.
    pub clients: usize,
    /// Bytes of output so far.
    pub offset: u64,
    pub created_at: String,
}

/// Clamps a size to [`MIN_SIZE`]..=[`MAX_SIZE`].
pub fn clamp_size(n: u16) -> u16 {
    n.clamp(MIN_SIZE, MAX_SIZE)
}

/// A frame's header, for writing a payload after it without copying it.
pub fn header(kind: u8, len: usize) -> [u8; 5] {
    let n = (len as u32).to_be_bytes();
    [kind, n[0], n[1], n[2], n[3]]
}

/// One frame, encoded.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A control frame, encoded.
pub fn encode_control(control: &TermControl) -> Vec<u8> {
    encode(
        CONTROL,
        &serde_json::to_vec(control).expect("control messages serialize"),
    )
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data(Vec<u8>),
    Control(TermControl),
}

/// Why a stream of frames cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    TooLarge(usize),
    UnknownKind(u8),
    BadControl(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge(n) => write!(f, "a terminal frame of {n} bytes is too large"),
            FrameError::UnknownKind(k) => write!(f, "unknown terminal frame kind {k}"),
            FrameError::BadControl(e) => write!(f, "bad terminal control message: {e}"),
        }
    }
}

/// Collects bytes and yields whole frames. Consumed bytes are dropped once per push, not
/// once per frame, so a read holding many frames costs one move.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already returned as frames.
    at: usize,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let buf = &self.buf[self.at..];
        if buf.len() < 5 {
            return Ok(None);
        }
        let kind = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if buf.len() < 5 + len {
            return Ok(None);
        }
        let payload: Vec<u8> = buf[5..5 + len].to_vec();
        self.at += 5 + len;
        match kind {
            DATA => Ok(Some(Frame::Data(payload))),
            CONTROL => serde_json::from_slice(&payload)
                .map(|c| Some(Frame::Control(c)))
                .map_err(|e| FrameError::BadControl(e.to_string())),
            other => Err(FrameError::UnknownKind(other)),
        }
    }
}

/// Reads whole frames from a byte stream.
pub struct FrameReader<R> {
    reader: R,
    decoder: Decoder,
    buf: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R) -> Self {
        FrameReader {
            reader,
            decoder: Decoder::default(),
            buf: vec![0u8; 64 * 1024],
        }
    }

    /// The next frame; `Ok(None)` when the stream ended (or broke).
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            match self.reader.read(&mut self.buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => self.decoder.push(&self.buf[..n]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split_and_bad_ones_are_refused() {
        let mut bytes = encode(DATA, b"hello");
        bytes.extend(encode_control(&TermControl::Resize { cols: 80, rows: 24 }));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(3) {
            d.push(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            [
                Frame::Data(b"hello".to_vec()),
                Frame::Control(TermControl::Resize { cols: 80, rows: 24 })
            ]
        );
        let mut d = Decoder::default();
        d.push(&[9, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownKind(9)));
        let mut d = Decoder::default();
        d.push(&[1, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge(_))));
        assert_eq!(clamp_size(0), MIN_SIZE);
        assert_eq!(clamp_size(60000), MAX_SIZE);
    }
}
