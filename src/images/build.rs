//! One template build: debootstrap a minbase root filesystem with the template's packages
//! on the host (no container needs the network), tidy it, tar it, load it into Docker.

use super::{BuildProgress, ImageError, Template};
use crate::config::ImagesConfig;
use crate::docker::{load_rootfs_layer, DockerEngine, ImageMeta, LABEL_MANAGED};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Loading a few hundred MB into Docker takes seconds; this bounds a stuck engine.
const IMAGE_LOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

pub async fn build_template(
    engine: &DockerEngine,
    data_dir: &Path,
    config: &ImagesConfig,
    t: Template,
    tag: &str,
    progress: &BuildProgress,
) -> Result<(), ImageError> {
    let unavailable = |reason: String| ImageError::BuilderUnavailable {
        template: t.name.into(),
        reason,
    };
    let failed = |reason: String| ImageError::BuildFailed {
        template: t.name.into(),
        reason,
    };
    if !nix::unistd::geteuid().is_root() {
        return Err(unavailable(
            "debootstrap needs root: run `sudo berth images build` once, or build images/NAME/Dockerfile \
             on a host with a registry and tag it berth/NAME:latest"
                .into(),
        ));
    }
    let debootstrap = match find_program("debootstrap") {
        Some(path) => path,
        None => install_debootstrap(progress).await.map_err(unavailable)?,
    };
    let work = data_dir
        .join("build")
        .join(format!("{}-{}", t.name, t.definition_hash(config)));
    let cache = data_dir.join("cache").join("debs");
    let rootfs = work.join("rootfs");
    let layer = work.join("layer.tar");
    let _ = tokio::fs::remove_dir_all(&work).await;
    tokio::fs::create_dir_all(&rootfs)
        .await
        .map_err(|e| failed(format!("create {}: {e}", rootfs.display())))?;
    tokio::fs::create_dir_all(&cache)
        .await
        .map_err(|e| failed(format!("create {}: {e}", cache.display())))?;

    let result = async {
        // Stage 1: debootstrap the packages every template shares; its resolver is simple.
        let shared = super::template("base")
            .map(|b| b.package_list())
            .unwrap_or_default();
        run_debootstrap(&debootstrap, config, &shared, &rootfs, &cache, progress)
            .await
            .map_err(failed)?;
        // Stage 2: the template's own packages through apt in a chroot (a real resolver).
        let extra: Vec<&str> = t
            .package_list()
            .into_iter()
            .filter(|p| !shared.contains(p))
            .collect();
        if !extra.is_empty() {
            apt_install_in_chroot(&rootfs, &extra, progress)
                .await
                .map_err(failed)?;
        }
        tidy_rootfs(&rootfs, config).map_err(|e| failed(format!("tidy rootfs: {e}")))?;
        progress.step("packing", 0, 1, "root filesystem");
        tar_rootfs(&rootfs, &layer).await.map_err(failed)?;
        progress.step("loading into Docker", 0, 1, tag);
        let meta = ImageMeta {
            tag: tag.to_string(),
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                "LANG=C.UTF-8".into(),
            ],
            cmd: vec!["/bin/bash".into()],
            workdir: "/".into(),
            labels: HashMap::from([
                (LABEL_MANAGED.to_string(), "true".to_string()),
                ("dev.berth.template".to_string(), t.name.to_string()),
                (
                    "dev.berth.definition".to_string(),
                    t.definition_hash(config),
                ),
            ]),
        };
        let loading = async {
            load_rootfs_layer(engine, &layer, &meta).await?;
            tag_latest(engine, tag, t.name).await
        };
        tokio::time::timeout(IMAGE_LOAD_DEADLINE, loading)
            .await
            .map_err(|_| {
                failed(format!(
                    "Docker did not load the image within {IMAGE_LOAD_DEADLINE:?}"
                ))
            })??;
        Ok::<(), ImageError>(())
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    match &result {
        Ok(()) => progress.finish(&format!("built {tag}")),
        Err(e) => progress.finish(&format!("failed: {e}")),
    }
    result
}

