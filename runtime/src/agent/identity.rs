//! Who sandbox code runs as: the unprivileged `user` (uid 1000, home on the workspace)
//! unless a sandbox made with `allow_root` asks for root. The agent adds that user to the
//! image's /etc/passwd when it is missing, gives it the workspace, and hands it what the
//! file routes create.

use super::error::AgentError;
use super::spawn::{resolve_user, Credentials, UserError};
use crate::wire::{SANDBOX_USER_IDS, SANDBOX_USER_NAME};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The default user's credentials.
pub const DEFAULT_USER: Credentials = Credentials {
    uid: SANDBOX_USER_IDS.0,
    gid: SANDBOX_USER_IDS.1,
};

/// Credentials for an exec's `user` (the default user when none is given); uid or gid 0
/// only when `allow_root`.
pub fn credentials_for(user: Option<&str>, allow_root: bool) -> Result<Credentials, AgentError> {
    let creds = match user {
        None => DEFAULT_USER,
        Some(name) => resolve_user(name).map_err(|e| match e {
            // A name the sandbox does not know: missing, like a missing file.
            UserError::Unknown(m) => AgentError::NotFound(m),
            UserError::Malformed(m) => AgentError::BadRequest(m),
        })?,
    };
    if (creds.uid == 0 || creds.gid == 0) && !allow_root {
        return Err(AgentError::Forbidden(format!(
            "user {:?} is root; this sandbox runs code as `{SANDBOX_USER_NAME}` (uid {}) \
             only. Create it with \"allow_root\": true to run as root",
            user.unwrap_or("root"),
            DEFAULT_USER.uid
        )));
    }
    Ok(creds)
}

/// `HOME`, `USER` and `LOGNAME` for processes of `creds`.
pub fn identity_env(creds: Credentials, workdir: &Path) -> Vec<(String, String)> {
    let (name, home) = match passwd_entry(creds.uid) {
        Some((name, home)) => (name, home),
        None if creds.uid == 0 => ("root".to_string(), "/root".to_string()),
        None => (creds.uid.to_string(), workdir.display().to_string()),
    };
    vec![
        ("HOME".to_string(), home),
        ("USER".to_string(), name.clone()),
        ("LOGNAME".to_string(), name),
    ]
}

/// Name and home of `uid` in the sandbox's /etc/passwd.
fn passwd_entry(uid: u32) -> Option<(String, String)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[2] == uid.to_string())
            .then(|| (fields[0].to_string(), fields[5].to_string()))
    })
}

/// At start: the default user exists in /etc/passwd and /etc/group (home on the
/// workdir, a shell the image has), and owns the workdir. Failures are reported, not
/// fatal: numeric credentials work without an entry.
pub fn prepare_default_user(workdir: &Path) {
    let (uid, gid) = SANDBOX_USER_IDS;
    let shell = ["/bin/bash", "/bin/sh"]
        .into_iter()
        .find(|s| Path::new(s).exists())
        .unwrap_or("/bin/sh");
    if passwd_entry(uid).is_none() {
        let line = format!(
            "{SANDBOX_USER_NAME}:x:{uid}:{gid}:sandbox user:{}:{shell}\n",
            workdir.display()
        );
        append("/etc/passwd", &line);
    }
    let has_group = std::fs::read_to_string("/etc/group").is_ok_and(|g| {
        g.lines()
            .any(|l| l.split(':').nth(2) == Some(gid.to_string().as_str()))
    });
    if !has_group {
        append("/etc/group", &format!("{SANDBOX_USER_NAME}:x:{gid}:\n"));
    }
    // A fresh volume's root belongs to root (a loop-backed one is made for the user).
    if std::fs::symlink_metadata(workdir).is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0 && m.is_dir()
    }) {
        own(workdir);
    }
}

fn append(path: &str, line: &str) {
    let written = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("berth-agent: cannot add the sandbox user to {path}: {e}");
    }
}

