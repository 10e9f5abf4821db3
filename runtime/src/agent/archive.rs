//! Tar archives of sandbox trees, built and extracted here inside the container (never
//! on the host); symlinks are stored as links, not followed.

use super::chunks::ChunkWriter;
use super::error::AgentError;
use bytes::Bytes;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Streams a tar of `root` (a directory's content, or one file) into the returned channel.
pub fn create(root: PathBuf) -> Result<mpsc::Receiver<Result<Bytes, io::Error>>, AgentError> {
    let meta = std::fs::symlink_metadata(&root).map_err(|e| AgentError::from_io(&root, e))?;
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let writer = ChunkWriter::new(tx.clone());
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

/// Bytes of an upload still read after it failed, before answering.
const DRAIN_ON_ERROR: u64 = 64 * 1024 * 1024;

/// Largest error message taken from the tar or gzip decoder (they may quote entry names).
const MAX_MESSAGE_CHARS: usize = 300;

/// Extracts a tar (or a gzip-compressed tar) read from `reader` into `dest`, all or
/// nothing: the archive is unpacked into a hidden staging directory beside the
/// destination and its entries are moved into `dest` (created then) only once the whole
/// archive unpacked. On any error (a bad archive, a full disk, the upload cut off) the
/// staging directory is removed and `dest` is left as it was.
///
/// Entries that would land outside the staging directory (`..`, absolute names,
/// through symlinks the archive itself planted) are refused by the tar crate's
/// `unpack_in`; moving them into `dest` never follows a symlink found there.
pub fn extract(reader: impl io::Read, dest: &Path) -> Result<u64, AgentError> {
    let mut source = Source {
        inner: reader,
        failed: None,
    };
    let head = read_head(&mut source, 512).map_err(|e| source.explain(e))?;
    let format = sniff(&head)?;
    let (stage_in, dest) = resolve_dest(dest)?;
    let mut staging = Staging::create(&stage_in)?;
    let unpacked = {
        let stream = io::Cursor::new(head).chain(&mut source);
        match format {
            Format::Tar => unpack_all(stream, &staging.path, None),
            Format::Gzip => unpack_all(
                flate2::read::MultiGzDecoder::new(stream),
                &staging.path,
                Some("gzip"),
            ),
        }
    };
    let count = match unpacked {
        Ok(count) => count,
        Err(e) => {
            let e = source.explain_agent(e);
            // Read on a little, so the sender (still writing) gets this answer rather
            // than a connection closed under it.
            let _ = io::copy(&mut (&mut source).take(DRAIN_ON_ERROR), &mut io::sink());
            return Err(e);
        }
    };
    // The body is read to its end before anything is committed: what follows the tar's
    // end (padding) may still fail, as a restore's stream does when the snapshot's
    // checksum, checked at its end, does not match.
    io::copy(&mut source, &mut io::sink()).map_err(|e| source.explain(e))?;
    // What an upload or a restore brings belongs to the sandbox user, whatever the tar
    // says (ownerships in it are never applied). The staging dir itself stays root's
    // (0700) until it is committed, so user code cannot reach into it meanwhile.
    super::identity::own_tree_below(&staging.path);
    let existed = std::fs::symlink_metadata(&dest).is_ok();
    staging.commit(&dest)?;
    if !existed {
        super::identity::own(&dest);
    }
    Ok(count)
}

/// What the first bytes of an upload say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Tar,
    Gzip,
}

/// Formats recognised by their magic bytes and refused by name.
const UNSUPPORTED: &[(&[u8], &str)] = &[
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "a zip archive"),
    (b"PK\x07\x08", "a zip archive"),
    (b"\xFD7zXZ\x00", "xz-compressed"),
    (b"BZh", "bzip2-compressed"),
    (b"\x28\xB5\x2F\xFD", "zstd-compressed"),
    (b"7z\xBC\xAF\x27\x1C", "a 7z archive"),
    (b"Rar!\x1A\x07", "a rar archive"),
    (b"\x04\x22\x4D\x18", "lz4-compressed"),
];

