//! Tenants share the CPU as equals. Each tenant's sandboxes sit under one cgroup of the
//! default weight (Docker's `CgroupParent`), so the kernel splits the host between
//! tenants first and between a tenant's sandboxes second: ten busy sandboxes of one
//! tenant weigh what one sandbox of another does. Warm-pool sandboxes sit under the
//! pool's group (it weighs what one tenant does), and an adopted one stays there until
//! its next start: a container's cgroup is fixed when it is made.

use super::SandboxService;
use crate::domain::TenantId;
use sha2::{Digest, Sha256};

/// A name made of `[a-z0-9]` for `text`, which neither cgroup driver splits.
fn token(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))[..12].to_string()
}

impl SandboxService {
    /// The cgroup parent of `tenant`'s containers, or `None` where the engine has no
    /// cgroups.
    pub(super) fn tenant_cgroup(&self, tenant: &TenantId) -> Option<String> {
        let instance = format!("i{}", token(&self.instance));
        let tenant = format!("t{}", token(tenant.as_str()));
        self.docker
            .cgroup_driver()
            .parent(&["berth", &instance, &tenant])
    }
}

/// Removes this instance's tenant groups that no container uses any more (cgroupfs
/// only: systemd removes empty slices itself). Best effort: a group in use, or a host
/// where berth cannot write cgroups, keeps them. Returns how many went.
pub fn remove_empty_groups(instance: &str) -> usize {
    let instance = format!("i{}", token(instance));
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return 0;
    };
    let mut removed = 0;
    for controller in controllers.flatten() {
        let dir = controller.path().join("berth").join(&instance);
        let Ok(groups) = std::fs::read_dir(&dir) else {
            continue;
        };
        for group in groups.flatten() {
            // rmdir on a cgroup fails while it has members or children.
            if group.path().is_dir() && std::fs::remove_dir(group.path()).is_ok() {
                removed += 1;
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::CgroupDriver;

    #[test]
    fn groups_nest_per_driver_and_names_never_carry_a_separator() {
        let name = token("tenant-with-dashes/and/slashes");
        assert_eq!(name.len(), 12);
        assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(name, token("another"));
        assert_eq!(
            CgroupDriver::Cgroupfs
                .parent(&["berth", "i1", "t2"])
                .as_deref(),
            Some("/berth/i1/t2")
        );
        assert_eq!(
            CgroupDriver::Systemd
                .parent(&["berth", "i1", "t2"])
                .as_deref(),
            Some("berth-i1-t2.slice")
        );
        assert_eq!(CgroupDriver::None.parent(&["berth"]), None);
    }
}
