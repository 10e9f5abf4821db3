//! `berth cp`: files and directories between this machine and a sandbox (`ID:path`), by
//! `docker cp`'s rules: a file into an existing directory keeps its name; a directory
//! into an existing directory nests under its own name (`SRC/.` copies its contents);
//! symlinks stay links; `-` is a tar stream on stdin or stdout. Directories and links
//! travel as tar through the archive routes.

use super::remote::client;
use super::RemoteOpts;
use crate::client::Client;
use crate::domain::SandboxId;
use berth_runtime::wire::FileKind;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `sb-...:path` → (id, path).
fn remote_part(arg: &str) -> Option<(String, String)> {
    let (id, path) = arg.split_once(':')?;
    SandboxId::parse(id)?;
    let path = if path.is_empty() { "." } else { path };
    Some((id.to_string(), path.to_string()))
}

/// The last name of a path (`a/b/` → `b`, `a/b/.` → `b`).
fn base_name(path: &str) -> String {
    let trimmed = path.trim_end_matches("/.").trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// `SRC/.`: copy a directory's contents rather than the directory.
fn contents_only(path: &str) -> bool {
    path.ends_with("/.") || path == "."
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

pub async fn copy(
    remote: RemoteOpts,
    source: String,
    destination: String,
) -> anyhow::Result<ExitCode> {
    match (remote_part(&source), remote_part(&destination)) {
        (None, Some((id, path))) => upload(&client(&remote)?, &source, &id, &path).await?,
        (Some((id, path)), None) => download(&client(&remote)?, &id, &path, &destination).await?,
        (Some(_), Some(_)) => anyhow::bail!(
            "copying between two sandboxes is not supported; copy through this machine"
        ),
        (None, None) => {
            anyhow::bail!("one side must be a sandbox path like sb-0123456789abcdef:src/main.py")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A tar of one local entry under `name` (a link stays a link).
fn tar_of_entry(local: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_path_with_name(local, name)?;
    Ok(builder.into_inner()?)
}

/// A tar of a local directory's contents (links stay links).
fn tar_of_contents(local: &Path) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", local)?;
    Ok(builder.into_inner()?)
}

async fn upload(client: &Client, source: &str, id: &str, dest: &str) -> anyhow::Result<()> {
    if source == "-" {
        let mut tar = Vec::new();
        std::io::stdin().lock().read_to_end(&mut tar)?;
        client.put_archive(id, dest, tar).await?;
        return Ok(());
    }
    let local = Path::new(source);
    let meta = std::fs::symlink_metadata(local).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    let existing = client.stat(id, dest).await?.map(|e| e.kind);
    let dest_is_dir = existing == Some(FileKind::Dir);
    if meta.is_dir() {
        let target = match existing {
            None => dest.to_string(),
            Some(FileKind::Dir) if contents_only(source) => dest.to_string(),
            Some(FileKind::Dir) => join(dest, &base_name(source)),
            Some(_) => anyhow::bail!("cannot copy directory {source} onto file {id}:{dest}"),
        };
        client
            .put_archive(id, &target, tar_of_contents(local)?)
            .await?;
        return Ok(());
    }
    if dest.ends_with('/') && !dest_is_dir {
        anyhow::bail!("destination directory {id}:{dest} does not exist");
    }
    let target = if dest_is_dir {
        join(dest, &base_name(source))
    } else {
        dest.to_string()
    };
    if meta.file_type().is_symlink() {
        let (parent, name) = match target.rsplit_once('/') {
            Some((parent, name)) => (if parent.is_empty() { "/" } else { parent }, name),
            None => (".", target.as_str()),
        };
        client
            .put_archive(id, parent, tar_of_entry(local, name)?)
            .await?;
        return Ok(());
    }
    let bytes = tokio::fs::read(local).await?;
    client.write_file(id, &target, bytes).await?;
    Ok(())
}

async fn download(client: &Client, id: &str, source: &str, dest: &str) -> anyhow::Result<()> {
    if dest == "-" {
        let tar = client.get_archive(id, source).await?;
        let mut out = std::io::stdout().lock();
        out.write_all(&tar)?;
        out.flush()?;
        return Ok(());
    }
    let Some(entry) = client.stat(id, source).await? else {
        anyhow::bail!("{id}:{source}: no such file or directory");
    };
    let local = Path::new(dest);
    let local_meta = std::fs::metadata(local).ok();
    let local_is_dir = local_meta.as_ref().is_some_and(|m| m.is_dir());
    if entry.kind == FileKind::Dir {
        let target: PathBuf = match &local_meta {
            None => local.to_path_buf(),
            Some(m) if m.is_dir() && contents_only(source) => local.to_path_buf(),
            Some(m) if m.is_dir() => local.join(base_name(source)),
            Some(_) => anyhow::bail!("cannot copy directory {id}:{source} onto file {dest}"),
        };
        let tar = client.get_archive(id, source).await?;
        std::fs::create_dir_all(&target)?;
        tar::Archive::new(std::io::Cursor::new(tar)).unpack(&target)?;
        return Ok(());
    }
    if dest.ends_with('/') && !local_is_dir {
        anyhow::bail!("destination directory {dest} does not exist");
    }
    let target = if local_is_dir {
        local.join(base_name(source))
    } else {
        local.to_path_buf()
    };
    let tar = client.get_archive(id, source).await?;
    write_single_entry(&tar, &target).map_err(|e| anyhow::anyhow!("{id}:{source}: {e}"))
}

/// Writes the one entry of `tar` (a file or a symlink, kept as it is) at `target`. What a
/// sandbox sends is untrusted: a hard link or a device would act on this machine's own
/// files, so nothing else is written.
fn write_single_entry(tar: &[u8], target: &Path) -> anyhow::Result<()> {
    let mut archive = tar::Archive::new(std::io::Cursor::new(tar));
    let mut entries = archive.entries()?;
    let Some(entry) = entries.next() else {
        anyhow::bail!("the sandbox sent an empty archive");
    };
    let mut entry = entry?;
    let kind = entry.header().entry_type();
    if !(kind.is_file() || kind.is_symlink()) {
        anyhow::bail!("the sandbox sent a {kind:?} entry; only files and symlinks are copied");
    }
    if std::fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(target)?;
    }
    entry.unpack(target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_entry_from_the_sandbox_is_never_a_hard_link_to_a_host_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "host only").unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Link);
        header.set_size(0);
        builder
            .append_link(&mut header, "out.txt", &secret)
            .unwrap();
        let tar = builder.into_inner().unwrap();
        let target = dir.path().join("out.txt");
        let err = write_single_entry(&tar, &target).unwrap_err();
        assert!(err.to_string().contains("Link"), "{err}");
        assert!(!target.exists(), "nothing was written");

        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "out.txt", &b"hello"[..])
            .unwrap();
        write_single_entry(&builder.into_inner().unwrap(), &target).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "hello");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host only");
    }

    #[test]
    fn names_and_contents_follow_docker_cp() {
        assert_eq!(base_name("src/app/"), "app");
        assert_eq!(base_name("src/app/."), "app");
        assert_eq!(base_name("file.txt"), "file.txt");
        assert!(contents_only("src/."));
        assert!(!contents_only("src"));
        assert_eq!(join("a/", "b"), "a/b");
        assert_eq!(
            remote_part("sb-0123456789abcdef:"),
            Some(("sb-0123456789abcdef".into(), ".".into()))
        );
        assert_eq!(remote_part("./local:file"), None);
    }
}
