//! Tar archives of sandbox trees, built and extracted here inside the container (never
//! on the host); symlinks are stored as links, not followed.

use super::error::AgentError;
use bytes::Bytes;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// A `Write` that hands 64 KiB chunks to an async receiver (blocking the writer when the
/// receiver is slow: back-pressure down to the disk reads).
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

/// Streams a tar of `root` (a directory's content, or one file) into the returned channel.
pub fn create(root: PathBuf) -> Result<mpsc::Receiver<Result<Bytes, io::Error>>, AgentError> {
    let meta = std::fs::symlink_metadata(&root).map_err(|e| AgentError::from_io(&root, e))?;
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(64 * 1024),
        };
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        let result = if meta.is_dir() {
            builder.append_dir_all(".", &root)
        } else {
            let name = root
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("file"));
            builder.append_path_with_name(&root, name)
        };
        let result = result
            .and_then(|_| builder.into_inner())
            .and_then(|mut w| w.flush());
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Ok(rx)
}

/// Extracts a tar read from `reader` into `dest` (created if missing). Entries that would
/// land outside `dest` (`..`, absolute names, through planted symlinks) are refused by
/// the tar crate's `unpack_in`.
pub fn extract(reader: impl io::Read, dest: &Path) -> Result<u64, AgentError> {
    std::fs::create_dir_all(dest).map_err(|e| AgentError::from_io(dest, e))?;
    let mut counted = CountingReader {
        inner: reader,
        read: 0,
    };
    let count = unpack_all(&mut counted, dest)?;
    // An archive with no entries is two zero blocks; anything shorter is not a tar.
    if count == 0 && counted.read > 0 && counted.read < 1024 {
        return Err(AgentError::BadRequest("not a tar archive".into()));
    }
    Ok(count)
}

struct CountingReader<R> {
    inner: R,
    read: u64,
}

impl<R: io::Read> io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

fn unpack_all(reader: impl io::Read, dest: &Path) -> Result<u64, AgentError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    let mut count = 0;
    let entries = archive
        .entries()
        .map_err(|e| AgentError::BadRequest(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| AgentError::BadRequest(format!("bad tar entry: {e}")))?;
        let unpacked = entry.unpack_in(dest).map_err(|e| match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                AgentError::TooLarge(format!("no space left in the sandbox: {e}"))
            }
            _ => AgentError::BadRequest(format!("cannot extract tar entry: {e}")),
        })?;
        if unpacked {
            count += 1;
        }
    }
    Ok(count)
}
