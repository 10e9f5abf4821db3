//! Fixed-size filesystems for sandbox volumes: a sparse file under the data dir,
//! formatted ext4 with a bounded number of inodes and its root owned by the sandbox user,
//! attached to a loop device that Docker's `local` volume driver mounts (`type=ext4`,
//! `device=/dev/loopN`, `nosuid,nodev`). Writes past its size get ENOSPC inside the
//! sandbox; the host's own free space is untouched. Needs root, `losetup`, `mkfs.ext4`
//! and `debugfs` (e2fsprogs); [`Disks::probe`] says what is missing.

mod throttle;

pub use throttle::WriteLimit;

use std::path::{Path, PathBuf};
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk quotas are not available here: {0}")]
    Unavailable(String),
    #[error("{operation} failed for {name}: {message}")]
    Failed {
        operation: &'static str,
        name: String,
        message: String,
    },
}

/// Bytes of volume per inode (ext4's default ratio): a 2 GiB volume holds 131072 files.
pub const BYTES_PER_INODE: u64 = 16 * 1024;
/// The smallest volume that can be made (ext4 with a journal needs a few MiB).
pub const MIN_DISK_MB: u64 = 16;

/// The disk images of one data dir.
#[derive(Clone, Debug)]
pub struct Disks {
    dir: PathBuf,
    /// Owner of every new filesystem's root (the sandbox user).
    owner: (u32, u32),
    /// How fast a sandbox may write to its volume.
    write_limit: WriteLimit,
}

impl Disks {
    pub fn new(dir: PathBuf, owner: (u32, u32), write_limit: WriteLimit) -> Self {
        Disks {
            dir,
            owner,
            write_limit,
        }
    }

    pub fn write_limit(&self) -> WriteLimit {
        self.write_limit
    }

    /// Holds `device` to the write limit (for the kernel's writeback, which no
    /// container's cgroup sees under cgroup v1).
    fn throttle(&self, name: &str, device: &str) -> Result<(), DiskError> {
        throttle::apply(device, self.write_limit)
            .map(|_| ())
            .map_err(|e| DiskError::Failed {
                operation: "blkio throttle",
                name: name.to_string(),
                message: e.to_string(),
            })
    }

