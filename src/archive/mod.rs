//! The archive store (object_store): where snapshots and archived volumes go, as
//! zstd-compressed tars. A local directory under the data dir by default; any
//! S3-compatible service by config (`[archive] url = "s3://bucket/prefix"`, `endpoint`,
//! credentials from the usual `AWS_*` variables). Objects are written as a stream (a
//! multipart upload), so memory stays flat whatever their size, with a SHA-256 of what
//! was stored.

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the archive store is not configured right: {0}")]
    Config(String),
    #[error("archive object {0} not found")]
    NotFound(String),
    #[error("the archive store failed: {0}")]
    Store(String),
    #[error("reading what to archive failed: {0}")]
    Source(String),
    /// The store refused berth's credentials (a configuration fault: retrying won't help).
    #[error("the archive store refused berth's credentials: {0}")]
    Denied(String),
}

impl From<object_store::Error> for ArchiveError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => ArchiveError::NotFound(path),
            object_store::Error::PermissionDenied { source, .. }
            | object_store::Error::Unauthenticated { source, .. } => {
                ArchiveError::Denied(source.to_string())
            }
            other => ArchiveError::Store(other.to_string()),
        }
    }
}

/// Where archives go (the `[archive]` section of the config).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveConfig {
    /// `s3://bucket/prefix` or `file:///dir`; `<data_dir>/archive` when unset.
    pub url: Option<String>,
    /// An S3-compatible endpoint (`http://127.0.0.1:8333`) instead of AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Plain http to the endpoint (a local test server).
    pub allow_http: bool,
    /// Credentials, when not in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// A stored object: its size and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub sha256: String,
}

/// Where the archive store keeps objects, and under which prefix.
#[derive(Clone)]
pub struct ArchiveStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// `file:///...` or `s3://...`, for messages.
    pub location: String,
    /// The directory of a local store (whose files berth syncs and sweeps itself).
    local_root: Option<std::path::PathBuf>,
}

/// Bytes of one part of a multipart upload (S3's smallest but the last).
const PART_BYTES: usize = 8 * 1024 * 1024;

impl ArchiveStore {
    /// Opens the store `config` names; `default_dir` when it names none.
    pub fn open(
        config: &ArchiveConfig,
        default_dir: &std::path::Path,
    ) -> Result<Self, ArchiveError> {
        let url = config
            .url
            .clone()
            .unwrap_or_else(|| format!("file://{}", default_dir.display()));
        if let Some(dir) = url.strip_prefix("file://") {
            std::fs::create_dir_all(dir)
                .map_err(|e| ArchiveError::Config(format!("cannot create {dir}: {e}")))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| ArchiveError::Config(e.to_string()))?;
            return Ok(ArchiveStore {
                store: Arc::new(store),
                prefix: String::new(),
                location: url.clone(),
                local_root: Some(std::path::PathBuf::from(dir)),
            });
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(ArchiveError::Config(format!(
                "archive url {url:?} must be s3://bucket/prefix or file:///dir"
            )));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ArchiveError::Config(format!(
                "archive url {url:?} names no bucket"
            )));
        }
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if config.allow_http {
            builder = builder.with_allow_http(true);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        let store = builder
            .build()
            .map_err(|e| ArchiveError::Config(e.to_string()))?;
        Ok(ArchiveStore {
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_string(),
            location: url,
            local_root: None,
        })
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Writes `stream` to `key` as it comes (a multipart upload), returning its size and
    /// SHA-256. A stream that fails, or a store that does, leaves no object behind.
    pub async fn put(
        &self,
        key: &str,
        stream: impl Stream<Item = std::io::Result<Bytes>> + Send,
    ) -> Result<Stored, ArchiveError> {
        let upload = self.store.put_multipart(&self.path(key)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut hash = Sha256::new();
        let mut size = 0u64;
        futures_util::pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(ArchiveError::Source(e.to_string()));
                }
            };
            // At most a couple of parts in flight: memory stays flat.
            if let Err(e) = writer.wait_for_capacity(2).await {
                let _ = writer.abort().await;
                return Err(e.into());
            }
            hash.update(&chunk);
            size += chunk.len() as u64;
            writer.put(chunk);
        }
        writer.finish().await?;
        Ok(Stored {
            size,
            sha256: hex::encode(hash.finalize()),
        })
    }

    /// The object's bytes as a stream.
    pub async fn get(
        &self,
        key: &str,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, ArchiveError> {
        let object = self.store.get(&self.path(key)).await?;
        Ok(object
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string())))
    }

    /// Removes `key`; a missing one counts as removed.
    pub async fn delete(&self, key: &str) -> Result<(), ArchiveError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, ArchiveError> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every key in the store (under the prefix).
    pub async fn keys(&self) -> Result<Vec<String>, ArchiveError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let listed: Vec<_> = self.store.list(prefix.as_ref()).try_collect().await?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        Ok(listed
            .into_iter()
            .map(|meta| {
                let full = meta.location.to_string();
                full.strip_prefix(&strip).unwrap_or(&full).to_string()
            })
            .collect())
    }

    /// Makes `key` durable: for a local store its file and directories are synced to disk
    /// (the local store renames a finished upload into place without a sync); an S3
    /// service has it durable once the upload completed.
    pub async fn sync(&self, key: &str) -> Result<(), ArchiveError> {
        let Some(root) = self.local_root.clone() else {
            return Ok(());
        };
        let file = root.join(key);
        tokio::task::spawn_blocking(move || {
            std::fs::File::open(&file)?.sync_all()?;
            let mut dir = file.parent();
            while let Some(d) = dir {
                std::fs::File::open(d)?.sync_all()?;
                if d == root {
                    break;
                }
                dir = d.parent();
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(|e| ArchiveError::Store(e.to_string()))?
        .map_err(|e| ArchiveError::Store(format!("cannot sync {key}: {e}")))
    }

    /// Removes what uploads cut short by a crash left in a local store (the local store
    /// writes `key#N` and renames it when done; such files are not listed). Returns how
    /// many went. An S3 service keeps incomplete multipart uploads until a lifecycle rule
    /// (`AbortIncompleteMultipartUpload`) removes them.
    pub async fn sweep_partial(&self) -> Result<usize, ArchiveError> {
        let Some(root) = self.local_root.clone() else {
            return Ok(0);
        };
        tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            let mut dirs = vec![root];
            while let Some(dir) = dirs.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(kind) = entry.file_type() else {
                        continue;
                    };
                    if kind.is_dir() {
                        dirs.push(path);
                    } else if is_partial(&entry.file_name().to_string_lossy())
                        && std::fs::remove_file(&path).is_ok()
                    {
                        removed += 1;
                    }
                }
            }
            removed
        })
        .await
        .map_err(|e| ArchiveError::Store(e.to_string()))
    }

    /// Whether the store answers (for readiness).
    pub async fn ping(&self) -> Result<(), ArchiveError> {
        self.exists("berth-ping").await.map(|_| ())
    }
}

