//! Snapshots and archives: a sandbox's volume as a zstd-compressed tar in the archive
//! store. The tar is made inside the sandbox (its agent, or a read-only helper on the
//! volume), compressed and uploaded as it streams, with a SHA-256. Restoring streams the
//! object back, checks the SHA-256 as it goes (a mismatch aborts the upload, so the agent
//! keeps nothing) and extracts inside the sandbox, never on the host. Reading one file
//! or a directory listing out of a snapshot needs no sandbox at all.

use super::{EventKind, SandboxError, SandboxService};
use crate::agent::{query_string, AgentBody, AgentClient};
use crate::archive::ArchiveError;
use crate::domain::{
    Sandbox, SandboxId, SandboxState, Snapshot, SnapshotId, SnapshotKind, SnapshotState, TenantId,
};
use berth_runtime::wire::{FileEntry, FileKind, FileList};
use bytes::Bytes;
use chrono::Utc;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::BufReader;
use tokio_util::io::{ReaderStream, StreamReader};

/// Longest label.
const MAX_LABEL: usize = 256;
/// Most entries a directory listing out of a snapshot returns.
const MAX_LISTED: usize = 100_000;
/// How long a restore's upload to the agent may take.
const RESTORE_DEADLINE: Duration = Duration::from_secs(6 * 3600);
/// Reads out of snapshots at once (each holds a blocking thread while it scans).
pub const MAX_SNAPSHOT_READS: usize = 16;
/// A client reading a file out of a snapshot that takes nothing for this long is let go.
const READ_IDLE: Duration = Duration::from_secs(60);

impl From<ArchiveError> for SandboxError {
    fn from(e: ArchiveError) -> Self {
        match e {
            // Deleted meanwhile (a snapshot's delete, or an archive dropped by a resume).
            ArchiveError::NotFound(what) => SandboxError::Conflict(format!(
                "{what} is no longer in the archive store (deleted meanwhile?); retry"
            )),
            // The sandbox's tar stream broke (it stopped, or its helper went away).
            ArchiveError::Source(why) => SandboxError::Conflict(format!(
                "the sandbox's files could not be read to the end ({why}); retry"
            )),
            ArchiveError::Denied(why) => SandboxError::ArchiveDenied(why),
            other => SandboxError::Archive(other.to_string()),
        }
    }
}

/// What reading a path out of a snapshot found.
pub enum SnapshotRead {
    /// A file: its size and its bytes as they come.
    File {
        size: u64,
        body: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    },
    /// A directory: its entries (those directly in it).
    Dir(FileList),
}

