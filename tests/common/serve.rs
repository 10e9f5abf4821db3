//! `berth serve` as a child process (for tests that kill, signal or restart it), on a
//! data dir that is cleaned up however the test ends.

use berth::client::Client;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `berth serve` child process on a data dir.
pub struct Serve {
    pub child: Child,
    pub base: String,
    pub client: Client,
    pub log: Arc<Mutex<String>>,
    /// The thread copying stderr into `log`: it ends at the pipe's end, after the last line.
    reader: std::thread::JoinHandle<()>,
}

/// Starts `berth serve` on `data` (port 0, no warm pool, a quick reaper), with `env`.
pub async fn serve(data: &Path, env: &[(&str, &str)]) -> Serve {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("BERTH_POOL", "off")
        .env("BERTH_REAPER_INTERVAL_MS", "200")
        .env("BERTH_SHUTDOWN_NOTICE_MS", "300")
        .env("BERTH_ALLOWED_IMAGES", "berth-test/*")
        .env(
            "BERTH_RUNTIME",
            super::test_runtime()
                .engine_name()
                .map_or("runc", |_| "gvisor"),
        )
        .env("RUST_LOG", "warn")
        .env_remove("BERTH_CRASH_AT")
        .env_remove("BERTH_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("berth serve starts");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line
                .split("listening on http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
            {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr.to_string());
                }
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(120), rx)
        .await
        .expect("berth serve listens within 2 minutes")
        .unwrap_or_else(|_| panic!("berth serve exited: {}", log.lock().unwrap()));
    let key = std::fs::read_to_string(data.join(berth::startup::DEFAULT_KEY_FILE)).unwrap();
    let base = format!("http://{addr}");
    Serve {
        child,
        client: Client::new(base.clone(), Some(key.trim().to_string())),
        base,
        log,
        reader,
    }
}

impl Serve {
    /// Waits for the process to end (it crashes at its injected point); its status.
    pub async fn ended(mut self) -> std::process::ExitStatus {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "berth did not end: {}",
                    log.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .unwrap()
    }

    /// Waits for the crash at `point`: the process died of SIGKILL, saying where.
    pub async fn crashed_at(mut self, point: &str) {
        let log = self.log.clone();
        // The process may be reaped before the reader has copied its last line.
        let reader = std::mem::replace(&mut self.reader, std::thread::spawn(|| {}));
        let status = self.ended().await;
        tokio::task::spawn_blocking(move || reader.join())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{status:?}"
        );
        let log = log.lock().unwrap().clone();
        assert!(log.contains(&format!("crashing at {point}")), "{log}");
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.ended().await
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes every container and volume of the data dir's instance.
pub fn remove_everything(data: &Path) {
    super::remove_host_leftovers(data);
    let Ok(instance) = std::fs::read_to_string(data.join("instance-id")) else {
        return;
    };
    let filter = format!("label=dev.berth.instance={}", instance.trim());
    let names = |args: &[&str]| -> Vec<String> {
        let out = Command::new("docker").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let containers = names(&["ps", "-aq", "--filter", &filter]);
    if !containers.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&containers)
            .output();
    }
    let volumes = names(&["volume", "ls", "-q", "--filter", &filter]);
    if !volumes.is_empty() {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f"])
            .args(&volumes)
            .output();
    }
}

/// A data dir removed with everything its servers made, however the test ends.
pub struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    pub fn new() -> Self {
        DataDir {
            dir: tempfile::Builder::new()
                .prefix("berth-crash-")
                .tempdir()
                .unwrap(),
        }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        remove_everything(self.dir.path());
    }
}