/// A local store's name for an upload under way: `name#digits`.
fn is_partial(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_store_streams_objects_in_and_out_with_their_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArchiveStore::open(&ArchiveConfig::default(), dir.path()).unwrap();
        let chunks: Vec<std::io::Result<Bytes>> = (0..20)
            .map(|i| Ok(Bytes::from(vec![i as u8; 1024 * 1024])))
            .collect();
        let stored = store
            .put("snapshots/a.tar.zst", futures_util::stream::iter(chunks))
            .await
            .unwrap();
        assert_eq!(stored.size, 20 * 1024 * 1024);
        let back: Vec<u8> = store
            .get("snapshots/a.tar.zst")
            .await
            .unwrap()
            .try_fold(Vec::new(), |mut all, c| async move {
                all.extend_from_slice(&c);
                Ok(all)
            })
            .await
            .unwrap();
        assert_eq!(hex::encode(Sha256::digest(&back)), stored.sha256);
        assert_eq!(store.keys().await.unwrap(), ["snapshots/a.tar.zst"]);
        // A stream that fails leaves nothing.
        let broken = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"part")),
            Err(std::io::Error::other("cut")),
        ]);
        assert!(store.put("snapshots/b.tar.zst", broken).await.is_err());
        assert!(!store.exists("snapshots/b.tar.zst").await.unwrap());
        store.sync("snapshots/a.tar.zst").await.unwrap();
        // What a crash mid-upload leaves is swept, and nothing else.
        std::fs::write(dir.path().join("snapshots/c.tar.zst#3"), b"half").unwrap();
        assert_eq!(store.sweep_partial().await.unwrap(), 1);
        assert!(!dir.path().join("snapshots/c.tar.zst#3").exists());
        assert!(store.exists("snapshots/a.tar.zst").await.unwrap());
        store.delete("snapshots/a.tar.zst").await.unwrap();
        store.delete("snapshots/a.tar.zst").await.unwrap();
        assert!(store.keys().await.unwrap().is_empty());
        assert!(matches!(
            ArchiveStore::open(
                &ArchiveConfig {
                    url: Some("ftp://x".into()),
                    ..Default::default()
                },
                dir.path()
            ),
            Err(ArchiveError::Config(_))
        ));
    }
}