/// A path of a tar entry as made by the agent (`./a/b`), or asked for (`a/b`, `/w/a/b`,
/// `.`), reduced to `a/b` (`""` for the root).
fn normalize(path: &str, workdir: &str) -> String {
    let inside = !workdir.is_empty()
        && path
            .strip_prefix(workdir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    let path = if inside { &path[workdir.len()..] } else { path };
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Compressed tar bytes as they stream, their SHA-256 checked against `expected` at the
/// end: a mismatch (or a store error) becomes the stream's last item, an error.
fn verified(
    stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    expected: Option<String>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let hash = Arc::new(std::sync::Mutex::new(Sha256::new()));
    let seen = hash.clone();
    let body = stream.inspect_ok(move |chunk| {
        seen.lock().unwrap_or_else(|p| p.into_inner()).update(chunk);
    });
    let end = futures_util::stream::once(async move {
        let got = hex::encode(
            hash.lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .finalize(),
        );
        match expected {
            Some(want) if want != got => Err(std::io::Error::other(format!(
                "the snapshot's checksum does not match (stored {want}, read {got}); it is damaged"
            ))),
            _ => Ok(Bytes::new()),
        }
    });
    body.chain(end)
}

/// zstd-decompressed bytes of `stream`. Once the compressed frame ends, the rest of
/// `stream` is read too (nothing is expected there), so that an error at its very end
/// (the checksum's verdict from [`verified`]) reaches whoever reads to the end.
fn decompressed(
    stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    let reader = StreamReader::new(Box::pin(stream));
    let decoder = async_compression::tokio::bufread::ZstdDecoder::new(BufReader::new(reader));
    futures_util::stream::unfold(Some(decoder), |state| async move {
        let mut decoder = state?;
        let mut buf = vec![0u8; 64 * 1024];
        match decoder.read(&mut buf).await {
            Ok(0) => {
                let mut rest = decoder.into_inner();
                match tokio::io::copy(&mut rest, &mut tokio::io::sink()).await {
                    Ok(_) => None,
                    Err(e) => Some((Err(e), None)),
                }
            }
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(decoder)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// What went wrong while a snapshot streamed: the store (retry later) or its bytes (a
/// damaged or hostile object; retrying will not help).
#[derive(Clone, Default)]
struct Failure(Arc<std::sync::Mutex<Option<(bool, String)>>>);

impl Failure {
    fn set(&self, from_store: bool, e: &std::io::Error) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert((from_store, e.to_string()));
    }

    /// The error to answer with, if the stream failed.
    fn error(&self, snapshot: &SnapshotId) -> Option<SandboxError> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        slot.map(|(from_store, message)| {
            if from_store {
                SandboxError::Archive(format!("reading snapshot {snapshot} failed: {message}"))
            } else {
                SandboxError::Unprocessable(format!(
                    "snapshot {snapshot} is damaged and cannot be used: {message}"
                ))
            }
        })
    }
}

impl SandboxService {
    /// The tar inside snapshot object `snapshot`, checked against its SHA-256 as it
    /// streams; failures are noted in `failure`.
    async fn snapshot_tar(
        &self,
        snapshot: &Snapshot,
        failure: &Failure,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, SandboxError> {
        let (store_side, content_side) = (failure.clone(), failure.clone());
        let raw = self
            .archive
            .get(&snapshot.id.object_key())
            .await?
            .inspect_err(move |e| store_side.set(true, e));
        Ok(decompressed(verified(raw, snapshot.sha256.clone()))
            .inspect_err(move |e| content_side.set(false, e)))
    }
}

impl SandboxService {
    /// A snapshot of the sandbox's volume (running, stopped, or terminated with its volume
    /// kept; an archived sandbox's archive is copied). Runs to the end whatever the client
    /// does.
    pub async fn create_snapshot(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        label: Option<String>,
    ) -> Result<Snapshot, SandboxError> {
        if label
            .as_ref()
            .is_some_and(|l| l.len() > MAX_LABEL || l.contains('\0'))
        {
            return Err(SandboxError::Invalid(format!(
                "`label` must be at most {MAX_LABEL} bytes without NUL"
            )));
        }
        let sandbox = self.get(tenant, id).await?;
        let max = self.config.limits.max_snapshots_per_tenant;
        if self.snapshots(tenant).await?.len() >= max {
            return Err(SandboxError::Quota(format!(
                "this tenant has {max} snapshots, its limit; delete some first"
            )));
        }
        if matches!(sandbox.state, SandboxState::Creating | SandboxState::Failed) {
            return Err(SandboxError::Conflict(format!(
                "sandbox {id} is {}; it has no volume to snapshot",
                sandbox.state
            )));
        }
        let this = self.clone();
        super::detached(async move {
            this.write_snapshot(&sandbox, SnapshotKind::Snapshot, label)
                .await
        })
        .await
    }

    /// Writes a snapshot of `kind` of `sandbox`'s volume: a `creating` record first (so a
    /// crash is undone at the next start), then the object, then the record `ready`. A
    /// failure removes both.
    async fn write_snapshot(
        self: &Arc<Self>,
        sandbox: &Sandbox,
        kind: SnapshotKind,
        label: Option<String>,
    ) -> Result<Snapshot, SandboxError> {
        let mut snapshot = Snapshot {
            id: SnapshotId::generate(),
            tenant: sandbox.tenant.clone(),
            sandbox_id: sandbox.id.clone(),
            kind,
            state: SnapshotState::Creating,
            label,
            size_bytes: 0,
            sha256: None,
            workdir: sandbox.workdir.clone(),
            created_at: Utc::now(),
            reason: None,
        };
        self.store.insert_snapshot(&snapshot).await?;
        crate::crash::point("snapshot.after_record");
        let key = snapshot.id.object_key();
        let written = async {
            let stored = match sandbox.archive.as_ref() {
                // Archived: the archive already is the volume's tar.
                Some(archive) if sandbox.state == SandboxState::Archived => {
                    let source = self.archive.get(&archive.object_key()).await?;
                    self.archive.put(&key, source).await?
                }
                _ => {
                    let reply = self.get_archive(&sandbox.tenant, &sandbox.id, ".").await?;
                    let tar = reply.body.into_data_stream().map_err(std::io::Error::other);
                    let reader = StreamReader::new(tar);
                    let encoder = async_compression::tokio::bufread::ZstdEncoder::with_quality(
                        BufReader::new(reader),
                        async_compression::Level::Precise(3),
                    );
                    self.archive
                        .put(&key, ReaderStream::with_capacity(encoder, 256 * 1024))
                        .await?
                }
            };
            crate::crash::point("snapshot.after_upload");
            self.archive.sync(&key).await?;
            Ok::<_, SandboxError>(stored)
        }
        .await;
        match written {
            Ok(stored) => {
                snapshot.size_bytes = stored.size;
                snapshot.sha256 = Some(stored.sha256);
                snapshot.state = SnapshotState::Ready;
                self.store.update_snapshot(&snapshot).await?;
                self.store.sync().await?;
                Ok(snapshot)
            }
            Err(e) => {
                let _ = self.archive.delete(&key).await;
                let _ = self.store.delete_snapshot(&snapshot.id).await;
                Err(e)
            }
        }
    }

    /// The tenant's snapshots (archives of archived sandboxes are not listed).
    pub async fn snapshots(&self, tenant: &TenantId) -> Result<Vec<Snapshot>, SandboxError> {
        Ok(self
            .store
            .list_snapshots(Some(tenant))
            .await?
            .into_iter()
            .filter(|s| s.kind == SnapshotKind::Snapshot && s.state != SnapshotState::Failed)
            .collect())
    }

    pub async fn snapshot(
        &self,
        tenant: &TenantId,
        id: &SnapshotId,
    ) -> Result<Snapshot, SandboxError> {
        match self.store.get_snapshot(id).await? {
            Some(s) if &s.tenant == tenant && s.kind == SnapshotKind::Snapshot => Ok(s),
            _ => Err(SandboxError::NotFound(format!("snapshot {id}"))),
        }
    }

    /// A snapshot a create may restore: the tenant's, and ready.
    pub(super) async fn restorable(
        &self,
        tenant: &TenantId,
        id: &SnapshotId,
    ) -> Result<Snapshot, SandboxError> {
        let snapshot = self.snapshot(tenant, id).await?;
        if snapshot.state != SnapshotState::Ready {
            return Err(SandboxError::Conflict(format!(
                "snapshot {id} is {}; wait for it to be ready",
                snapshot.state.as_str()
            )));
        }
        Ok(snapshot)
    }

    pub async fn delete_snapshot(
        &self,
        tenant: &TenantId,
        id: &SnapshotId,
    ) -> Result<(), SandboxError> {
        let snapshot = self.snapshot(tenant, id).await?;
        if snapshot.state == SnapshotState::Creating {
            return Err(SandboxError::Conflict(format!(
                "snapshot {id} is still being written; delete it once it is ready"
            )));
        }
        self.archive.delete(&snapshot.id.object_key()).await?;
        self.store.delete_snapshot(id).await?;
        Ok(())
    }

    /// Reads `path` (a file, or a directory's listing) out of snapshot `id`, without
    /// starting anything.
    pub async fn read_snapshot(
        &self,
        tenant: &TenantId,
        id: &SnapshotId,
        path: &str,
    ) -> Result<SnapshotRead, SandboxError> {
        let snapshot = self.restorable(tenant, id).await?;
        self.read_from(&snapshot, path).await
    }

    async fn read_from(
        &self,
        snapshot: &Snapshot,
        path: &str,
    ) -> Result<SnapshotRead, SandboxError> {
        if path.contains('\0') {
            return Err(SandboxError::Invalid(
                "`path` must not contain NUL bytes".into(),
            ));
        }
        let wanted = normalize(path, &snapshot.workdir);
        let permit = self
            .snapshot_reads
            .clone()
            .try_acquire_owned()
            .map_err(|_| SandboxError::Busy("too many reads out of snapshots under way".into()))?;
        let failure = Failure::default();
        let stream = self.snapshot_tar(snapshot, &failure).await?;
        let tar = super::tar_guard::TarGuard::new(tokio_util::io::SyncIoBridge::new(
            StreamReader::new(Box::pin(stream)),
        ));
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let shown = path.to_string();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            scan_tar(tar, &wanted, &shown, head_tx, tx)
        });
        match head_rx.await {
            Ok(Ok(Head::File(size))) => Ok(SnapshotRead::File { size, body: rx }),
            Ok(Ok(Head::Dir(list))) => Ok(SnapshotRead::Dir(list)),
            Ok(Err(e)) => Err(failure.error(&snapshot.id).unwrap_or(e)),
            Err(_) => Err(failure
                .error(&snapshot.id)
                .unwrap_or_else(|| SandboxError::Internal("reading the snapshot failed".into()))),
        }
    }

    /// Extracts `snapshot` into the (new) sandbox's workdir through its agent, checking
    /// the object's SHA-256 on the way.
    pub(super) async fn restore_into(
        &self,
        sandbox: &Sandbox,
        snapshot: &Snapshot,
    ) -> Result<(), SandboxError> {
        let agent = self.agent_client(&sandbox.id);
        self.restore_with(&agent, &sandbox.workdir, snapshot).await
    }

    /// Extracts `snapshot` into `workdir` through `agent` (a sandbox's, or the reader's of
    /// an archived one), checking the object's SHA-256 on the way.
    pub(super) async fn restore_with(
        &self,
        agent: &AgentClient,
        workdir: &str,
        snapshot: &Snapshot,
    ) -> Result<(), SandboxError> {
        let failure = Failure::default();
        let tar = self
            .snapshot_tar(snapshot, &failure)
            .await?
            .map_ok(Frame::data);
        let body: AgentBody = StreamBody::new(tar).boxed_unsync();
        let uri = format!("/archive?{}", query_string(&[("path", workdir)]));
        agent
            .no_content(hyper::Method::PUT, &uri, &[], body, RESTORE_DEADLINE)
            .await
            .map_err(|e| match failure.error(&snapshot.id) {
                Some(ours) => ours,
                None => restore_error(e, &snapshot.id),
            })
    }

    /// Archives a sandbox stopped long enough: its volume into the archive store, then the
    /// Docker volume removed; the sandbox is then `archived` (a resume restores it). The
    /// upload runs without the lifecycle lock (a resume meanwhile wins: the archive is
    /// then dropped); the switch to `archived` is made under it, once the object and the
    /// record are durable, and only while no other sandbox uses the volume and no read
    /// goes through its read-only helper (otherwise it is tried again later).
    pub(super) async fn archive_sandbox(
        self: &Arc<Self>,
        id: &SandboxId,
    ) -> Result<bool, SandboxError> {
        let Some(sandbox) = self.store.get_sandbox(id).await? else {
            return Ok(false);
        };
        if sandbox.state != SandboxState::Stopped
            || !sandbox.owns_volume
            || self.volume_shared(&sandbox).await?
        {
            return Ok(false);
        }
        let archive = self
            .write_snapshot(&sandbox, SnapshotKind::Archive, None)
            .await?;
        crate::crash::point("archive.after_upload");
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let current = self.store.get_sandbox(id).await?;
        let still = match current.filter(|now| {
            now.state == SandboxState::Stopped && now.stopped_at == sandbox.stopped_at
        }) {
            Some(now) if !self.reader_in_use(id) && !self.volume_shared(&now).await? => Some(now),
            _ => None,
        };
        let Some(mut current) = still else {
            // Resumed, deleted, shared or read meanwhile: this archive is not needed.
            self.drop_archive(&archive.id).await;
            return Ok(false);
        };
        // The volume goes only once the archive would survive a power cut.
        self.archive.sync(&archive.id.object_key()).await?;
        current.archive = Some(archive.id.clone());
        self.transition(
            &mut current,
            SandboxState::Archived,
            Some("archived".into()),
        )
        .await?;
        self.store.sync().await?;
        crate::crash::point("archive.after_record");
        self.remove_reader(id).await?;
        self.remove_volume_record(&current.volume).await?;
        self.emit(EventKind::Archived, &current);
        Ok(true)
    }

    /// Whether a sandbox other than `sandbox` (not ended) uses its volume.
    async fn volume_shared(&self, sandbox: &Sandbox) -> Result<bool, SandboxError> {
        Ok(self
            .store
            .list_sandboxes(Some(&sandbox.tenant), None)
            .await?
            .iter()
            .any(|s| {
                s.id != sandbox.id
                    && s.volume == sandbox.volume
                    && !matches!(s.state, SandboxState::Terminated | SandboxState::Failed)
            }))
    }

    /// Brings an archived sandbox's volume back: a new volume, the container on it, the
    /// archive extracted, then the archive dropped (call with the lifecycle lock held; on
    /// failure the sandbox stays archived and nothing half-made is left).
    pub(super) async fn unarchive(&self, sandbox: &mut Sandbox) -> Result<(), SandboxError> {
        let archive = self.archive_of(sandbox).await?;
        let restored = async {
            self.create_volume(sandbox).await?;
            crate::crash::point("restore.after_volume");
            self.bring_up(sandbox).await?;
            self.restore_into(sandbox, &archive).await?;
            crate::crash::point("restore.after_extract");
            Ok::<_, SandboxError>(())
        }
        .await;
        if let Err(e) = restored {
            self.undo_unarchive(sandbox).await;
            return Err(e);
        }
        Ok(())
    }

    /// The archive record of an archived sandbox.
    pub(super) async fn archive_of(&self, sandbox: &Sandbox) -> Result<Snapshot, SandboxError> {
        let archive_id = sandbox.archive.as_ref().ok_or_else(|| {
            SandboxError::Internal(format!("archived sandbox {} has no archive", sandbox.id))
        })?;
        self.store.get_snapshot(archive_id).await?.ok_or_else(|| {
            SandboxError::Internal(format!("the archive record of {} is missing", sandbox.id))
        })
    }

    /// What an unarchive that did not finish left: container and the new volume.
    pub(super) async fn undo_unarchive(&self, sandbox: &Sandbox) {
        let _ = self.bring_down(sandbox).await;
        let _ = self.remove_volume_record(&sandbox.volume).await;
    }

    /// Drops an archive once its sandbox runs on its own volume again (a snapshot the
    /// tenant was given, from a delete with `keep_volume`, is never dropped here).
    pub(super) async fn drop_archive(&self, id: &SnapshotId) {
        match self.store.get_snapshot(id).await {
            Ok(Some(s)) if s.kind == SnapshotKind::Archive => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(snapshot = %id, error = %e, "could not look up an archive; the next start removes it");
                return;
            }
        }
        if let Err(e) = self.archive.delete(&id.object_key()).await {
            tracing::warn!(snapshot = %id, error = %e, "could not remove an archive; the next start removes it");
            return;
        }
        let _ = self.store.delete_snapshot(id).await;
    }
}

/// Why the agent did not take a snapshot's tar.
fn restore_error(e: crate::agent::AgentError, id: &SnapshotId) -> SandboxError {
    match e {
        // The archive itself was refused (a hostile or damaged entry): not retryable.
        crate::agent::AgentError::Rejected { message, .. } => {
            SandboxError::Unprocessable(format!("snapshot {id} could not be restored: {message}"))
        }
        other => SandboxError::StartFailed(format!("snapshot {id} could not be restored: {other}")),
    }
}

/// What a snapshot read found first.
enum Head {
    File(u64),
    Dir(FileList),
}

/// Scans the tar for `wanted`: sends its kind on `head`, and a file's bytes on `body`.
fn scan_tar(
    tar: impl std::io::Read,
    wanted: &str,
    shown: &str,
    head: tokio::sync::oneshot::Sender<Result<Head, SandboxError>>,
    body: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) {
    let mut archive = tar::Archive::new(tar);
    let mut listing: Option<Vec<FileEntry>> = wanted.is_empty().then(Vec::new);
    let damaged = |e: std::io::Error| {
        SandboxError::Unprocessable(format!("the snapshot is damaged and cannot be read: {e}"))
    };
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => {
            let _ = head.send(Err(damaged(e)));
            return;
        }
    };
    let mut head = Some(head);
    for entry in entries {
        // The client went away before anything was found: stop scanning.
        if head.as_ref().is_some_and(|h| h.is_closed()) {
            return;
        }
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                if let Some(head) = head.take() {
                    let _ = head.send(Err(damaged(e)));
                }
                return;
            }
        };
        let name = match entry.path() {
            Ok(p) => normalize(&p.to_string_lossy(), ""),
            Err(_) => continue,
        };
        let kind = entry.header().entry_type();
        if listing.is_none() && name == wanted {
            if kind.is_dir() {
                listing = Some(Vec::new());
                continue;
            }
            if !kind.is_file() {
                if let Some(head) = head.take() {
                    let _ = head.send(Err(SandboxError::Invalid(format!(
                        "{shown} is not a file or a directory in the snapshot"
                    ))));
                }
                return;
            }
            let size = entry.size();
            if let Some(head) = head.take() {
                if head.send(Ok(Head::File(size))).is_err() {
                    return;
                }
            }
            let mut buf = vec![0u8; 64 * 1024];
            // A client that stops reading (or leaves) lets the scan, and its thread, go.
            let runtime = tokio::runtime::Handle::current();
            let send = |item| runtime.block_on(body.send_timeout(item, READ_IDLE)).is_ok();
            loop {
                match std::io::Read::read(&mut entry, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if !send(Ok(Bytes::copy_from_slice(&buf[..n]))) {
                            return;
                        }
                    }
                    Err(e) => {
                        send(Err(e));
                        return;
                    }
                }
            }
        }
        if let Some(list) = listing.as_mut() {
            let parent = name.rsplit_once('/').map_or("", |(p, _)| p);
            if parent == wanted && !name.is_empty() && list.len() < MAX_LISTED {
                let header = entry.header();
                list.push(FileEntry {
                    path: name.clone(),
                    kind: if kind.is_dir() {
                        FileKind::Dir
                    } else if kind.is_symlink() {
                        FileKind::Symlink
                    } else if kind.is_file() {
                        FileKind::File
                    } else {
                        FileKind::Other
                    },
                    size: header.size().unwrap_or(0),
                    mode: format!("{:04o}", header.mode().unwrap_or(0) & 0o7777),
                    mtime: crate::domain::rfc3339(header.mtime().unwrap_or(0) as i64),
                });
            }
        }
    }
    if let Some(head) = head.take() {
        let _ = head.send(match listing {
            Some(entries) => Ok(Head::Dir(FileList {
                truncated: entries.len() >= MAX_LISTED,
                entries,
            })),
            None => Err(SandboxError::NotFound(format!(
                "path {shown} in the snapshot"
            ))),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn paths_in_and_out_of_snapshots_meet() {
        assert_eq!(normalize("./src/a.py", ""), "src/a.py");
        assert_eq!(normalize("src/a.py", "/workspace"), "src/a.py");
        assert_eq!(normalize("/workspace/src/a.py", "/workspace"), "src/a.py");
        assert_eq!(normalize(".", "/workspace"), "");
        assert_eq!(normalize("./", ""), "");
        assert_eq!(normalize("src//b/", ""), "src/b");
        assert_eq!(normalize("/workspace2/x", "/workspace"), "workspace2/x");
    }
}
