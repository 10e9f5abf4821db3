//! The core under stress: clients that give up mid-create, a supervisor killed with
//! creates in flight, execs that outlive the idle deadline or are cut short by a stop,
//! quotas under concurrent creates, and image names Docker would choke on.

mod common;

use common::{eventually, spawn_app, spawn_with, test_config};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// Sends a create with an idempotency key; returns the status and body.
async fn create_with_key(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    idem: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let response = client
        .post(format!("{base}/v1/sandboxes"))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .json(body)
        .send()
        .await
        .expect("server answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_client_that_gives_up_mid_create_still_gets_its_sandbox_from_the_same_key() {
    let app = spawn_app().await;
    let body = json!({"image": "base", "memory_mb": 256});
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{}/v1/sandboxes", app.base))
        .bearer_auth(&app.key)
        .header("Idempotency-Key", "give-up-1")
        .json(&body)
        .send()
        .await;
    assert!(
        gave_up.is_err(),
        "the client gave up before the create finished"
    );

    let patient = reqwest::Client::new();
    let sandbox = eventually(Duration::from_secs(60), || async {
        let (status, body) =
            create_with_key(&patient, &app.base, &app.key, "give-up-1", &body).await;
        match status {
            StatusCode::CREATED => Some(body),
            StatusCode::CONFLICT => None, // still in flight
            other => panic!("unexpected {other}: {body}"),
        }
    })
    .await
    .expect("the create finished although its client left");
    assert_eq!(sandbox["state"], "running", "{sandbox}");
    let all = app.client.list_sandboxes("").await.unwrap();
    assert_eq!(all.len(), 1, "one sandbox for one key");
    let out = app
        .client
        .sh(sandbox["id"].as_str().unwrap(), "echo ok")
        .await
        .unwrap();
    assert_eq!(out.stdout, "ok\n");
    app.cleanup().await;
}

/// A `berth serve` child process on its own data dir and port.
struct ServerProcess {
    child: std::process::Child,
    base: String,
    key: String,
}

fn start_server(data_dir: &std::path::Path) -> ServerProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("BERTH_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("berth serve starts");
    let key = std::fs::read_to_string(data_dir.join("default-api-key"))
        .unwrap_or_default()
        .trim()
        .to_string();
    ServerProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
        key,
    }
}

