//! File routes, run inside the container so every path resolves in the sandbox's own
//! filesystem: read (with ranges), write (atomic, parents created), delete, list, edit.

use super::error::AgentError;
use super::AgentState;
use crate::wire::{EditRequest, EditResult, FileEntry, FileKind, FileList};
use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

/// Largest file `edit` will load.
pub const MAX_EDIT_BYTES: u64 = 64 * 1024 * 1024;
/// Most entries a listing returns.
pub const MAX_LIST_ENTRIES: usize = 100_000;

/// A byte range to read, already checked against the file's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end_inclusive: u64,
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` against a file of `size` bytes.
pub fn parse_range(header: &str, size: u64) -> Result<ByteRange, AgentError> {
    let bad = || {
        AgentError::RangeNotSatisfiable(format!(
            "range {header:?} does not fit a file of {size} bytes"
        ))
    };
    let spec = header.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(AgentError::RangeNotSatisfiable(
            "multiple ranges are not supported".into(),
        ));
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| bad())?;
            if n == 0 || size == 0 {
                return Err(bad());
            }
            (size.saturating_sub(n), size - 1)
        }
        (start, "") => (start.parse().map_err(|_| bad())?, size.saturating_sub(1)),
        (start, end) => {
            let end: u64 = end.parse().map_err(|_| bad())?;
            (
                start.parse().map_err(|_| bad())?,
                end.min(size.saturating_sub(1)),
            )
        }
    };
    if start >= size || start > end {
        return Err(bad());
    }
    Ok(ByteRange {
        start,
        end_inclusive: end,
    })
}

/// Opens a regular file for reading, positioned at the start of `range`.
pub fn open_for_read(path: &Path) -> Result<(std::fs::File, u64), AgentError> {
    let meta = std::fs::metadata(path).map_err(|e| AgentError::from_io(path, e))?;
    if meta.is_dir() {
        return Err(AgentError::BadRequest(format!(
            "{} is a directory; use /files/list",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(AgentError::BadRequest(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let file = std::fs::File::open(path).map_err(|e| AgentError::from_io(path, e))?;
    Ok((file, meta.len()))
}

pub fn seek(file: &mut std::fs::File, to: u64) -> Result<(), AgentError> {
    file.seek(SeekFrom::Start(to))
        .map_err(|e| AgentError::Io(format!("seek: {e}")))?;
    Ok(())
}

/// Parses an octal mode such as `0644` or `755`.
pub fn parse_mode(mode: &str) -> Result<u32, AgentError> {
    u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            AgentError::BadRequest(format!(
                "mode {mode:?} is not an octal permission like 0644"
            ))
        })
}

/// A temp file beside `target`, renamed over it when complete.
pub struct AtomicWrite {
    pub temp: PathBuf,
    pub target: PathBuf,
}

impl AtomicWrite {
    /// Creates parent directories and the temp file.
    pub fn begin(target: PathBuf) -> Result<(Self, std::fs::File), AgentError> {
        if target.file_name().is_none() {
            return Err(AgentError::BadRequest(format!(
                "{} names no file",
                target.display()
            )));
        }
        if target.is_dir() {
            return Err(AgentError::BadRequest(format!(
                "{} is a directory",
                target.display()
            )));
        }
        let parent = target.parent().unwrap_or(Path::new("/")).to_path_buf();
        super::identity::create_dirs_owned(&parent).map_err(|e| AgentError::from_io(&parent, e))?;
        let temp = parent.join(format!(
            ".{}.berth-{}",
            target.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id() as u64 * 1_000_000 + u64::from(rand_suffix())
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| AgentError::from_io(&target, e))?;
        Ok((AtomicWrite { temp, target }, file))
    }

    /// Renames the temp file over the target: a new file belongs to the sandbox user,
    /// a replaced one keeps its owner and (unless `mode` is given) its mode. Owner and
    /// mode are set through a descriptor opened without following symlinks, so user
    /// code that swaps the temp file for a link cannot point them anywhere else.
    pub fn commit(self, mode: Option<u32>) -> Result<(), AgentError> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        use std::os::unix::io::AsRawFd;
        let existing = std::fs::metadata(&self.target).ok();
        let owner = existing
            .as_ref()
            .map_or(super::identity::DEFAULT_USER, |m| {
                super::spawn::Credentials {
                    uid: m.uid(),
                    gid: m.gid(),
                }
            });
        let mode = mode.or_else(|| existing.map(|m| m.permissions().mode() & 0o7777));
        let mode = mode.unwrap_or(0o644);
        let result = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.temp)
            .and_then(|file| {
                // SAFETY: fchown(2) on a descriptor we own.
                unsafe { libc::fchown(file.as_raw_fd(), owner.uid, owner.gid) };
                file.set_permissions(std::fs::Permissions::from_mode(mode))
            })
            .and_then(|_| std::fs::rename(&self.temp, &self.target));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&self.temp);
            return Err(AgentError::from_io(&self.target, e));
        }
        Ok(())
    }

    pub fn abort(self) {
        let _ = std::fs::remove_file(&self.temp);
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Deletes `path` (a file, a symlink itself, or a directory). The workdir, `/`, any
/// directory holding the workdir and any mount point (or a tree holding one) are refused
/// up front with 409, so a delete is never left half done.
pub fn delete(path: &Path, workdir: &Path, recursive: bool) -> Result<(), AgentError> {
    let target = deletion_target(path)?;
    let meta = std::fs::symlink_metadata(&target).map_err(|e| AgentError::from_io(path, e))?;
    refuse_protected(&target, &meta, workdir, recursive)?;
    let result = if meta.is_dir() {
        if recursive {
            std::fs::remove_dir_all(&target)
        } else {
            std::fs::remove_dir(&target)
        }
    } else {
        std::fs::remove_file(&target)
    };
    result.map_err(|e| AgentError::from_io(path, e))
}

/// The entry a delete of `path` acts on: its parent resolved (symlinks followed, as the
/// kernel would), its last name kept as is so a symlink is deleted, not what it points
/// to. A path ending in `..` (or naming `/`) is resolved whole.
pub fn deletion_target(path: &Path) -> Result<PathBuf, AgentError> {
    let canonical = |p: &Path| std::fs::canonicalize(p).map_err(|e| AgentError::from_io(path, e));
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            Ok(canonical(parent)?.join(name))
        }
        _ => canonical(path),
    }
}

/// `path` with the symlinks of its existing ancestors resolved (as the kernel would
/// follow them) and its last name kept, so a link named last is still the link. The
/// kernel would reach the same file; resolving here also steps around gVisor 20221219,
/// which loses the rest of a path after a link to `/` (`/w/rootlink/etc/passwd` opened
/// `/`). A path whose ancestors cannot be resolved (a loop) is left as it is, to fail
/// where it is used.
pub fn resolve_parent_links(path: PathBuf) -> PathBuf {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return std::fs::canonicalize(&path).unwrap_or(path);
    };
    let mut existing = parent;
    let mut rest = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(mut resolved) => {
                resolved.extend(rest.iter().rev());
                resolved.push(name);
                return resolved;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match (existing.parent(), existing.file_name()) {
                    (Some(up), Some(last)) => {
                        rest.push(last);
                        existing = up;
                    }
                    _ => return path.clone(),
                }
            }
            Err(_) => return path.clone(),
        }
    }
}

/// `path` with `.` and `..` removed lexically (for paths that may not exist).
pub fn normalize_lexically(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && !path.is_absolute() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(if path.is_absolute() { "/" } else { "." });
    }
    out
}

fn refuse_protected(
    target: &Path,
    meta: &std::fs::Metadata,
    workdir: &Path,
    recursive: bool,
) -> Result<(), AgentError> {
    let shown = target.display();
    if target.parent().is_none() {
        return Err(AgentError::Conflict(format!(
            "refusing to delete {shown}: it is the root of the sandbox's filesystem; delete the entries inside it instead"
        )));
    }
    let mut workdirs = vec![normalize_lexically(workdir)];
    if let Ok(real) = std::fs::canonicalize(workdir) {
        workdirs.push(real);
    }
    if workdirs.iter().any(|w| w == target) {
        return Err(AgentError::Conflict(format!(
            "refusing to delete {shown}: it is the sandbox's workdir; delete its contents instead"
        )));
    }
    if meta.is_dir() && workdirs.iter().any(|w| w.starts_with(target)) {
        return Err(AgentError::Conflict(format!(
            "refusing to delete {shown}: it holds the sandbox's workdir {}; delete other entries instead",
            workdir.display()
        )));
    }
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mounts = mount_points();
    if is_mount_point(target, meta, &mounts) {
        return Err(AgentError::Conflict(format!(
            "refusing to delete {shown}: it is a mount point; delete its contents instead"
        )));
    }
    if meta.is_dir() && recursive {
        if let Some(inner) = mounts
            .iter()
            .find(|m| m.starts_with(target) && *m != target)
        {
            return Err(AgentError::Conflict(format!(
                "refusing to delete {shown}: {} inside it is a mount point; delete the other entries instead",
                inner.display()
            )));
        }
    }
    Ok(())
}

/// Whether `path` (already resolved, not a symlink) is a mount point: listed in
/// /proc/self/mountinfo, or a directory on another device than its parent (only
/// directories: overlayfs may report a lower layer's device for plain files).
pub fn is_mount_point(path: &Path, meta: &std::fs::Metadata, mounts: &[PathBuf]) -> bool {
    if mounts.iter().any(|m| m == path) {
        return true;
    }
    match path.parent() {
        None => true,
        Some(_) if !meta.is_dir() => false,
        Some(parent) => std::fs::metadata(parent)
            .map(|p| p.dev() != meta.dev())
            .unwrap_or(false),
    }
}

/// Mount points of this process's mount namespace (empty when /proc is not there).
pub fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| parse_mountinfo(&text))
        .unwrap_or_default()
}

/// The mount point column (5th) of each mountinfo line, octal escapes decoded.
pub fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| {
            let raw = field.as_bytes();
            let mut out = Vec::with_capacity(raw.len());
            let mut i = 0;
            while i < raw.len() {
                let escaped = raw
                    .get(i + 1..i + 4)
                    .filter(|d| raw[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
                match escaped {
                    Some(d) => {
                        let value = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                        out.push(value as u8);
                        i += 4;
                    }
                    None => {
                        out.push(raw[i]);
                        i += 1;
                    }
                }
            }
            PathBuf::from(std::ffi::OsString::from_vec(out))
        })
        .collect()
}

/// Lists `root` to `depth` levels; entry paths are `shown` joined with the relative path.
pub fn list(root: &Path, shown: &str, depth: usize) -> Result<FileList, AgentError> {
    let meta = std::fs::metadata(root).map_err(|e| AgentError::from_io(root, e))?;
    if !meta.is_dir() {
        let entry = entry_for(
            display_join(shown, ""),
            &std::fs::symlink_metadata(root).unwrap_or(meta),
        );
        return Ok(FileList {
            entries: vec![entry],
            truncated: false,
        });
    }
    let mut entries = Vec::new();
    let mut truncated = false;
    let walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .max_depth(depth.max(1))
        .sort_by_file_name();
    for item in walker {
        let Ok(item) = item else { continue };
        if entries.len() >= MAX_LIST_ENTRIES {
            truncated = true;
            break;
        }
        let rel = item.path().strip_prefix(root).unwrap_or(item.path());
        let Ok(meta) = item.path().symlink_metadata() else {
            continue;
        };
        entries.push(entry_for(
            display_join(shown, &rel.to_string_lossy()),
            &meta,
        ));
    }
    Ok(FileList { entries, truncated })
}

/// `shown` (the path as the client wrote it) joined with `rel`, without `./` noise.
pub fn display_join(shown: &str, rel: &str) -> String {
    if !shown.is_empty() && shown.trim_end_matches('/').is_empty() {
        return format!("/{rel}");
    }
    let base = shown.trim_end_matches('/');
    let base = if base == "." {
        ""
    } else {
        base.strip_prefix("./").unwrap_or(base)
    };
    match (base.is_empty(), rel.is_empty()) {
        (true, true) => ".".into(),
        (true, false) => rel.into(),
        (false, true) => base.into(),
        (false, false) => format!("{base}/{rel}"),
    }
}

/// One path as it is (a symlink is described, not followed).
pub fn stat(path: &Path, shown: &str) -> Result<FileEntry, AgentError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| AgentError::from_io(path, e))?;
    Ok(entry_for(display_join(shown, ""), &meta))
}

fn entry_for(shown: String, meta: &std::fs::Metadata) -> FileEntry {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileEntry {
        path: shown,
        kind,
        size: meta.len(),
        mode: format!("{:04o}", meta.mode() & 0o7777),
        mtime: rfc3339(meta.mtime()),
    }
}

/// Files with an edit in progress; an edit waits on `EDIT_DONE` while its file is here.
static EDITING: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static EDIT_DONE: Condvar = Condvar::new();

/// Holds the edit lock of one file; dropping it releases the lock.
struct EditLock {
    path: PathBuf,
}

impl EditLock {
    fn acquire(path: &Path) -> EditLock {
        let mut busy = EDITING.lock().unwrap_or_else(|e| e.into_inner());
        while busy.contains(path) {
            busy = EDIT_DONE.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        busy.insert(path.to_path_buf());
        EditLock {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for EditLock {
    fn drop(&mut self) {
        let mut busy = EDITING.lock().unwrap_or_else(|e| e.into_inner());
        busy.remove(&self.path);
        drop(busy);
        EDIT_DONE.notify_all();
    }
}

pub fn edit(state: &AgentState, req: &EditRequest) -> Result<EditResult, AgentError> {
    edit_at(state.resolve(&req.path)?, req)
}

/// `edit` with `req.path` already resolved to `path`.
fn edit_at(path: PathBuf, req: &EditRequest) -> Result<EditResult, AgentError> {
    if req.old.is_empty() {
        return Err(AgentError::BadRequest("`old` must not be empty".into()));
    }
    // Edits of one file are serialised: each read-modify-write sees the previous one's
    // result, so a second edit of text the first replaced answers 422 instead of
    // silently undoing it. The lock is per real file, so `a.py`, `./a.py` and a
    // symlink to it share one; the edit is written to that real file.
    let path = std::fs::canonicalize(&path).map_err(|e| AgentError::from_io(&path, e))?;
    let _guard = EditLock::acquire(&path);
    let (mut file, size) = open_for_read(&path)?;
    if size > MAX_EDIT_BYTES {
        return Err(AgentError::TooLarge(format!(
            "{} is larger than {MAX_EDIT_BYTES} bytes",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| AgentError::from_io(&path, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| AgentError::Unprocessable(format!("{} is not UTF-8 text", path.display())))?;
    let count = text.matches(req.old.as_str()).count() as u64;
    if count == 0 {
        return Err(AgentError::Unprocessable(format!(
            "`old` text not found in {}",
            req.path
        )));
    }
    if count > 1 && !req.replace_all {
        return Err(AgentError::Unprocessable(format!(
            "`old` text occurs {count} times in {}; make it unique or set replace_all",
            req.path
        )));
    }
    let updated = if req.replace_all {
        text.replace(&req.old, &req.new)
    } else {
        text.replacen(&req.old, &req.new, 1)
    };
    let (writer, mut file) = AtomicWrite::begin(path)?;
    if let Err(e) = std::io::Write::write_all(&mut file, updated.as_bytes()) {
        let target = writer.target.clone();
        writer.abort();
        return Err(AgentError::from_io(&target, e));
    }
    writer.commit(None)?;
    Ok(EditResult {
        replacements: if req.replace_all { count } else { 1 },
    })
}

/// Seconds since the epoch as an RFC 3339 UTC string.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_links_are_resolved_and_the_last_name_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(&root, root.join("up")).unwrap();
        std::os::unix::fs::symlink("real", root.join("link")).unwrap();
        let via = resolve_parent_links(root.join("up/up/real/file"));
        assert_eq!(via, root.join("real/file"));
        assert_eq!(resolve_parent_links(root.join("link")), root.join("link"));
        assert_eq!(
            resolve_parent_links(root.join("link/new/deeper")),
            root.join("real/new/deeper")
        );
        let dotdot = root.join("gone/../x");
        assert_eq!(resolve_parent_links(dotdot.clone()), dotdot);
    }

    #[test]
    fn ranges_parse_like_http_says() {
        assert_eq!(
            parse_range("bytes=0-9", 100).unwrap(),
            ByteRange {
                start: 0,
                end_inclusive: 9
            }
        );
        assert_eq!(
            parse_range("bytes=90-", 100).unwrap(),
            ByteRange {
                start: 90,
                end_inclusive: 99
            }
        );
        assert_eq!(
            parse_range("bytes=-10", 100).unwrap(),
            ByteRange {
                start: 90,
                end_inclusive: 99
            }
        );
        assert_eq!(
            parse_range("bytes=95-200", 100).unwrap(),
            ByteRange {
                start: 95,
                end_inclusive: 99
            }
        );
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=5-1", 100).is_err());
        assert!(parse_range("lines=1-2", 100).is_err());
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn display_join_drops_dot_prefixes() {
        assert_eq!(display_join(".", "a.py"), "a.py");
        assert_eq!(display_join("./src/", "a.py"), "src/a.py");
        assert_eq!(display_join("/etc", "hosts"), "/etc/hosts");
        assert_eq!(display_join(".", ""), ".");
        assert_eq!(display_join("/", "bin"), "/bin");
        assert_eq!(display_join("/", ""), "/");
    }

    #[test]
    fn modes_must_be_octal_permissions() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("755").unwrap(), 0o755);
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("rwx").is_err());
    }
    fn conflict_message(result: Result<(), AgentError>) -> String {
        match result {
            Err(AgentError::Conflict(m)) => m,
            other => panic!("expected 409 Conflict, got {other:?}"),
        }
    }

    #[test]
    fn delete_refuses_the_workdir_however_it_is_spelled() {
        let tmp = tempfile::tempdir().unwrap();
        let workdir = tmp.path().join("workspace");
        std::fs::create_dir_all(workdir.join("sub")).unwrap();
        std::fs::write(workdir.join("keep.txt"), "x").unwrap();
        for spelled in [
            workdir.join("."),
            workdir.join("sub/.."),
            PathBuf::from(format!("{}/", workdir.display())),
            workdir.clone(),
        ] {
            let message = conflict_message(delete(&spelled, &workdir, true));
            assert!(message.contains("workdir"), "{message}");
            assert!(message.contains("delete its contents instead"), "{message}");
        }
        let parent = conflict_message(delete(tmp.path(), &workdir, true));
        assert!(parent.contains("holds the sandbox's workdir"), "{parent}");
        let root = conflict_message(delete(Path::new("/"), &workdir, true));
        assert!(root.contains("root"), "{root}");
        let dotdot = conflict_message(delete(&workdir.join("../.."), &workdir, true));
        assert!(!dotdot.is_empty());
        assert!(workdir.join("keep.txt").exists(), "nothing was deleted");
        assert!(workdir.join("sub").is_dir());
    }

    #[test]
    fn delete_removes_entries_and_symlinks_themselves() {
        let tmp = tempfile::tempdir().unwrap();
        let workdir = tmp.path().join("workspace");
        std::fs::create_dir_all(workdir.join("dir/inner")).unwrap();
        std::fs::write(workdir.join("dir/inner/a.txt"), "a").unwrap();
        std::fs::write(workdir.join("file.txt"), "f").unwrap();
        let link = tmp.path().join("link-to-workdir");
        std::os::unix::fs::symlink(&workdir, &link).unwrap();
        delete(&link, &workdir, true).unwrap();
        assert!(
            std::fs::symlink_metadata(&link).is_err(),
            "the link is gone"
        );
        assert!(workdir.join("file.txt").exists(), "its target is intact");
        delete(&workdir.join("./file.txt"), &workdir, false).unwrap();
        assert!(!workdir.join("file.txt").exists());
        delete(&workdir.join("dir/inner/../"), &workdir, true).unwrap();
        assert!(!workdir.join("dir").exists());
        assert!(matches!(
            delete(&workdir.join("missing"), &workdir, false),
            Err(AgentError::NotFound(_))
        ));
    }

    #[test]
    fn delete_refuses_mount_points() {
        let proc = Path::new("/proc");
        let Ok(meta) = std::fs::symlink_metadata(proc) else {
            return; // no /proc here: nothing to test against
        };
        if std::fs::metadata("/").map(|m| m.dev()).ok() == Some(meta.dev()) {
            return;
        }
        assert!(is_mount_point(proc, &meta, &[]), "another st_dev");
        let tmp = tempfile::tempdir().unwrap();
        let message = conflict_message(delete(proc, tmp.path(), false));
        assert!(message.contains("mount point"), "{message}");
        let dir = tempfile::tempdir().unwrap();
        let plain = std::fs::symlink_metadata(dir.path()).unwrap();
        assert!(!is_mount_point(dir.path(), &plain, &[]));
        assert!(is_mount_point(
            dir.path(),
            &plain,
            &[dir.path().to_path_buf()]
        ));
    }

    #[test]
    fn mountinfo_lines_give_unescaped_mount_points() {
        let text = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                    30 22 0:30 / /work\\040space rw - ext4 /dev/sda rw\n";
        assert_eq!(
            parse_mountinfo(text),
            [PathBuf::from("/proc"), PathBuf::from("/work space")]
        );
        assert_eq!(
            normalize_lexically(Path::new("/a/./b/../c/")),
            PathBuf::from("/a/c")
        );
        assert_eq!(normalize_lexically(Path::new("/..")), PathBuf::from("/"));
    }

    #[test]
    fn concurrent_edits_of_one_file_are_serialised() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("shared.txt");
        std::fs::write(&path, "head\nTOKEN\ntail\n").unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let workers: Vec<_> = (0..16)
            .map(|i| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let req = EditRequest {
                        path: path.display().to_string(),
                        old: "TOKEN".into(),
                        new: format!("edit-{i}"),
                        replace_all: false,
                    };
                    barrier.wait();
                    edit_at(path, &req)
                })
            })
            .collect();
        let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        let lost = results
            .iter()
            .filter(|r| matches!(r, Err(AgentError::Unprocessable(_))))
            .count();
        assert_eq!((won, lost), (1, 15), "{results:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("edit-").count(), 1, "{text}");
        assert!(!text.contains("TOKEN"));
        assert!(EDITING.lock().unwrap().is_empty(), "locks released");
    }

    #[test]
    fn edits_through_a_symlink_change_the_file_it_points_to() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real.txt");
        std::fs::write(&real, "one two").unwrap();
        let link = tmp.path().join("link.txt");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let req = EditRequest {
            path: "link.txt".into(),
            old: "two".into(),
            new: "2".into(),
            replace_all: false,
        };
        assert_eq!(edit_at(link.clone(), &req).unwrap().replacements, 1);
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "one 2");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
