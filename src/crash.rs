//! Crash injection for tests: `BERTH_CRASH_AT=archive.after_upload` makes the process
//! SIGKILL itself at that step, as a power cut or the OOM killer would, so a test can check that a restart
//! converges (the step finished or undone, nothing leaked). Unset, every point is a no-op.

use std::sync::OnceLock;

/// The steps a crash can be injected at, in the order operations reach them.
pub const POINTS: &[&str] = &[
    "create.after_record",
    "create.after_volume",
    "create.after_container",
    "create.after_restore",
    "stop.after_container",
    "resume.after_container",
    "resume.after_record",
    "delete.after_container",
    "delete.after_record",
    "snapshot.after_record",
    "snapshot.after_upload",
    "archive.after_upload",
    "archive.after_record",
    "restore.after_volume",
    "restore.after_extract",
    "reader.after_restore",
];

fn armed() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| {
        std::env::var("BERTH_CRASH_AT")
            .ok()
            .filter(|v| !v.is_empty())
    })
    .as_deref()
}

/// Kills the process here (SIGKILL: no destructor, no flush) when `BERTH_CRASH_AT` names
/// `point`.
pub fn point(point: &str) {
    debug_assert!(POINTS.contains(&point), "unknown crash point {point}");
    if armed() == Some(point) {
        eprintln!("berth: crashing at {point} (BERTH_CRASH_AT)");
        // SAFETY: kill(2) of this very process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        std::process::abort();
    }
}
