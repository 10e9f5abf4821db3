//! Crash injection for tests: `BERTH_CRASH_AT=archive.after_upload` makes the process
//! SIGKILL itself at that step, as a power cut or the OOM killer would, so a test can check that a restart
//! converges (the step finished or undone, nothing leaked). `BERTH_PAUSE_AT=step` makes a
//! step wait instead (`BERTH_PAUSE_MS`, 300 by default), so a test can make a race it
//! guards against happen every time. Unset, every point is a no-op.

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

/// The steps a pause can be injected at.
pub const PAUSE_POINTS: &[&str] = &["admission.after_count"];

fn pause_armed() -> Option<(&'static str, std::time::Duration)> {
    static AT: OnceLock<Option<(String, std::time::Duration)>> = OnceLock::new();
    AT.get_or_init(|| {
        let at = std::env::var("BERTH_PAUSE_AT")
            .ok()
            .filter(|v| !v.is_empty())?;
        let ms = std::env::var("BERTH_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300u64)
            .min(10_000);
        Some((at, std::time::Duration::from_millis(ms)))
    })
    .as_ref()
    .map(|(at, d)| (at.as_str(), *d))
}

/// Waits here when `BERTH_PAUSE_AT` names `point`.
pub async fn pause(point: &str) {
    debug_assert!(PAUSE_POINTS.contains(&point), "unknown pause point {point}");
    if let Some((at, wait)) = pause_armed() {
        if at == point {
            tokio::time::sleep(wait).await;
        }
    }
}
