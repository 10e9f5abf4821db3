//! Loading a root filesystem into Docker without a registry: the rootfs tar becomes the
//! single layer of a `docker save`-format archive that is streamed to `POST /images/load`.

use super::{DockerEngine, DockerError};
use bollard::image::ImportImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The image config that goes with the layer.
#[derive(Debug, Clone, Default)]
pub struct ImageMeta {
    pub tag: String,
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: String,
    pub labels: HashMap<String, String>,
}

fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

fn header_block(name: &str, size: u64) -> std::io::Result<Bytes> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(Bytes::copy_from_slice(header.as_bytes()))
}

fn padding(size: u64) -> Bytes {
    let pad = (512 - (size % 512) as usize) % 512;
    Bytes::from(vec![0u8; pad])
}

/// Loads `layer_tar` (an uncompressed tar of a root filesystem) as image `meta.tag`.
pub async fn load_rootfs_layer(
    engine: &DockerEngine,
    layer_tar: &Path,
    meta: &ImageMeta,
) -> Result<(), DockerError> {
    let path = layer_tar.to_path_buf();
    let (layer_hex, layer_size) = tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .map_err(|e| DockerError::Io(std::io::Error::other(e)))??;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": chrono::Utc::now().to_rfc3339(),
        "config": {
            "Env": meta.env,
            "Cmd": meta.cmd,
            "WorkingDir": meta.workdir,
            "Labels": meta.labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_hex}")] },
        "history": [{ "created": chrono::Utc::now().to_rfc3339(), "created_by": "berth images build" }],
    });
    let config_bytes =
        serde_json::to_vec(&config).map_err(|e| DockerError::Io(std::io::Error::other(e)))?;
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config_bytes)));
    let layer_name = format!("{layer_hex}/layer.tar");
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [meta.tag],
        "Layers": [layer_name],
    }]))
    .map_err(|e| DockerError::Io(std::io::Error::other(e)))?;

    let mut head = Vec::new();
    for (name, data) in [
        (&config_name, &config_bytes),
        (&"manifest.json".to_string(), &manifest),
    ] {
        head.push(header_block(name, data.len() as u64)?);
        head.push(Bytes::copy_from_slice(data));
        head.push(padding(data.len() as u64));
    }
    head.push(header_block(&layer_name, layer_size)?);
    let layer = tokio::fs::File::open(layer_tar).await?;
    let layer_stream = tokio_util::io::ReaderStream::with_capacity(layer, 1024 * 1024)
        .map(|r| r.unwrap_or_default());
    let tail = vec![padding(layer_size), Bytes::from(vec![0u8; 1024])];
    let body = futures_util::stream::iter(head)
        .chain(layer_stream)
        .chain(futures_util::stream::iter(tail));

    let mut progress =
        engine
            .client()
            .import_image_stream(ImportImageOptions { quiet: true }, body, None);
    while let Some(item) = progress.next().await {
        let info = item.map_err(|e| DockerError::Failed {
            operation: "image load",
            message: e.to_string(),
        })?;
        if let Some(error) = info.error {
            return Err(DockerError::Failed {
                operation: "image load",
                message: error,
            });
        }
    }
    if !engine.image_exists(&meta.tag).await? {
        return Err(DockerError::Failed {
            operation: "image load",
            message: format!("Docker accepted the archive but {} is not there", meta.tag),
        });
    }
    Ok(())
}
