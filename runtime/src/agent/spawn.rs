//! Starting user processes: own process group, an unforgeable tag group so the whole
//! tree can be found again (even after `setsid` or a double fork), optional user switch,
//! and no way back to the capabilities that could remove the tag.

use super::reaper::{ExitStatus, Reaper};
use crate::wire::ENV_PROCESS_LIMIT;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

/// Supplementary group ids from here up tag exec trees; nothing in an image uses them.
pub(super) const TAG_GID_BASE: u32 = 2_100_000_000;
static NEXT_TAG: AtomicU32 = AtomicU32::new(0);

/// Capabilities a user process must never hold: they would let it drop its tag group.
const CAPS_TO_DROP: [libc::c_ulong; 3] = [
    6, // CAP_SETGID
    7, // CAP_SETUID
    8, // CAP_SETPCAP
];

/// Who a process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

/// What to start.
pub struct SpawnSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub user: Option<Credentials>,
}

/// A started process tree.
pub struct Spawned {
    pub pid: u32,
    pub tag: u32,
    pub stdin: pipe::Sender,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// A fresh tag group for a new process tree.
pub fn next_tag() -> u32 {
    TAG_GID_BASE + NEXT_TAG.fetch_add(1, Ordering::Relaxed) % 1_000_000_000
}

/// How long a spawn waits for room in a full pids limit before it answers EAGAIN.
const SPAWN_ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn spawn(reaper: &Reaper, spec: SpawnSpec) -> io::Result<Spawned> {
    let tag = next_tag();
    let mut command = Command::new(&spec.argv[0]);
    command
        .args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let user = spec.user;
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls.
    unsafe {
        command.pre_exec(move || drop_into_sandbox_identity(tag, user));
    }
    // EAGAIN: the pids limit is full, often with a tree that was just killed and is not
    // reaped yet (`kill_tree` gives a bomb up to 5 s); short waits (outside the reaper's
    // lock, so it can reap) let it go, as long as that.
    let mut pause = std::time::Duration::from_millis(10);
    let mut waited = std::time::Duration::ZERO;
    let (mut child, exit) = loop {
        match reaper.spawn_watched(|| command.spawn()) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && waited < SPAWN_ROOM_WAIT => {
                std::thread::sleep(pause);
                waited += pause;
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            other => break other?,
        }
    };
    let stdin = pipe::Sender::from_owned_fd(OwnedFd::from(child.stdin.take().expect("piped")))?;
    let stdout = pipe::Receiver::from_owned_fd(OwnedFd::from(child.stdout.take().expect("piped")))?;
    let stderr = pipe::Receiver::from_owned_fd(OwnedFd::from(child.stderr.take().expect("piped")))?;
    Ok(Spawned {
        pid: child.id(),
        tag,
        stdin,
        stdout,
        stderr,
        exit,
    })
}

/// Processes user code may have at once, set from [`ENV_PROCESS_LIMIT`] (0: no such
/// bound, the host's pids limit holds).
static PROCESS_LIMIT: AtomicU64 = AtomicU64::new(0);

/// Reads the process limit from the agent's environment (once, at start).
pub fn load_process_limit() {
    if let Some(n) = std::env::var(ENV_PROCESS_LIMIT)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        PROCESS_LIMIT.store(n, Ordering::Relaxed);
    }
}

