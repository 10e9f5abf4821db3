//! Holds user processes to the sandbox's memory where the host's OOM killer cannot do it
//! alone: under gVisor the host sees one process (its kernel) holding all of the
//! sandbox's memory, so a memory bomb made the host kill that kernel and the sandbox with
//! it. Set by [`ENV_MEMORY_LIMIT`] (the supervisor leaves the container's own limit room
//! above it), a thread reads the sandbox kernel's `/proc/meminfo` and, past the limit,
//! kills the user process with the most resident memory, as Linux's OOM killer would.

use crate::wire::{ENV_MEMORY_LIMIT, GUARD_KILLS_PATH};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Kills made so far (added to the cgroup's `oom_kill` count that execs report).
static KILLS: AtomicU64 = AtomicU64::new(0);

/// The fastest a process has filled memory under gVisor here (1.6 GB/s measured), with
/// room: the guard samples again before a bomb could cross the container's own limit.
const FASTEST_FILL_BYTES_PER_S: u64 = 4 << 30;
/// Bounds on the pause between two samples.
const MIN_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Processes the guard killed since the agent started.
pub fn kills() -> u64 {
    KILLS.load(Ordering::SeqCst)
}

/// Writes the count to [`GUARD_KILLS_PATH`] (replaced whole, so a reader never sees half).
fn publish(kills: u64) {
    use std::os::unix::fs::PermissionsExt;
    let path = std::path::Path::new(GUARD_KILLS_PATH);
    let temp = path.with_extension("tmp");
    let written = std::fs::write(&temp, format!("oom_kill {kills}\n"))
        .and_then(|_| std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644)))
        .and_then(|_| std::fs::rename(&temp, path));
    if let Err(e) = written {
        eprintln!("berth-agent: cannot write {GUARD_KILLS_PATH}: {e}");
    }
}

/// Makes the count's directory (root's, before any user code runs) and publishes 0.
fn prepare_count() {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = std::path::Path::new(GUARD_KILLS_PATH).parent() {
        let made = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)));
        if let Err(e) = made {
            eprintln!("berth-agent: cannot make {}: {e}", dir.display());
        }
    }
    publish(0);
}

/// Starts the guard when the supervisor asked for one.
pub fn start() {
    let Some(limit) = std::env::var(ENV_MEMORY_LIMIT)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&v| v > 0)
    else {
        return;
    };
    prepare_count();
    let spawned = std::thread::Builder::new()
        .name("memory-guard".into())
        .spawn(move || guard(limit));
    if let Err(e) = spawned {
        eprintln!("berth-agent: cannot start the memory guard: {e}");
    }
}

fn guard(limit: u64) {
    loop {
        let (total, used) = memory_in_use().unwrap_or((limit, 0));
        if used > limit {
            // A process holding less than this is not what filled the memory (tmpfs
            // files or the kernel's lag are): killing it would free nothing.
            if let Some(pid) = largest_user_process(limit / 8) {
                // Counted first: the exec that waits for this process reads the count
                // as soon as it is reaped (and the harness reads the file).
                let kills = KILLS.fetch_add(1, Ordering::SeqCst) + 1;
                publish(kills);
                // SAFETY: kill(2); a pid that just ended is harmless (ESRCH).
                if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                    wait_released(pid, limit);
                } else {
                    publish(KILLS.fetch_sub(1, Ordering::SeqCst) - 1);
                }
            }
        }
        std::thread::sleep(pause(total, used));
    }
}

/// Half the time the fastest bomb needs to fill what is left below `total` (the
/// container's limit, which gVisor reports as `MemTotal`).
fn pause(total: u64, used: u64) -> Duration {
    let margin = total.saturating_sub(used);
    Duration::from_secs_f64(margin as f64 / FASTEST_FILL_BYTES_PER_S as f64 / 2.0)
        .clamp(MIN_PAUSE, MAX_PAUSE)
}

/// `MemTotal` and the bytes in use of the kernel the sandbox runs on: what is neither
/// available nor the file cache, which that kernel evicts under pressure (Linux's
/// memory cgroup reclaims it too before it kills anything). Anonymous memory and tmpfs
/// count, as they do for a memory cgroup.
fn memory_in_use() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    used_from_meminfo(&text)
}

fn used_from_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:").or_else(|| field("MemFree:"))?;
    let file = field("Active(file):").unwrap_or(0) + field("Inactive(file):").unwrap_or(0);
    Some((total, total.saturating_sub(available).saturating_sub(file)))
}

/// The process other than the agent with the most resident memory, if it holds at least
/// `at_least` bytes.
fn largest_user_process(at_least: u64) -> Option<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && pid != 1)
        .filter_map(|pid| Some((resident_bytes(pid)?, pid)))
        .filter(|&(bytes, _)| bytes >= at_least)
        .max()
        .map(|(_, pid)| pid)
}

/// Resident memory of `pid` (`None` once it is gone).
fn resident_bytes(pid: i32) -> Option<u64> {
    // SAFETY: sysconf(3) has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page)
}

/// Waits (up to half a second) until a killed process is gone and the memory in use is
/// back under the limit: the kernel frees a dead process's memory after a while, and
/// until it has, the next largest process is not to blame.
fn wait_released(pid: i32, limit: u64) {
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < deadline {
        let gone = resident_bytes(pid).is_none_or(|bytes| bytes == 0);
        if gone && memory_in_use().is_none_or(|(_, used)| used <= limit) {
            return;
        }
        std::thread::sleep(MIN_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_in_use_is_total_less_available_and_file_cache() {
        let text = "MemTotal:         131072 kB\nMemFree:          100000 kB\nMemAvailable:     110000 kB\nActive(file):       772 kB\nInactive(file):     228 kB\n";
        assert_eq!(
            used_from_meminfo(text),
            Some((131072 * 1024, (131072 - 110000 - 1000) * 1024))
        );
        let no_available = "MemTotal: 100 kB\nMemFree: 40 kB\n";
        assert_eq!(
            used_from_meminfo(no_available),
            Some((100 * 1024, 60 * 1024))
        );
        assert_eq!(used_from_meminfo("garbage"), None);
    }

    #[test]
    fn the_guard_samples_faster_as_the_margin_shrinks() {
        let mib = 1 << 20;
        assert_eq!(pause(2048 * mib, 16 * mib), MAX_PAUSE);
        let near = pause(384 * mib, 300 * mib);
        assert!(near < Duration::from_millis(15), "{near:?}");
        assert_eq!(pause(384 * mib, 400 * mib), MIN_PAUSE);
    }
}
