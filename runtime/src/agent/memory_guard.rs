//! Holds user processes to the sandbox's memory where the host's OOM killer cannot do it
//! alone: under gVisor the host sees one process (its kernel) holding all of the
//! sandbox's memory, so a memory bomb made the host kill that kernel and the sandbox with
//! it. Set by [`ENV_MEMORY_LIMIT`] (the supervisor leaves the container's own limit room
//! above it), a thread reads the sandbox kernel's `/proc/meminfo` and, past the limit,
//! kills the user process with the most resident memory, as Linux's OOM killer would (or,
//! when none is big enough alone, the process group or exec tree holding the most).

use crate::wire::{ENV_MEMORY_LIMIT, GUARD_KILLS_PATH};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Kills made so far (added to the cgroup's `oom_kill` count that execs report).
static KILLS: AtomicU64 = AtomicU64::new(0);

/// The fastest a process has filled memory under gVisor here (1.6 GB/s measured), with
/// room: the guard samples again before a bomb could cross the container's own limit.
const FASTEST_FILL_BYTES_PER_S: u64 = 4 << 30;
/// Bounds on the pause between two samples.
const MIN_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(100);
/// The pause while no user process runs (none can fill memory): a start of user code
/// ([`user_code_started`]) ends it at once. Sampling an idle gVisor sandbox 10 to 50
/// times a second kept its kernel's threads waking.
const IDLE_PAUSE: Duration = Duration::from_secs(1);

/// Set when user code starts, so the guard samples again at once.
static STARTED: Mutex<bool> = Mutex::new(false);
static BELL: Condvar = Condvar::new();

/// The agent started a user process (an exec, a terminal's shell): the guard, which may
/// be resting because none ran, samples again now.
pub fn user_code_started() {
    *STARTED.lock().unwrap_or_else(|e| e.into_inner()) = true;
    BELL.notify_one();
}

/// Waits up to `pause`, or until user code starts.
fn rest(pause: Duration) {
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if !*started {
        started = BELL
            .wait_timeout(started, pause)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    *started = false;
}

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
            // files or the kernel's lag are): killing it alone would free nothing.
            let procs = user_processes();
            if let Some(victim) = choose_victim(&procs, limit / 8) {
                // Counted first: the exec that waits for this process reads the count
                // as soon as it is reaped (and the harness reads the file).
                let kills = KILLS.fetch_add(1, Ordering::SeqCst) + 1;
                publish(kills);
                if kill(victim, &procs) {
                    wait_released(victim, limit);
                } else {
                    publish(KILLS.fetch_sub(1, Ordering::SeqCst) - 1);
                }
            }
        }
        if used <= limit && !any_user_process() {
            rest(IDLE_PAUSE);
        } else {
            std::thread::sleep(pause(total, used));
        }
    }
}

/// Whether any process but the agent runs.
fn any_user_process() -> bool {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| pid != me && pid != 1)
}

/// A user process as the guard sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: i32,
    pgid: i32,
    /// Its exec tree's tag group, if it carries one.
    tag: Option<u32>,
    /// Resident bytes (0 for a zombie).
    rss: u64,
}

/// What the guard kills: one process, or when no process is big enough alone (a fork
/// bomb is many small ones), the process group, else the exec tree, holding the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Process(i32),
    Group(i32),
    Tree(u32),
}

impl Victim {
    fn holds(self, p: &Proc) -> bool {
        match self {
            Victim::Process(pid) => p.pid == pid,
            Victim::Group(pgid) => p.pgid == pgid,
            Victim::Tree(tag) => p.tag == Some(tag),
        }
    }
}

/// The biggest process holding at least `at_least` bytes; else the biggest process
/// group, else the biggest tagged tree, holding that much together.
fn choose_victim(procs: &[Proc], at_least: u64) -> Option<Victim> {
    if let Some(p) = procs
        .iter()
        .filter(|p| p.rss >= at_least)
        .max_by_key(|p| p.rss)
    {
        return Some(Victim::Process(p.pid));
    }
    let biggest = |key: fn(&Proc) -> Option<i64>| -> Option<i64> {
        let mut sums = std::collections::BTreeMap::<i64, u64>::new();
        for p in procs {
            if let Some(k) = key(p) {
                *sums.entry(k).or_default() += p.rss;
            }
        }
        sums.into_iter()
            .filter(|&(_, sum)| sum >= at_least)
            .max_by_key(|&(_, sum)| sum)
            .map(|(k, _)| k)
    };
    if let Some(pgid) = biggest(|p| Some(p.pgid as i64)) {
        return Some(Victim::Group(pgid as i32));
    }
    biggest(|p| p.tag.map(i64::from)).map(|tag| Victim::Tree(tag as u32))
}