/// While alive, the calling thread's effective (and so filesystem) identity is the
/// default user's: file routes act with exactly that user's rights, so paths user code
/// planted (symlinks, swapped directories) reach nothing it could not reach itself.
/// Raw `setresuid`/`setresgid` change only the calling thread (libc's wrappers would
/// change every thread); the real and saved ids stay 0, so dropping this restores root.
/// (`setfsuid` would do on Linux, but gVisor ignores it; it honours these.)
pub struct ActingAsUser(());

impl ActingAsUser {
    pub fn enter() -> ActingAsUser {
        let keep = libc::c_long::from(-1i32);
        // SAFETY: raw setresgid/setresuid(2) on the calling thread only.
        unsafe {
            libc::syscall(
                libc::SYS_setresgid,
                keep,
                libc::c_long::from(DEFAULT_USER.gid),
                keep,
            );
            libc::syscall(
                libc::SYS_setresuid,
                keep,
                libc::c_long::from(DEFAULT_USER.uid),
                keep,
            );
        }
        // Linux has just emptied the effective set; gVisor keeps it, so it goes by hand.
        set_effective_capabilities(false);
        ActingAsUser(())
    }
}

/// Sets this thread's effective capabilities to none, or back to its permitted set.
fn set_effective_capabilities(on: bool) {
    let _ = change_capabilities(|word| word.effective = if on { word.permitted } else { 0 });
}

/// One 32-bit word of each capability set (capget/capset, version 3).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CapWord {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

/// Reads the calling thread's capability sets, lets `change` rewrite each word, and
/// writes them back (raw syscalls only: safe between fork and exec).
pub fn change_capabilities(change: impl Fn(&mut CapWord)) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut words = [CapWord::default(); 2];
    // SAFETY: capget/capset(2) on the calling thread with a version-3 header and two
    // data words.
    unsafe {
        if libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            words.as_mut_ptr(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        words.iter_mut().for_each(change);
        if libc::syscall(libc::SYS_capset, &header as *const Header, words.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Drop for ActingAsUser {
    fn drop(&mut self) {
        let keep = libc::c_long::from(-1i32);
        // SAFETY: as above; the effective uid first (its return to 0 gives back the
        // capabilities that changing the gid needs).
        unsafe {
            libc::syscall(libc::SYS_setresuid, keep, 0 as libc::c_long, keep);
        }
        set_effective_capabilities(true);
        // SAFETY: as above.
        unsafe {
            libc::syscall(libc::SYS_setresgid, keep, 0 as libc::c_long, keep);
        }
    }
}

/// Gives `path` (not what a symlink there points to) to the default user.
pub fn own(path: &Path) {
    chown_to(path, DEFAULT_USER);
}

/// Gives `path` (not a symlink's target) to `owner`; errors are ignored (a read-only or
/// foreign filesystem keeps its owners).
pub fn chown_to(path: &Path, owner: Credentials) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: lchown(2) with a valid NUL-terminated path.
    unsafe {
        libc::lchown(c.as_ptr(), owner.uid, owner.gid);
    }
}

/// `create_dir_all`, with every directory it creates owned by the default user.
pub fn create_dirs_owned(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        own(created);
    }
    Ok(())
}

/// Gives every entry under `root` (not `root` itself) to the default user, never
/// following a symlink.
pub fn own_tree_below(root: &Path) {
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .flatten()
    {
        own(entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_needs_allow_root() {
        assert_eq!(credentials_for(None, false).unwrap(), DEFAULT_USER);
        for root in ["root", "0", "0:0", "1000:0"] {
            let refused = credentials_for(Some(root), false).unwrap_err();
            assert!(
                matches!(refused, AgentError::Forbidden(ref m) if m.contains("allow_root")),
                "{root}: {refused:?}"
            );
            let allowed = credentials_for(Some(root), true).unwrap();
            assert!(allowed.uid == 0 || allowed.gid == 0);
        }
        assert_eq!(
            credentials_for(Some("1234:1234"), false).unwrap(),
            Credentials {
                uid: 1234,
                gid: 1234
            }
        );
    }
}