    /// Whether loop-backed volumes can be made here; why not otherwise.
    pub async fn probe(&self) -> Result<(), DiskError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(DiskError::Unavailable(
                "berth does not run as root (loop devices need it)".into(),
            ));
        }
        for tool in ["losetup", "mkfs.ext4", "debugfs"] {
            let found = Command::new(tool).arg("-V").output().await;
            if found.is_err() {
                return Err(DiskError::Unavailable(format!(
                    "`{tool}` is missing (apt-get install util-linux e2fsprogs)"
                )));
            }
        }
        if !Path::new("/dev/loop-control").exists() {
            return Err(DiskError::Unavailable(
                "/dev/loop-control is missing (no loop device support)".into(),
            ));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            DiskError::Unavailable(format!("cannot create {}: {e}", self.dir.display()))
        })?;
        Ok(())
    }

    pub fn image(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.img"))
    }

    /// Makes the filesystem of volume `name` (`size_mb`), attached; its loop device.
    pub async fn create(&self, name: &str, size_mb: u64) -> Result<String, DiskError> {
        let image = self.image(name);
        let size_mb = size_mb.max(MIN_DISK_MB);
        let failed = |operation, message: String| DiskError::Failed {
            operation,
            name: name.to_string(),
            message,
        };
        let made = async {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&image)
                .map_err(|e| failed("create image", e.to_string()))?;
            file.set_len(size_mb * 1024 * 1024)
                .map_err(|e| failed("size image", e.to_string()))?;
            drop(file);
            let inodes = (size_mb * 1024 * 1024 / BYTES_PER_INODE).max(1024);
            let (uid, gid) = self.owner;
            run(
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-m",
                    "0",
                    "-N",
                    &inodes.to_string(),
                    "-E",
                    &format!(
                        "root_owner={uid}:{gid},lazy_itable_init=1,lazy_journal_init=1,nodiscard"
                    ),
                    &image.display().to_string(),
                ],
            )
            .await
            .map_err(|m| failed("mkfs.ext4", m))?;
            // The workspace starts empty: no lost+found in it.
            run(
                "debugfs",
                &["-w", "-R", "rmdir lost+found", &image.display().to_string()],
            )
            .await
            .map_err(|m| failed("debugfs", m))?;
            self.attach(name).await
        }
        .await;
        if made.is_err() {
            let _ = self.remove(name).await;
        }
        made
    }

    /// The loop device `name`'s image is attached to, attaching it if it is not (after a
    /// host restart, loop devices are gone).
    pub async fn attach(&self, name: &str) -> Result<String, DiskError> {
        let image = self.image(name);
        if let Some(device) = self.device(name).await? {
            self.throttle(name, &device)?;
            return Ok(device);
        }
        // Two attaches racing for one free device: the loser tries the next one.
        let mut last = String::new();
        for _ in 0..5 {
            match run(
                "losetup",
                &[
                    "--find",
                    "--show",
                    "--direct-io=on",
                    &image.display().to_string(),
                ],
            )
            .await
            {
                Ok(out) => {
                    let device = out.trim().to_string();
                    self.throttle(name, &device)?;
                    return Ok(device);
                }
                Err(m) => last = m,
            }
        }
        Err(DiskError::Failed {
            operation: "losetup",
            name: name.to_string(),
            message: last,
        })
    }

    /// The loop device `name`'s image is attached to now, if any.
    pub async fn device(&self, name: &str) -> Result<Option<String>, DiskError> {
        Ok(self.devices(name).await?.into_iter().next())
    }

    /// Every loop device `name`'s image is attached to now.
    async fn devices(&self, name: &str) -> Result<Vec<String>, DiskError> {
        let image = self.image(name).display().to_string();
        let listed = run(
            "losetup",
            &["--noheadings", "--output", "NAME", "-j", &image],
        )
        .await
        .map_err(|m| DiskError::Failed {
            operation: "losetup -j",
            name: name.to_string(),
            message: m,
        })?;
        Ok(listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Detaches the loop devices of `name`'s image and removes the image. A missing one
    /// counts as removed. A device still in use (mounted) is detached by the kernel at
    /// its last close (`losetup -d` sets autoclear), and the image's blocks are freed then.
    pub async fn remove(&self, name: &str) -> Result<(), DiskError> {
        let image = self.image(name);
        for device in self.devices(name).await.unwrap_or_default() {
            // The next image on this device is not held to this one's rule.
            let _ = throttle::apply(
                &device,
                WriteLimit {
                    bytes_per_s: 0,
                    iops: 0,
                },
            );
            run("losetup", &["-d", &device])
                .await
                .map_err(|m| DiskError::Failed {
                    operation: "losetup -d",
                    name: name.to_string(),
                    message: m,
                })?;
        }
        match std::fs::remove_file(&image) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DiskError::Failed {
                operation: "remove image",
                name: name.to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// Detaches loop devices whose image here was removed while they were attached (a
    /// crash between the two steps of [`Disks::remove`] cannot cause it, a hand can).
    /// Returns how many.
    pub async fn detach_orphans(&self) -> Result<usize, DiskError> {
        let listed = run(
            "losetup",
            &["--list", "--noheadings", "--output", "NAME,BACK-FILE"],
        )
        .await
        .map_err(|m| DiskError::Failed {
            operation: "losetup --list",
            name: "*".into(),
            message: m,
        })?;
        let dir = self.dir.display().to_string();
        let mut detached = 0;
        for line in listed.lines() {
            let Some((device, file)) = line.trim().split_once(char::is_whitespace) else {
                continue;
            };
            let file = file.trim();
            let ours = file.starts_with(&format!("{dir}/")) && file.contains(".img");
            let gone = file.ends_with("(deleted)") || !Path::new(file).exists();
            if ours && gone && run("losetup", &["-d", device]).await.is_ok() {
                detached += 1;
            }
        }
        Ok(detached)
    }

    /// Volume names that have an image here.
    pub fn names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".img")
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Bytes a volume's image takes on the host (what its sandbox wrote, not its size).
    pub fn allocated_bytes(&self, name: &str) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.image(name))
            .ok()
            .map(|m| m.blocks() * 512)
    }
}

/// Runs `program args`; its stdout, or its stderr as the error.
async fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
