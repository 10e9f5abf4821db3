//! Holds user processes to the sandbox's memory where the host's OOM killer cannot do it
//! alone: under gVisor the host sees one process (its kernel) holding all of the
//! sandbox's memory, so a memory bomb made the host kill that kernel and the sandbox with
//! it. Set by [`ENV_MEMORY_LIMIT`] (the supervisor leaves the container's own limit room
//! above it), a thread reads the sandbox kernel's `/proc/meminfo` and, past the limit,
//! kills the user process with the most resident memory, as Linux's OOM killer would.

use crate::wire::ENV_MEMORY_LIMIT;
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
    KILLS.load(Ordering::Relaxed)
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
            if let Some(pid) = largest_user_process() {
                // SAFETY: kill(2); a pid that just ended is harmless (ESRCH).
                if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                    KILLS.fetch_add(1, Ordering::Relaxed);
                    wait_gone(pid);
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

/// `MemTotal` and the bytes in use (`MemTotal - MemAvailable`) of the kernel the
/// sandbox runs on.
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
    Some((total, total.saturating_sub(available)))
}

/// The process other than the agent with the most resident pages.
fn largest_user_process() -> Option<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && pid != 1)
        .filter_map(|pid| {
            let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
            let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
            Some((resident, pid))
        })
        .max()
        .map(|(_, pid)| pid)
}

/// Waits (briefly) until a killed process has released its memory, so one bomb is not
/// counted, and its neighbours killed, several times over.
fn wait_gone(pid: i32) {
    let statm = format!("/proc/{pid}/statm");
    for _ in 0..500 {
        match std::fs::read_to_string(&statm) {
            Ok(s) if s.split_whitespace().nth(1) != Some("0") => {
                std::thread::sleep(Duration::from_millis(1))
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_in_use_is_total_less_available() {
        let text = "MemTotal:         131072 kB\nMemFree:          100000 kB\nMemAvailable:     110000 kB\n";
        assert_eq!(
            used_from_meminfo(text),
            Some((131072 * 1024, (131072 - 110000) * 1024))
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
        assert_eq!(pause(384 * mib, 16 * mib), MAX_PAUSE);
        let near = pause(384 * mib, 300 * mib);
        assert!(near < Duration::from_millis(15), "{near:?}");
        assert_eq!(pause(384 * mib, 400 * mib), MIN_PAUSE);
    }
}