/// On a Debian-family host, installs `debootstrap` once (berth needs it to build images
/// without a registry); elsewhere says what to do.
async fn install_debootstrap(progress: &BuildProgress) -> Result<PathBuf, String> {
    let missing = "`debootstrap` is not installed: `apt-get install debootstrap` (Debian/Ubuntu), \
                   or build images/NAME/Dockerfile on a host with a registry";
    if find_program("apt-get").is_none() {
        return Err(missing.into());
    }
    progress.step(
        "installing debootstrap (once)",
        0,
        1,
        "apt-get install debootstrap",
    );
    tracing::warn!(
        "debootstrap is missing; installing it with apt-get (needed once to build sandbox images)"
    );
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "debootstrap"][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .await
            .map_err(|e| format!("{missing} (apt-get failed to run: {e})"))?;
        if !status.success() {
            return Err(format!(
                "{missing} (apt-get {} exited with {status})",
                args.join(" ")
            ));
        }
    }
    find_program("debootstrap").ok_or_else(|| missing.to_string())
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs debootstrap, turning its `I: Retrieving/Unpacking/Configuring` lines into progress.
async fn run_debootstrap(
    debootstrap: &Path,
    config: &ImagesConfig,
    packages: &[&str],
    rootfs: &Path,
    cache: &Path,
    progress: &BuildProgress,
) -> Result<(), String> {
    let mut child = Command::new(debootstrap)
        .arg("--variant=minbase")
        .arg(format!("--cache-dir={}", cache.display()))
        .arg(format!("--include={}", packages.join(",")))
        .arg(&config.suite)
        .arg(rootfs)
        .arg(&config.mirror)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run debootstrap: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let tail = tokio::spawn(last_lines(stderr));
    let mut lines = BufReader::new(stdout).lines();
    let mut counter = DebootstrapProgress::default();
    let mut recent = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some((phase, done, total, detail)) = counter.observe(&line) {
            progress.step(phase, done, total, detail);
        }
        keep_last(&mut recent, line);
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("debootstrap: {e}"))?;
    let err_tail = tail.await.unwrap_or_default();
    if !status.success() {
        let mut all = recent;
        all.extend(err_tail);
        return Err(format!(
            "debootstrap exited with {status} (is {} reachable?); last output:\n{}",
            config.mirror,
            all.join("\n")
        ));
    }
    Ok(())
}

/// Mounts that exist only while apt runs in the chroot; unmounted on drop, whatever happens.
struct ChrootMounts {
    mounted: Vec<PathBuf>,
}

impl ChrootMounts {
    async fn mount(rootfs: &Path) -> Result<Self, String> {
        let mut mounts = ChrootMounts {
            mounted: Vec::new(),
        };
        for (args, target) in [
            (vec!["-t", "proc", "proc"], rootfs.join("proc")),
            (vec!["--bind", "/dev"], rootfs.join("dev")),
        ] {
            std::fs::create_dir_all(&target)
                .map_err(|e| format!("create {}: {e}", target.display()))?;
            let status = Command::new("mount")
                .args(&args)
                .arg(&target)
                .status()
                .await
                .map_err(|e| format!("cannot run mount: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "mount {} {} failed ({status})",
                    args.join(" "),
                    target.display()
                ));
            }
            mounts.mounted.push(target);
        }
        Ok(mounts)
    }
}

impl Drop for ChrootMounts {
    fn drop(&mut self) {
        for target in self.mounted.iter().rev() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(target)
                .status();
        }
    }
}

/// Installs `packages` with apt inside the bootstrapped root filesystem. The host does the
/// downloading; no container, and so no network inside a container, is involved.
async fn apt_install_in_chroot(
    rootfs: &Path,
    packages: &[&str],
    progress: &BuildProgress,
) -> Result<(), String> {
    let policy = rootfs.join("usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n")
        .map_err(|e| format!("write policy-rc.d: {e}"))?;
    let _ = std::fs::set_permissions(&policy, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let _ = std::fs::copy("/etc/resolv.conf", rootfs.join("etc/resolv.conf"));
    let mounts = ChrootMounts::mount(rootfs).await?;
    let total = packages.len() as u64 * 2;
    let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    install.extend_from_slice(packages);
    let mut result = Ok(());
    for argv in [
        &["apt-get", "update", "-q"][..],
        &install[..],
        &["apt-get", "clean"][..],
    ] {
        result = run_in_chroot(rootfs, argv, progress, total).await;
        if result.is_err() {
            break;
        }
    }
    drop(mounts);
    let _ = std::fs::remove_file(&policy);
    let _ = std::fs::write(rootfs.join("etc/resolv.conf"), "");
    result
}

async fn run_in_chroot(
    rootfs: &Path,
    argv: &[&str],
    progress: &BuildProgress,
    total: u64,
) -> Result<(), String> {
    let mut child = Command::new("chroot")
        .arg(rootfs)
        .args(argv)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LANG", "C.UTF-8")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run chroot: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let errors = tokio::spawn(last_lines(child.stderr.take().expect("piped")));
    let mut lines = BufReader::new(stdout).lines();
    let mut done = 0u64;
    let mut last = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        for (prefix, phase) in [("Unpacking ", "unpacking"), ("Setting up ", "configuring")] {
            if let Some(rest) = line.strip_prefix(prefix) {
                done += 1;
                progress.step(
                    phase,
                    done,
                    total.max(done),
                    rest.split_whitespace().next().unwrap_or(""),
                );
            }
        }
        keep_last(&mut last, line);
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if !status.success() {
        last.extend(errors.await.unwrap_or_default());
        return Err(format!(
            "`{}` in the image root failed ({status}); last output:\n{}",
            argv.join(" "),
            last.join("\n")
        ));
    }
    Ok(())
}

/// Keeps the last 20 lines of some output, for error messages.
fn keep_last(lines: &mut Vec<String>, line: String) {
    lines.push(line);
    if lines.len() > 20 {
        lines.remove(0);
    }
}

async fn last_lines(stream: impl tokio::io::AsyncRead + Unpin) -> Vec<String> {
    let mut lines = BufReader::new(stream).lines();
    let mut tail = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        keep_last(&mut tail, line);
    }
    tail
}

