//! `berth cp`: files and directories between this machine and a sandbox (`ID:path`).
//! Directories travel as tar through the archive routes.

use super::remote::client;
use super::RemoteOpts;
use crate::domain::SandboxId;
use std::path::Path;
use std::process::ExitCode;

/// `sb-...:path` → (id, path).
fn remote_part(arg: &str) -> Option<(String, String)> {
    let (id, path) = arg.split_once(':')?;
    SandboxId::parse(id)?;
    Some((
        id.to_string(),
        if path.is_empty() {
            ".".to_string()
        } else {
            path.to_string()
        },
    ))
}

pub async fn copy(
    remote: RemoteOpts,
    source: String,
    destination: String,
) -> anyhow::Result<ExitCode> {
    let client = client(&remote);
    match (remote_part(&source), remote_part(&destination)) {
        (None, Some((id, path))) => {
            let local = Path::new(&source);
            if local.is_dir() {
                let mut builder = tar::Builder::new(Vec::new());
                builder.append_dir_all(".", local)?;
                client
                    .put_archive(&id, &path, builder.into_inner()?)
                    .await?;
            } else {
                let bytes = tokio::fs::read(local).await?;
                client.write_file(&id, &path, bytes).await?;
            }
        }
        (Some((id, path)), None) => match client.read_file(&id, &path).await {
            Ok(bytes) => tokio::fs::write(&destination, bytes).await?,
            Err(e) if e.status() == Some(reqwest::StatusCode::BAD_REQUEST) => {
                let tar = client.get_archive(&id, &path).await?;
                std::fs::create_dir_all(&destination)?;
                tar::Archive::new(std::io::Cursor::new(tar)).unpack(&destination)?;
            }
            Err(e) => return Err(e.into()),
        },
        (Some(_), Some(_)) => anyhow::bail!(
            "copying between two sandboxes is not supported; copy through this machine"
        ),
        (None, None) => {
            anyhow::bail!("one side must be a sandbox path like sb-0123456789abcdef:src/main.py")
        }
    }
    Ok(ExitCode::SUCCESS)
}