fn sniff(head: &[u8]) -> Result<Format, AgentError> {
    // A ustar header says so at offset 257, whatever its file name starts with.
    if head.get(257..262) == Some(b"ustar".as_slice()) {
        return Ok(Format::Tar);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Format::Gzip);
    }
    if let Some((_, what)) = UNSUPPORTED
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
    {
        return Err(AgentError::BadRequest(format!(
            "the upload is {what}, which is not supported: send a tar archive or a gzip-compressed tar (.tar.gz); nothing was written"
        )));
    }
    Ok(Format::Tar)
}

/// Reads up to `n` bytes (fewer only at the end of the stream).
fn read_head(reader: &mut impl io::Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    reader.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// The request body, remembering whether reading it failed (the client or the
/// supervisor cut the upload) so that the error names the cause, not a tar symptom.
struct Source<R> {
    inner: R,
    failed: Option<String>,
}

impl<R: io::Read> io::Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                self.failed = Some(e.to_string());
                Err(e)
            }
            other => other,
        }
    }
}

impl<R> Source<R> {
    fn interrupted(&self) -> Option<AgentError> {
        self.failed.as_ref().map(|cause| {
            AgentError::BadRequest(format!(
                "upload interrupted: {}; nothing was written",
                plain(cause)
            ))
        })
    }

    fn explain(&self, err: io::Error) -> AgentError {
        self.interrupted().unwrap_or_else(|| {
            AgentError::BadRequest(format!(
                "cannot read the upload: {}",
                plain(&err.to_string())
            ))
        })
    }

    fn explain_agent(&self, err: AgentError) -> AgentError {
        self.interrupted().unwrap_or(err)
    }
}

/// `dest` made concrete: the longest existing prefix resolved (symlinks followed, as
/// extraction would), the missing rest appended lexically. Returns the nearest existing
/// directory (where staging happens: the same filesystem as the new entries) and the
/// destination.
fn resolve_dest(dest: &Path) -> Result<(PathBuf, PathBuf), AgentError> {
    use std::path::Component;
    let parts: Vec<Component> = dest.components().collect();
    let mut found = None;
    for i in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..i].iter().collect();
        match std::fs::canonicalize(&prefix) {
            Ok(real) => {
                found = Some((real, i));
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(AgentError::from_io(dest, e)),
        }
    }
    let (mut target, used) = found.ok_or_else(|| {
        AgentError::NotFound(format!("{}: no such file or directory", dest.display()))
    })?;
    for part in &parts[used..] {
        match part {
            Component::ParentDir => {
                target.pop();
            }
            Component::Normal(name) => target.push(name),
            _ => {}
        }
    }
    let mut stage_in = target.clone();
    loop {
        match std::fs::symlink_metadata(&stage_in) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(AgentError::BadRequest(format!(
                    "{} exists and is not a directory",
                    stage_in.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && stage_in.pop() => continue,
            Err(e) => return Err(AgentError::from_io(&stage_in, e)),
        }
    }
    Ok((stage_in, target))
}

/// A hidden directory the archive is unpacked into; removed unless committed.
struct Staging {
    path: PathBuf,
    committed: bool,
}

impl Staging {
    fn create(parent: &Path) -> Result<Staging, AgentError> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!(
            ".berth-upload-{}-{}-{nanos:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| AgentError::from_io(parent, e))?;
        Ok(Staging {
            path,
            committed: false,
        })
    }

    /// Moves the unpacked tree into `dest`: renamed into place whole when `dest` does
    /// not exist, merged into it (directories merged, files and symlinks replaced, like
    /// `tar -x`) when it does.
    fn commit(&mut self, dest: &Path) -> Result<(), AgentError> {
        use std::os::unix::fs::PermissionsExt;
        let moved = |e: io::Error| AgentError::from_io(dest, e);
        match std::fs::symlink_metadata(dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = dest.parent() {
                    super::identity::create_dirs_owned(parent)
                        .map_err(|e| AgentError::from_io(parent, e))?;
                }
                std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755))
                    .map_err(moved)?;
                match std::fs::rename(&self.path, dest) {
                    Ok(()) => {
                        self.committed = true;
                        return Ok(());
                    }
                    // Created meanwhile by someone else: merge into it below.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
                        ) => {}
                    Err(e) => return Err(moved(e)),
                }
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(AgentError::BadRequest(format!(
                    "{} exists and is not a directory",
                    dest.display()
                )))
            }
            Err(e) => return Err(AgentError::from_io(dest, e)),
        }
        check_merge(&self.path, dest, &self.path)?;
        merge(&self.path, dest, &self.path).map_err(moved)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Refuses, before anything moves, an archive whose non-directory entry would replace a