/// Counts debootstrap's steps: every package is retrieved, extracted or unpacked, and
/// configured, so the total is about three steps a package once retrieval is done.
#[derive(Default)]
struct DebootstrapProgress {
    retrieved: u64,
    later_steps: u64,
}

impl DebootstrapProgress {
    fn observe<'a>(&mut self, line: &'a str) -> Option<(&'static str, u64, u64, &'a str)> {
        let rest = line.strip_prefix("I: ")?;
        let (phase, detail) = rest.split_once(' ').unwrap_or((rest, ""));
        let detail = detail.trim().trim_end_matches("...");
        let phase = match phase {
            "Retrieving"
                if detail != "InRelease" && detail != "Packages" && detail != "Release" =>
            {
                self.retrieved += 1;
                "retrieving"
            }
            "Extracting" | "Unpacking" => {
                self.later_steps += 1;
                "unpacking"
            }
            "Configuring" => {
                self.later_steps += 1;
                "configuring"
            }
            _ => return None,
        };
        let done = self.retrieved + self.later_steps;
        Some((phase, done, self.retrieved * 3, detail))
    }
}

/// Drops package caches and lists (smaller image, no stale state) and points apt at the
/// mirror for sandboxes that are given a network.
fn tidy_rootfs(rootfs: &Path, config: &ImagesConfig) -> std::io::Result<()> {
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let dir = rootfs.join(dir);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    std::fs::write(
        rootfs.join("etc/apt/sources.list"),
        format!("deb {} {} main\n", config.mirror, config.suite),
    )?;
    std::fs::write(rootfs.join("etc/hostname"), "sandbox\n")?;
    Ok(())
}

async fn tar_rootfs(rootfs: &Path, layer: &Path) -> Result<(), String> {
    let status = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(rootfs)
        .arg("-cf")
        .arg(layer)
        .arg(".")
        .status()
        .await
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("tar exited with {status}"))
    }
}

async fn tag_latest(engine: &DockerEngine, tag: &str, name: &str) -> Result<(), ImageError> {
    use bollard::image::TagImageOptions;
    let options = Some(TagImageOptions {
        repo: format!("berth/{name}"),
        tag: "latest".to_string(),
    });
    engine
        .client()
        .tag_image(tag, options)
        .await
        .map_err(|e| ImageError::BuildFailed {
            template: name.into(),
            reason: format!("tag latest: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debootstrap_lines_become_steps() {
        let mut p = DebootstrapProgress::default();
        assert!(p.observe("I: Retrieving InRelease ").is_none());
        assert_eq!(
            p.observe("I: Retrieving libc6 2.36")
                .map(|s| (s.0, s.1, s.2)),
            Some(("retrieving", 1, 3))
        );
        assert_eq!(
            p.observe("I: Retrieving bash 5.2").map(|s| (s.1, s.2)),
            Some((2, 6))
        );
        assert_eq!(
            p.observe("I: Unpacking bash...").map(|s| (s.0, s.1)),
            Some(("unpacking", 3))
        );
        assert_eq!(
            p.observe("I: Configuring bash...").map(|s| s.0),
            Some("configuring")
        );
        assert!(p.observe("W: something").is_none());
    }
}
