//! The Docker daemon restarting under a running berth: a private second engine (its own
//! data root, exec root, socket, containerd namespace and bridge; no iptables) is started
//! by the test, berth is pointed at it, and the engine is restarted during an exec. Calls made
//! while it is down answer 503 `retryable` at once, the exec under way ends instead of
//! hanging, and once the engine is back the sandbox is `stopped` within seconds (its
//! container died with the engine) and resumes with its files.
//!
//! Under the gVisor pass the private engine registers runsc and the sandbox runs under it.
//!
//! Needs root and `dockerd` (the test is skipped, saying so, without them).

mod common;

use common::engine::{busybox_image, Engine};
use common::eventually;
use common::serve::{serve, DataDir};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

fn busybox(args: &[&str]) -> Value {
    let mut cmd = vec!["/bin/busybox"];
    cmd.extend_from_slice(args);
    json!({ "cmd": cmd })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_daemon_restart_during_an_exec_is_answered_and_then_reflected() {
    let has_docker0 = || {
        Command::new("ip")
            .args(["link", "show", "docker0"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let had_docker0 = has_docker0();
    let Some(mut engine) = Engine::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let image = busybox_image(&engine, work.path());
    let data = DataDir::new();
    let host = engine.host();
    // The private engine offers runsc under a gVisor pass, as the host's does.
    let runtime = match common::test_runtime() {
        berth::domain::Runtime::Runc => "runc",
        berth::domain::Runtime::Gvisor => "gvisor",
    };
    let server = serve(
        &data.path(),
        &[
            ("DOCKER_HOST", host.as_str()),
            ("BERTH_DOCKER_TIMEOUT_S", "5"),
            ("BERTH_RUNTIME", runtime),
        ],
    )
    .await;
    let client = server.client.clone();
    let sb = client
        .create_sandbox(&json!({ "image": image, "files": { "keep.txt": "kept" } }))
        .await
        .unwrap();
    let inspect = engine
        .docker()
        .args(["inspect", "--format", "{{.HostConfig.Runtime}}"])
        .arg(format!("berth-{}", sb.id))
        .output()
        .unwrap();
    let engine_runtime = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    assert_eq!(
        engine_runtime == "runsc",
        runtime == "gvisor",
        "{engine_runtime}"
    );
    let events = client
        .request(Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();

    // An exec that would run for a minute.
    let exec = {
        let client = client.clone();
        let id = sb.id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = client
                .request(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&busybox(&["sleep", "60"]))
                .send()
                .await;
            (started.elapsed(), resp.map(|r| r.status()))
        })
    };
    eventually(Duration::from_secs(10), || async {
        let out = client
            .exec(&sb.id, &serde_json::from_value(busybox(&["ps"])).unwrap())
            .await
            .ok()?;
        out.stdout.contains("sleep 60").then_some(())
    })
    .await
    .expect("the long exec is running");

    // The engine goes down (its containers with it).
    let down = tokio::task::spawn_blocking(move || {
        engine.stop();
        engine
    });
    let mut engine = down.await.unwrap();

    // The exec under way is answered, not left hanging.
    let (took, status) = tokio::time::timeout(Duration::from_secs(30), exec)
        .await
        .expect("the exec under way was answered")
        .unwrap();
    assert!(took < Duration::from_secs(45), "{took:?}");
    if let Ok(status) = status {
        assert!(!status.is_success(), "{status}");
    }

    // While it is down: 503 `retryable`, fast, for what needs the engine; /readyz says so.
    let started = Instant::now();
    let resp = client
        .request(Method::POST, "/v1/sandboxes")
        .json(&json!({ "image": image }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["retryable"], true, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let ready = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Back: the sandbox is seen stopped within seconds, without any call touching it.
    let engine_back = tokio::task::spawn_blocking(move || {
        engine.run();
        engine
    });
    let engine = engine_back.await.unwrap();
    let stopped = eventually(Duration::from_secs(20), || async {
        let s = client.get_sandbox(&sb.id).await.ok()?;
        (s.state == "stopped").then_some(s)
    })
    .await
    .expect("the sandbox was marked stopped after the engine came back");
    assert!(stopped.reason.is_some(), "{stopped:?}");
    {
        use futures_util::StreamExt;
        let mut stream = events.bytes_stream();
        let mut seen = String::new();
        while !seen.contains("sandbox.stopped") {
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("a stopped event")
                .unwrap()
                .unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let ready = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    // Its volume outlived the engine: a resume brings the files back.
    client.resume(&sb.id).await.unwrap();
    let cat: berth_runtime::wire::ExecRequest =
        serde_json::from_value(busybox(&["cat", "keep.txt"])).unwrap();
    assert_eq!(client.exec(&sb.id, &cat).await.unwrap().stdout, "kept");
    client.delete(&sb.id, false).await.unwrap();
    assert_eq!(server.terminate().await.code(), Some(0));
    drop(engine);
    // The host's own engine kept its bridge.
    assert_eq!(
        has_docker0(),
        had_docker0,
        "the private engine removed docker0"
    );
}