/// directory in `dst` (`tar -x` refuses that too).
fn check_merge(src: &Path, dst: &Path, staging: &Path) -> Result<(), AgentError> {
    for entry in std::fs::read_dir(src).map_err(|e| AgentError::from_io(src, e))? {
        let entry = entry.map_err(|e| AgentError::from_io(src, e))?;
        let target = dst.join(entry.file_name());
        if target == staging {
            continue;
        }
        let Ok(existing) = std::fs::symlink_metadata(&target) else {
            continue;
        };
        if !existing.is_dir() {
            continue;
        }
        let is_dir = entry
            .file_type()
            .map_err(|e| AgentError::from_io(&entry.path(), e))?
            .is_dir();
        if is_dir {
            check_merge(&entry.path(), &target, staging)?;
        } else {
            return Err(AgentError::Conflict(format!(
                "{} is a directory, and the archive has a file there; nothing was written",
                target.display()
            )));
        }
    }
    Ok(())
}

/// Moves every entry of `src` into `dst`, never following a symlink found in `dst`.
fn merge(src: &Path, dst: &Path, staging: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let target = dst.join(entry.file_name());
        if target == staging {
            continue;
        }
        let meta = std::fs::symlink_metadata(&from)?;
        match std::fs::symlink_metadata(&target) {
            Ok(existing) if existing.is_dir() && meta.is_dir() => {
                // Like `tar -x --no-overwrite-dir`: an existing directory keeps its mode.
                merge(&from, &target, staging)?;
            }
            Ok(existing) if meta.is_dir() && !existing.is_dir() => {
                // A file or a symlink where the archive has a directory: replace it.
                std::fs::remove_file(&target)?;
                move_entry(&from, &target)?;
            }
            _ => move_entry(&from, &target)?,
        }
    }
    Ok(())
}

/// Renames `from` to `to` (replacing a file or symlink there); copies across a mount.
fn move_entry(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let name = to.file_name().unwrap_or_default().to_string_lossy();
            let temp = to.with_file_name(format!(".{name}.berth-move-{}", std::process::id()));
            let copied = copy_tree(from, &temp).and_then(|_| std::fs::rename(&temp, to));
            if copied.is_err() {
                let _ = std::fs::remove_dir_all(&temp).or_else(|_| std::fs::remove_file(&temp));
            }
            copied
        }
        other => other,
    }
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)
    } else if kind.is_dir() {
        std::fs::create_dir(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        std::fs::set_permissions(to, meta.permissions())
    } else if kind.is_file() {
        std::fs::copy(from, to).map(|_| ())
    } else {
        Ok(())
    }
}

