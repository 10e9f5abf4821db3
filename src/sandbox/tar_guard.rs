//! A guard in front of the tar crate when the supervisor itself reads a snapshot (replay
//! reads): it follows the tar's headers as the bytes pass and refuses what would make
//! the tar crate hold something large in memory or lose track of the stream, so a
//! hostile snapshot (its tar came from inside a sandbox) cannot exhaust the host:
//! GNU long names and links above [`MAX_META`], PAX headers, and GNU sparse entries
//! (none of which berth's agent writes).

use std::io::{self, Read};

/// Largest GNU long name or long link name accepted.
pub const MAX_META: u64 = 64 * 1024;
const BLOCK: u64 = 512;

/// A reader of a tar stream that checks each header as it goes by.
pub struct TarGuard<R> {
    inner: R,
    /// Stream position of the next byte read.
    pos: u64,
    /// Where the next header starts.
    next_header: u64,
    header: Vec<u8>,
    /// The end-of-archive block was seen: nothing more is checked.
    done: bool,
}

impl<R> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            pos: 0,
            next_header: 0,
            header: Vec::with_capacity(BLOCK as usize),
            done: false,
        }
    }

    fn inspect(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() && !self.done {
            if self.pos < self.next_header {
                let skip = (self.next_header - self.pos).min(data.len() as u64) as usize;
                self.pos += skip as u64;
                data = &data[skip..];
                continue;
            }
            let take = (BLOCK as usize - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            self.pos += take as u64;
            data = &data[take..];
            if self.header.len() == BLOCK as usize {
                let header = std::mem::take(&mut self.header);
                match check(&header)? {
                    None => self.done = true,
                    Some(size) => {
                        self.next_header += BLOCK + size.div_ceil(BLOCK) * BLOCK;
                    }
                }
            }
        }
        self.pos += data.len() as u64;
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.inspect(&buf[..n])?;
        Ok(n)
    }
}

fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// The size of the data that follows `header`; `None` for the end-of-archive block.
fn check(header: &[u8]) -> io::Result<Option<u64>> {
    if header.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    let size = parse_size(&header[124..136])
        .ok_or_else(|| refused("a tar header with an unreadable size".into()))?;
    match header[156] {
        b'L' | b'K' if size > MAX_META => Err(refused(format!(
            "a tar entry with a {size}-byte long name (at most {MAX_META})"
        ))),
        b'x' | b'g' => Err(refused("PAX headers are not supported in snapshots".into())),
        b'S' => Err(refused(
            "sparse entries are not supported in snapshots".into(),
        )),
        _ => Ok(Some(size)),
    }
}

/// A tar size field: octal text, or GNU base-256 (high bit set).
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = (field[0] & 0x7f) as u64;
        for b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(*b as u64)?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(out: &mut Vec<u8>, name: &str, kind: u8, data: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::new(kind));
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn read_all(tar: Vec<u8>) -> io::Result<usize> {
        let mut archive = tar::Archive::new(TarGuard::new(io::Cursor::new(tar)));
        let mut n = 0;
        for e in archive.entries()? {
            let mut e = e?;
            io::copy(&mut e, &mut io::sink())?;
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn plain_tars_pass_and_memory_bombs_are_refused() {
        let mut ok = Vec::new();
        entry(&mut ok, "a.txt", b'0', &[7u8; 1000]);
        entry(&mut ok, "d", b'5', b"");
        entry(&mut ok, "././@LongLink", b'L', &[b'n'; 300]);
        entry(&mut ok, "x", b'0', b"long-named");
        ok.extend_from_slice(&[0u8; 1024]);
        assert_eq!(read_all(ok).unwrap(), 3);

        for (kind, size) in [(b'L', MAX_META as usize + 1), (b'x', 10), (b'S', 10)] {
            let mut bad = Vec::new();
            entry(&mut bad, "a.txt", b'0', b"fine");
            entry(&mut bad, "././@LongLink", kind, &vec![b'n'; size]);
            entry(&mut bad, "b.txt", b'0', b"never");
            bad.extend_from_slice(&[0u8; 1024]);
            let err = read_all(bad).unwrap_err();
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidData,
                "{}: {err}",
                kind as char
            );
        }
    }

    #[test]
    fn sizes_in_octal_and_base_256() {
        assert_eq!(parse_size(b"00000001750\0"), Some(1000));
        assert_eq!(parse_size(b"\0\0\0\0\0\0\0\0\0\0\0\0"), Some(0));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 1;
        big[10] = 2;
        assert_eq!(parse_size(&big), Some(513));
        assert_eq!(parse_size(b"zz\0\0\0\0\0\0\0\0\0\0"), None);
    }
}
