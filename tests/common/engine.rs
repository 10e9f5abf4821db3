//! A private Docker engine for tests (its own data root, exec root, socket, containerd
//! namespace and bridge; no iptables), started and removed by the test, and a one-file
//! busybox image imported into it: for tests of the engine restarting, and of nodes
//! that each have an engine of their own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private Docker engine on a socket of its own.
pub struct Engine {
    root: tempfile::TempDir,
    socket: PathBuf,
    /// Its own bridge: `--bridge none` would make dockerd delete the host's `docker0`
    /// (moby removes the default bridge interface when the bridge is disabled).
    bridge: String,
    child: Option<Child>,
}

/// Engines started by this process so far (each gets a bridge and a range of its own).
static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Makes bridge `name` with an address of a range this test picks for itself
/// (10.{254 - k}.{pid-derived}.0/24 for the process's k-th engine).
fn make_bridge(name: &str, k: u32) {
    let n = std::process::id() % 200 + 20;
    let second = 254 - k % 50;
    for args in [
        vec!["link", "add", name, "type", "bridge"],
        vec!["addr", "add", &format!("10.{second}.{n}.1/24"), "dev", name],
        vec!["link", "set", name, "up"],
    ] {
        let out = Command::new("ip")
            .args(&args)
            .output()
            .expect("ip (iproute2)");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }
}

impl Engine {
    pub fn start() -> Option<Engine> {
        let uid = unsafe { libc::geteuid() };
        if uid != 0 || Command::new("dockerd").arg("--version").output().is_err() {
            eprintln!("skipped: a private Docker engine needs root and dockerd");
            return None;
        }
        let root = tempfile::Builder::new()
            .prefix("berth-engine-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let socket = root.path().join("docker.sock");
        let k = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bridge = format!("brt{}x{k}", std::process::id() % 100_000);
        make_bridge(&bridge, k);
        let mut engine = Engine {
            root,
            socket,
            bridge,
            child: None,
        };
        engine.run();
        Some(engine)
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("-H").arg(self.host());
        cmd
    }

    /// Starts dockerd and waits until it answers.
    pub fn run(&mut self) {
        let dir = self.root.path();
        let config = dir.join("daemon.json");
        // Under a gVisor pass, the engine offers runsc as the host's does.
        let runtimes = if super::test_runtime() == berth::domain::Runtime::Gvisor {
            r#"{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--host-uds=all"]}}}"#
        } else {
            "{}"
        };
        std::fs::write(&config, runtimes).unwrap();
        let tag = dir.file_name().unwrap().to_string_lossy().replace('.', "-");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("-H")
            .arg(self.host())
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--bridge")
            .arg(&self.bridge)
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver",
                "fuse-overlayfs",
            ])
            .arg("--containerd-namespace")
            .arg(format!("{tag}-ns"))
            .arg("--containerd-plugins-namespace")
            .arg(format!("{tag}-plugins"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "the private engine did not come up: {}",
                std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn answers(&self) -> bool {
        self.docker()
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// SIGTERM, as `systemctl restart docker` sends; waits for the engine to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.docker().args(["ps", "-aq"]).output();
            if let Ok(ids) = ids {
                let ids = String::from_utf8_lossy(&ids.stdout).to_string();
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let _ = self.docker().args(["rm", "-f"]).args(&ids).output();
                }
            }
            let _ = self.docker().args(["volume", "prune", "-f"]).output();
        }
        self.stop();
        // Mounts the engine left (it was stopped cleanly, so normally none).
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.root.path().join("data"))
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// A one-file image (a static busybox) imported into `engine`.
pub fn busybox_image(engine: &Engine, dir: &Path) -> String {
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "this test needs busybox-static");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    let layer = dir.join("layer.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&layer).unwrap());
    builder.append_dir_all(".", &rootfs).unwrap();
    builder.finish().unwrap();
    drop(builder);
    let tag = "berth-test/engine-restart:1";
    let out = engine
        .docker()
        .args(["import", "--change", "ENV PATH=/bin"])
        .arg(&layer)
        .arg(tag)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    tag.to_string()
}