/// Runs in the forked child: tag group, user switch, capability bounding, OOM preference.
pub fn drop_into_sandbox_identity(tag: u32, user: Option<Credentials>) -> io::Result<()> {
    let gid = user.map_or(0, |u| u.gid);
    let groups: [libc::gid_t; 2] = [gid, tag];
    let nproc = PROCESS_LIMIT.load(Ordering::Relaxed);
    // SAFETY: raw syscalls with valid pointers, async-signal-safe.
    unsafe {
        if nproc > 0 {
            let limit = libc::rlimit {
                rlim_cur: nproc,
                rlim_max: nproc,
            };
            if libc::setrlimit(libc::RLIMIT_NPROC, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(user) = user {
            if libc::setgid(user.gid) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        for cap in CAPS_TO_DROP {
            // EPERM (no CAP_SETPCAP) or EINVAL: the agent already lacks what it would drop.
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        if let Some(user) = user {
            if libc::setuid(user.uid) != 0 {
                return Err(io::Error::last_os_error());
            }
            if user.uid != 0 {
                // Linux clears every capability on this setuid; gVisor (runsc 20221219)
                // keeps the effective set, so it is cleared here by hand.
                drop_all_capabilities()?;
            }
        }
        super::seccomp::install()?;
        // Make user processes the OOM killer's first choice rather than PID 1.
        let path = b"/proc/self/oom_score_adj\0";
        let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            let value = b"800";
            libc::write(fd, value.as_ptr().cast(), value.len());
            libc::close(fd);
        }
    }
    Ok(())
}

/// Empties the calling process's permitted, effective, inheritable and ambient
/// capability sets (async-signal-safe: raw syscalls only).
fn drop_all_capabilities() -> io::Result<()> {
    // SAFETY: prctl(2) with constant arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    super::identity::change_capabilities(|word| *word = Default::default())
}

/// Kills every process of a tree: its process group, then anything still carrying the
/// tag group (escapees that called `setsid` or double-forked), until none is left.
pub fn kill_tree(pgid: u32, tag: u32) {
    // SAFETY: kill(2) on a process group we created.
    unsafe {
        libc::kill(-(pgid as i32), libc::SIGKILL);
    }
    // A fork bomb keeps forking while it is killed, and killed is not gone: until the
    // reaper collects them, the dead still count against the pids limit, and the next
    // exec's shell could not fork. So kill what lives and wait out the zombies, until
    // the tag is on no process at all (or a deadline a bomb cannot hold us past).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let tagged = tagged_processes(tag);
        if tagged.live.is_empty() && !tagged.zombies {
            break;
        }
        for pid in &tagged.live {
            // SAFETY: kill(2) with a pid read from /proc.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        if tagged.live.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// The processes whose supplementary groups include a tag group.
struct Tagged {
    /// Running (not zombie) ones, by pid.
    live: Vec<i32>,
    /// Whether any is a zombie (killed, not yet reaped).
    zombies: bool,
}

fn tagged_processes(gid: u32) -> Tagged {
    let mut tagged = Tagged {
        live: Vec::new(),
        zombies: false,
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return tagged;
    };
    let needle = gid.to_string();
    for pid in dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let in_group = status
            .lines()
            .find(|l| l.starts_with("Groups:"))
            .is_some_and(|l| l.split_whitespace().skip(1).any(|g| g == needle));
        if !in_group {
            continue;
        }
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        if zombie {
            tagged.zombies = true;
        } else {
            tagged.live.push(pid);
        }
    }
    tagged
}

/// Sends a signal to a process group (the `kill` route).
pub fn signal_group(pgid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2).
    if unsafe { libc::kill(-(pgid as i32), signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Why a `user` did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserError {
    /// Not a `uid:gid` pair of numbers, or a corrupt passwd entry.
    Malformed(String),
    /// No such name in the sandbox's /etc/passwd.
    Unknown(String),
}

/// Resolves `user` ("name", "uid" or "uid:gid") against the sandbox's own /etc/passwd.
pub fn resolve_user(user: &str) -> Result<Credentials, UserError> {
    let bad = |what: &str| UserError::Malformed(format!("bad {what} in user {user:?}"));
    if let Some((u, g)) = user.split_once(':') {
        let uid = u.parse().map_err(|_| bad("uid"))?;
        let gid = g.parse().map_err(|_| bad("gid"))?;
        return Ok(Credentials { uid, gid });
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 {
            continue;
        }
        if fields[0] == user || fields[2] == user {
            let corrupt = || UserError::Malformed(format!("bad /etc/passwd entry for {user:?}"));
            let uid = fields[2].parse().map_err(|_| corrupt())?;
            let gid = fields[3].parse().map_err(|_| corrupt())?;
            return Ok(Credentials { uid, gid });
        }
    }
    match user.parse::<u32>() {
        Ok(uid) => Ok(Credentials { uid, gid: uid }),
        Err(_) => Err(UserError::Unknown(format!(
            "no user {user:?} in the sandbox's /etc/passwd"
        ))),
    }
}
