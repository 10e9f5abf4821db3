//! A blocking `Write` that hands 64 KiB chunks to an async receiver, blocking the writer
//! while the receiver is slow (back-pressure down to whatever produces the bytes). The tar
//! builder and the streamed JSON serializer both write through it.

use bytes::Bytes;
use std::io::{self, Write};
use tokio::sync::mpsc;

const CHUNK: usize = 64 * 1024;

/// What the receiving end gets: chunks, or the error that ended the stream.
pub type ChunkSender = mpsc::Sender<Result<Bytes, io::Error>>;

pub struct ChunkWriter {
    tx: ChunkSender,
    buf: Vec<u8>,
}

impl ChunkWriter {
    pub fn new(tx: ChunkSender) -> Self {
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
