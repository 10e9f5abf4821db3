//! Bounds on writes to one loop device, set in the host's root blkio cgroup. Under
//! cgroup v1 the kernel's flusher writes a sandbox's dirty pages back on behalf of the
//! root group, not the container's, so only a rule at the root (where every write to
//! the device passes) holds a sandbox filling its disk to its rate. Under cgroup v2 the
//! root has no such rule and writeback is charged to the container, whose own rule
//! (Docker's `BlkioDeviceWriteBps`) is set instead.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Where cgroup v1 keeps the root group's write rules.
const ROOT_BLKIO: &str = "/sys/fs/cgroup/blkio";

/// At most `bytes_per_s` and `iops` of writes to a device (0: unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimit {
    pub bytes_per_s: u64,
    pub iops: u64,
}

impl WriteLimit {
    pub fn is_unbounded(&self) -> bool {
        self.bytes_per_s == 0 && self.iops == 0
    }
}

/// `major:minor` of a block device node.
fn device_number(device: &str) -> std::io::Result<String> {
    let rdev = std::fs::metadata(device)?.rdev();
    Ok(format!("{}:{}", libc::major(rdev), libc::minor(rdev)))
}

/// Sets (or, with an unbounded limit, clears) the root group's rules for `device`.
/// Without cgroup v1's blkio hierarchy there is nothing to set: `Ok(false)`.
pub fn apply(device: &str, limit: WriteLimit) -> std::io::Result<bool> {
    let root = Path::new(ROOT_BLKIO);
    if !root.join("blkio.throttle.write_bps_device").exists() {
        return Ok(false);
    }
    let number = device_number(device)?;
    for (file, value) in [
        ("blkio.throttle.write_bps_device", limit.bytes_per_s),
        ("blkio.throttle.write_iops_device", limit.iops),
    ] {
        // Writing 0 removes a rule (and is refused where there is none to remove).
        let written = std::fs::write(root.join(file), format!("{number} {value}\n"));
        if value != 0 {
            written?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_number_is_major_colon_minor() {
        assert_eq!(device_number("/dev/null").unwrap(), "1:3");
        assert!(device_number("/no/such/device").is_err());
    }
}