#[tokio::test]
async fn killing_the_supervisor_mid_creates_leaves_nothing_half_done_after_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = start_server(temp.path());
    let http = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(60), || async {
        http.get(format!("{}/readyz", server.base))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    assert!(ready.is_some(), "the server came up");
    server.key = std::fs::read_to_string(temp.path().join("default-api-key"))
        .unwrap()
        .trim()
        .to_string();
    let body = json!({"image": "base", "memory_mb": 128, "files": {"a.txt": "a"}});
    let mut burst = Vec::new();
    for i in 0..4 {
        let (http, base, key, body) = (
            http.clone(),
            server.base.clone(),
            server.key.clone(),
            body.clone(),
        );
        burst.push(tokio::spawn(async move {
            create_with_key(&http, &base, &key, &format!("burst-{i}"), &body).await
        }));
    }
    // Kill it once a create is under way (a record in `creating`).
    let in_flight = eventually(Duration::from_secs(30), || async {
        let r = http
            .get(format!("{}/v1/sandboxes?state=creating", server.base))
            .bearer_auth(&server.key)
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        (!v["sandboxes"].as_array()?.is_empty()).then_some(())
    })
    .await;
    assert!(in_flight.is_some(), "a create was in flight");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for task in burst {
        let _ = task.await;
    }

    let mut config = test_config(temp.path());
    config.reaper_interval_ms = 200;
    let app = spawn_with(config).await;
    let store = app.service.store().clone();
    let all = store.list_sandboxes(None, None).await.unwrap();
    assert!(!all.is_empty());
    let docker = common::docker().await;
    for sandbox in &all {
        assert_ne!(
            sandbox.state.as_str(),
            "creating",
            "{} left creating",
            sandbox.id
        );
        if sandbox.state.as_str() == "failed" {
            assert!(
                docker
                    .inspect_volume(sandbox.volume.as_str())
                    .await
                    .is_err(),
                "the volume of undone create {} is removed",
                sandbox.id
            );
            assert!(
                docker
                    .inspect_container(&format!("berth-{}", sandbox.id), None)
                    .await
                    .is_err(),
                "the container of undone create {} is removed",
                sandbox.id
            );
        }
    }
    // Every key now answers with a running sandbox: the finished ones with theirs, the
    // undone ones by creating anew.
    let default_key = std::fs::read_to_string(temp.path().join("default-api-key"))
        .unwrap()
        .trim()
        .to_string();
    for i in 0..4 {
        let (status, sandbox) =
            create_with_key(&http, &app.base, &default_key, &format!("burst-{i}"), &body).await;
        assert_eq!(status, StatusCode::CREATED, "{sandbox}");
        assert_eq!(sandbox["state"], "running", "{sandbox}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn an_exec_keeps_its_sandbox_from_idling_and_one_cut_short_by_a_stop_says_why() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({"idle_timeout_s": 1})).await;
    let out = app.client.sh(&sb.id, "sleep 4; echo done").await.unwrap();
    assert_eq!(out.stdout, "done\n", "a running exec is activity");
    assert_eq!(
        app.client.get_sandbox(&sb.id).await.unwrap().state,
        "running"
    );

    // A background process that runs keeps the sandbox too.
    let started = app
        .client
        .request(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{}/exec", sb.id),
        )
        .json(&json!({"command": "sleep 4", "background": true}))
        .send()
        .await
        .unwrap();
    assert!(started.status().is_success());
    let finished = eventually(Duration::from_secs(20), || async {
        let r = app
            .client
            .request(
                reqwest::Method::GET,
                &format!("/v1/sandboxes/{}/processes", sb.id),
            )
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        let running = v["processes"]
            .as_array()?
            .iter()
            .any(|p| p["running"] == true);
        (!running).then_some(())
    })
    .await;
    assert!(finished.is_some());
    assert_eq!(
        app.client.get_sandbox(&sb.id).await.unwrap().state,
        "running",
        "not idle while a background process ran"
    );
    let idled = eventually(Duration::from_secs(20), || async {
        let s = app.client.get_sandbox(&sb.id).await.ok()?;
        (s.state == "stopped").then_some(s)
    })
    .await;
    assert!(idled.is_some(), "idle once nothing runs");

    // Past its lifetime the sandbox stops under a running exec, which says so.
    let short = app.sandbox(json!({"timeout_s": 2})).await;
    let response = app
        .client
        .request(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{}/exec", short.id),
        )
        .json(&json!({"command": "sleep 60", "timeout_s": 90}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "sandbox_stopped", "{body}");
    assert_eq!(body["error"]["reason"], "timeout", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stopped: timeout"),
        "{body}"
    );

    // Deleted under a running exec: `deleted`.
    let doomed = app.sandbox(json!({})).await;
    let exec = {
        let client = app.client.clone();
        let id = doomed.id.clone();
        tokio::spawn(async move {
            client
                .request(reqwest::Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({"command": "sleep 60", "timeout_s": 90}))
                .send()
                .await
                .unwrap()
        })
    };
    let busy = eventually(Duration::from_secs(10), || async {
        let s = app.client.get_sandbox(&doomed.id).await.ok()?;
        // While the exec runs, the sandbox is active now.
        let last = chrono::DateTime::parse_from_rfc3339(s.last_activity_at.as_deref()?).ok()?;
        ((chrono::Utc::now() - last.with_timezone(&chrono::Utc)).num_milliseconds() < 500)
            .then_some(())
    })
    .await;
    assert!(busy.is_some());
    let ps = eventually(Duration::from_secs(10), || async {
        let out = app.client.sh(&doomed.id, "ps -eo args").await.ok()?;
        out.stdout.contains("sleep 60").then_some(())
    })
    .await;
    assert!(ps.is_some(), "the exec is running");
    app.client.delete(&doomed.id, false).await.unwrap();
    let response = exec.await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["reason"], "deleted", "{body}");
    app.cleanup().await;
}

#[tokio::test]
async fn concurrent_creates_never_pass_the_quota_and_failed_creates_keep_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.limits.max_sandboxes_per_tenant = 2;
    let app = spawn_with(config).await;

    // A create that fails after its record exists (a starter file that cannot be
    // written) is undone: no volume, and it does not count against the quota.
    let err = app
        .client
        .create_sandbox(&json!({"image": "base", "files": {"/proc/version": "x"}}))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST), "{err}");
    let failed = app.client.list_sandboxes("state=failed").await.unwrap();
    assert_eq!(failed.len(), 1);
    let docker = common::docker().await;
    assert!(
        docker.inspect_volume(&failed[0].volume).await.is_err(),
        "a failed create keeps no volume"
    );

    let mut creates = Vec::new();
    for _ in 0..6 {
        let client = app.client.clone();
        creates.push(tokio::spawn(async move {
            client
                .create_sandbox(&json!({"image": "base", "memory_mb": 128}))
                .await
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for c in creates {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) if e.status() == Some(StatusCode::TOO_MANY_REQUESTS) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, refused), (2, 4), "exactly the quota got through");
    app.cleanup().await;
}

#[tokio::test]
async fn image_names_docker_would_refuse_are_a_400_absent_ones_a_404_and_neither_creates_anything()
{
    let app = spawn_app().await;
    for image in ["³", "UPPER/case", "a//b", "x:", "img@sha256:nothex"] {
        let err = app
            .client
            .create_sandbox(&json!({ "image": image }))
            .await
            .unwrap_err();
        assert_eq!(
            err.status(),
            Some(StatusCode::BAD_REQUEST),
            "{image}: {err}"
        );
        assert!(err.to_string().contains("image"), "{err}");
    }
    let err = app
        .client
        .create_sandbox(&json!({"image": "no-such-org/no-such-image:1"}))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND), "{err}");
    assert!(app.client.list_sandboxes("").await.unwrap().is_empty());
    app.cleanup().await;
}