/// An error text fit for a JSON message: control characters escaped, length bounded
/// (decoders may quote bytes of the upload).
fn plain(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i >= MAX_MESSAGE_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() || c == char::REPLACEMENT_CHARACTER {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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

/// Unpacks every entry into `dest`; `compression` names the decoder for messages.
fn unpack_all(
    reader: impl io::Read,
    dest: &Path,
    compression: Option<&str>,
) -> Result<u64, AgentError> {
    let not_tar = |detail: &str| {
        let what = match compression {
            Some(c) => format!("not a {c}-compressed tar archive"),
            None => "not a tar archive".to_string(),
        };
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {}", plain(detail))
        };
        AgentError::BadRequest(format!("{what}{detail}; nothing was written"))
    };
    let mut counted = CountingReader {
        inner: reader,
        read: 0,
    };
    let mut count = 0;
    {
        let mut archive = tar::Archive::new(&mut counted);
        archive.set_preserve_permissions(true);
        // An archive is never trusted to hand out privileges: setuid and setgid bits go.
        archive.set_mask(0o6000);
        archive.set_overwrite(true);
        let entries = archive.entries().map_err(|e| not_tar(&e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| not_tar(&format!("bad entry: {e}")))?;
            // Nor to make device nodes or FIFOs (tar-rs would write them as plain files).
            let kind = entry.header().entry_type();
            if kind.is_block_special() || kind.is_character_special() || kind.is_fifo() {
                continue;
            }
            let unpacked = entry.unpack_in(dest).map_err(|e| match e.kind() {
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                    AgentError::TooLarge(format!(
                        "no space left in the sandbox: {}; nothing was written",
                        plain(&e.to_string())
                    ))
                }
                _ => AgentError::BadRequest(format!(
                    "cannot extract tar entry: {}; nothing was written",
                    plain(&e.to_string())
                )),
            })?;
            if unpacked {
                count += 1;
            }
        }
    }
    // An archive with no entries is two zero blocks; anything shorter is not a tar.
    if count == 0 && counted.read > 0 && counted.read < 1024 {
        return Err(not_tar(""));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar holding `entries` (name, content); names ending in `/` are directories.
    fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, content) in entries {
            let mut header = tar::Header::new_gnu();
            if name.ends_with('/') {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(0o755);
                header.set_cksum();
                builder.append_data(&mut header, name, io::empty()).unwrap();
            } else {
                header.set_size(content.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder
                    .append_data(&mut header, name, content.as_bytes())
                    .unwrap();
            }
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// Every name in `dir` (recursively), sorted, relative to it.
    fn tree(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                e.path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    fn bad_request(result: Result<u64, AgentError>) -> String {
        match result {
            Err(AgentError::BadRequest(m)) => m,
            other => panic!("expected 400, got {other:?}"),
        }
    }

    #[test]
    fn gzip_compressed_tars_are_extracted() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("new/dir");
        let body = gzip(&tar_of(&[("src/", ""), ("src/a.py", "print(1)\n")]));
        assert_eq!(extract(body.as_slice(), &dest).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(dest.join("src/a.py")).unwrap(),
            "print(1)\n"
        );
        assert_eq!(
            tree(tmp.path()),
            ["new", "new/dir", "new/dir/src", "new/dir/src/a.py"]
        );
    }

    #[test]
    fn extraction_merges_into_an_existing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("src")).unwrap();
        std::fs::write(tmp.path().join("src/old.py"), "old").unwrap();
        std::fs::write(tmp.path().join("src/a.py"), "before").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("lib")).unwrap();
        let body = tar_of(&[("src/a.py", "after"), ("lib/", ""), ("lib/x.py", "x")]);
        extract(body.as_slice(), tmp.path()).unwrap();
        assert_eq!(
            tree(tmp.path()),
            ["lib", "lib/x.py", "src", "src/a.py", "src/old.py"]
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("src/a.py")).unwrap(),
            "after"
        );
        assert!(
            tree(outside.path()).is_empty(),
            "the planted symlink was replaced, not followed"
        );
    }

    #[test]
    fn unsupported_formats_are_named_and_leave_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let cases: [(&[u8], &str); 4] = [
            (b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xff\xfe", "zip"),
            (b"\xFD7zXZ\x00\x00\x04\xe6\xd6\xb4\x46\x02\x00", "xz"),
            (b"BZh91AY&SY\x00\xff\x80", "bzip2"),
            (b"\x28\xB5\x2F\xFD\x24\x00\x01\x00\xff", "zstd"),
        ];
        for (body, name) in cases {
            let message = bad_request(extract(body, &dest));
            assert!(message.contains(name), "{message}");
            assert!(message.contains("not supported"), "{message}");
            assert!(!message.contains('\u{fffd}'), "{message}");
        }
        let message = bad_request(extract(&[0x1f, 0x8b, 0x08, 0x00, 0xff, 0xee][..], &dest));
        assert!(message.contains("gzip"), "{message}");
        let message = bad_request(extract(&b"\x00\x01\x02\xffnot a tar at all"[..], &dest));
        assert!(message.contains("not a tar archive"), "{message}");
        assert!(
            message.chars().all(|c| !c.is_control()),
            "plain text: {message:?}"
        );
        assert!(tree(tmp.path()).is_empty(), "{:?}", tree(tmp.path()));
    }

    /// A body that yields `good` bytes, then fails like a cut-off upload.
    struct CutOff {
        data: io::Cursor<Vec<u8>>,
    }

    impl io::Read for CutOff {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.data.read(buf)? {
                0 => Err(io::Error::other("body limit exceeded")),
                n => Ok(n),
            }
        }
    }

    #[test]
    fn an_upload_cut_midway_leaves_nothing_behind() {
        let big = "y".repeat(64 * 1024);
        let body = tar_of(&[("a.txt", "first"), ("sub/", ""), ("sub/b.txt", &big)]);
        for cut in [700, 2048, body.len() - 4096] {
            let tmp = tempfile::tempdir().unwrap();
            let existing = tmp.path().join("existing");
            std::fs::create_dir(&existing).unwrap();
            let fresh = tmp.path().join("fresh/dest");
            for dest in [&existing, &fresh] {
                let reader = CutOff {
                    data: io::Cursor::new(body[..cut].to_vec()),
                };
                let message = bad_request(extract(reader, dest));
                assert!(message.contains("upload interrupted"), "{message}");
                assert!(message.contains("nothing was written"), "{message}");
            }
            assert_eq!(tree(tmp.path()), ["existing"], "cut at {cut}");
        }
    }

    #[test]
    fn an_archive_replacing_a_directory_by_a_file_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("b/keep")).unwrap();
        let body = tar_of(&[("a.txt", "new"), ("b", "a file")]);
        match extract(body.as_slice(), tmp.path()) {
            Err(AgentError::Conflict(m)) => assert!(m.contains("is a directory"), "{m}"),
            other => panic!("expected 409, got {other:?}"),
        }
        assert_eq!(tree(tmp.path()), ["b", "b/keep"]);
    }

    #[test]
    fn setuid_bits_and_device_nodes_never_come_out_of_an_archive() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o4755);
        header.set_cksum();
        builder
            .append_data(&mut header, "suid", &b"#!"[..])
            .unwrap();
        let mut device = tar::Header::new_gnu();
        device.set_entry_type(tar::EntryType::Char);
        device.set_device_major(1).unwrap();
        device.set_device_minor(3).unwrap();
        device.set_size(0);
        device.set_mode(0o666);
        device.set_cksum();
        builder.append_data(&mut device, "null", &b""[..]).unwrap();
        let bytes = builder.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        extract(&bytes[..], tmp.path()).unwrap();
        let mode = std::fs::metadata(tmp.path().join("suid"))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o7777, 0o755);
        assert!(!tmp.path().join("null").exists());
    }

    #[test]
    fn entries_escaping_the_destination_never_land_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, "escape", tmp.path())
            .unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "escape/owned.txt", &b"x"[..])
            .unwrap();
        let body = builder.into_inner().unwrap();
        let _ = extract(body.as_slice(), &dest);
        assert!(!tmp.path().join("owned.txt").exists());
        assert!(tree(&dest).iter().all(|n| !n.starts_with(".berth-upload")));
    }

    #[test]
    fn plain_escapes_control_characters_and_bounds_length() {
        assert_eq!(
            plain("bad \u{1b}[31m\u{0}name"),
            "bad \\u{1b}[31m\\u{0}name"
        );
        assert!(plain(&"x".repeat(5000)).chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