/// SIGKILLs what of `procs` belongs to `victim` (a group as a whole, so its members
/// forking meanwhile go too). True if anything was sent a signal.
fn kill(victim: Victim, procs: &[Proc]) -> bool {
    let mut sent = false;
    if let Victim::Group(pgid) = victim {
        // SAFETY: kill(2) on a process group; one that just ended is ESRCH.
        sent |= unsafe { libc::kill(-pgid, libc::SIGKILL) } == 0;
    }
    for p in procs.iter().filter(|p| victim.holds(p) && p.rss > 0) {
        // SAFETY: kill(2) with a pid read from /proc.
        sent |= unsafe { libc::kill(p.pid, libc::SIGKILL) } == 0;
    }
    sent
}

/// Every process but the agent's own, from `/proc`.
fn user_processes() -> Vec<Proc> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && pid != 1)
        .filter_map(read_proc)
        .collect()
}

/// `pid`'s group and resident memory (`/proc/<pid>/stat`) and tag (`status`'s groups).
fn read_proc(pid: i32) -> Option<Proc> {
    // SAFETY: sysconf(3) has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (pgid, rss_pages) = pgid_and_rss(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Some(Proc {
        pid,
        pgid,
        tag: tag_of(&status),
        rss: rss_pages * page,
    })
}

/// Fields 5 (pgrp) and 24 (rss, pages) of a `stat` line; the name before them may hold
/// spaces and parentheses, so fields count from the last `)`.
fn pgid_and_rss(stat: &str) -> Option<(i32, u64)> {
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(21)?.parse().ok()?))
}

/// The exec tree's tag among a `status` text's supplementary groups.
fn tag_of(status: &str) -> Option<u32> {
    status
        .lines()
        .find(|l| l.starts_with("Groups:"))?
        .split_whitespace()
        .skip(1)
        .filter_map(|g| g.parse::<u32>().ok())
        .find(|&g| g >= super::spawn::TAG_GID_BASE)
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

/// Waits (up to half a second) until what was killed is gone and the memory in use is
/// back under the limit, killing again what of it still runs (a group's members fork
/// while they die): the kernel frees the dead's memory after a while, and until it has,
/// the next largest process is not to blame.
fn wait_released(victim: Victim, limit: u64) {
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < deadline {
        let procs = user_processes();
        let alive = procs.iter().any(|p| victim.holds(p) && p.rss > 0);
        if alive {
            kill(victim, &procs);
        } else if memory_in_use().is_none_or(|(_, used)| used <= limit) {
            return;
        }
        std::thread::sleep(MIN_PAUSE);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_resting_guard_samples_again_as_soon_as_user_code_starts() {
        // Rung before it rests: it does not rest at all.
        user_code_started();
        let began = std::time::Instant::now();
        rest(Duration::from_secs(30));
        assert!(began.elapsed() < Duration::from_secs(5));
        // Rung while it rests: it wakes.
        let ringer = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            user_code_started();
        });
        let began = std::time::Instant::now();
        rest(Duration::from_secs(30));
        assert!(began.elapsed() < Duration::from_secs(5));
        ringer.join().unwrap();
    }

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

    fn proc(pid: i32, pgid: i32, tag: Option<u32>, mib: u64) -> Proc {
        Proc {
            pid,
            pgid,
            tag,
            rss: mib << 20,
        }
    }

    #[test]
    fn the_guard_kills_a_big_process_else_the_biggest_group_else_the_biggest_tree() {
        let tag = Some(2_100_000_007);
        // One process holds enough: it goes, not its group.
        let big = [
            proc(10, 10, tag, 8),
            proc(11, 10, tag, 40),
            proc(12, 12, None, 20),
        ];
        assert_eq!(choose_victim(&big, 32 << 20), Some(Victim::Process(11)));
        // A fork bomb: many small processes of one group.
        let bomb: Vec<Proc> = (20..30)
            .map(|pid| proc(pid, 20, tag, 8))
            .chain([proc(40, 40, None, 24)])
            .collect();
        assert_eq!(choose_victim(&bomb, 32 << 20), Some(Victim::Group(20)));
        // Each of its processes in a session of its own: the tree that tags them all.
        let scattered: Vec<Proc> = (50..60).map(|pid| proc(pid, pid, tag, 8)).collect();
        assert_eq!(
            choose_victim(&scattered, 32 << 20),
            Some(Victim::Tree(2_100_000_007))
        );
        // Nothing holds enough, alone or together: nothing to kill.
        assert_eq!(choose_victim(&[proc(70, 70, None, 4)], 32 << 20), None);
    }

    #[test]
    fn stat_lines_give_their_group_and_resident_pages_whatever_the_name() {
        let line = "42 (a b) c)) S 1 40 40 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 99 1000000 321 18446744073709551615";
        assert_eq!(pgid_and_rss(line), Some((40, 321)));
        assert_eq!(pgid_and_rss("42 (x) S 1"), None);
        let status = "Name:\tsh\nGroups:\t1000 2100000003 \nNSpid:\t42\n";
        assert_eq!(tag_of(status), Some(2_100_000_003));
        assert_eq!(tag_of("Groups:\t1000\n"), None);
    }
}
