//! The sandbox lifecycle against the real Docker engine: create, get, list, stop, resume,
//! delete, patch, idempotency, tenant isolation, and refusals of bad input and wrong states.

mod common;

use berth_runtime::wire::ExecRequest;
use common::{docker, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn a_sandbox_is_created_running_with_its_starter_files_and_named_after_itself() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({"files": {"solution.py": "print(1)\n", "src/deep/a.txt": "a"}, "labels": {"session": "abc"}})).await;
    assert_eq!(sb.state, "running");
    assert_eq!(sb.workdir, "/workspace");
    assert_eq!(sb.labels["session"], "abc");
    assert!(sb.expires_at.is_some() && sb.started_at.is_some());
    let out = app
        .client
        .sh(&sb.id, "cat solution.py src/deep/a.txt")
        .await
        .unwrap();
    assert_eq!(out.stdout, "print(1)\na");
    let container = docker()
        .await
        .inspect_container(&format!("berth-{}", sb.id), None)
        .await
        .unwrap();
    let config = container.config.unwrap();
    let labels = config.labels.unwrap();
    assert_eq!(labels["dev.berth.sandbox"], sb.id);
    assert_eq!(labels["dev.berth.managed"], "true");
    // The agent tries its socket directly only where readiness can be lost (gVisor):
    // under runc those tries would cost each exec time.
    let nudged = config
        .env
        .unwrap_or_default()
        .contains(&"BERTH_SOCKET_NUDGE=1".to_string());
    assert_eq!(
        nudged,
        common::test_runtime() == berth::domain::Runtime::Gvisor
    );
    assert_eq!(sb.volume, format!("berth-{}", sb.id));
    docker()
        .await
        .inspect_volume(&sb.volume)
        .await
        .expect("volume exists under the sandbox's name");
    app.cleanup().await;
}

#[tokio::test]
async fn limits_are_enforced_by_the_kernel_as_seen_from_inside() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(json!({"cpu": 0.5, "memory_mb": 300, "pids": 64}))
        .await;
    let limits = common::cgroup_limits(&app, &sb.id).await;
    assert_eq!(
        limits,
        common::CgroupLimits {
            cpu_quota: "50000".into(),
            cpu_period: "100000".into(),
            memory: "314572800".into(),
            swap: "0".into(),
            pids: "64".into(),
        }
    );
    let info = docker()
        .await
        .inspect_container(&format!("berth-{}", sb.id), None)
        .await
        .unwrap();
    let host = info.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.security_opt.unwrap(), vec!["no-new-privileges"]);
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    app.cleanup().await;
}

#[tokio::test]
async fn a_sandbox_is_hardened_by_default() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({"allow_root": true})).await;
    // no_new_privs through prctl (setpriv) and interfaces through /proc/net/dev: gVisor
    // has no NoNewPrivs line in /proc/self/status and an empty /sys/class/net.
    let probe = "grep CapEff /proc/self/status; setpriv --dump 2>/dev/null | grep no_new_privs; \
                 tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; \
                 mknod /tmp/x-$(id -u) c 1 3 2>&1; echo mknod=$?; \
                 mkfifo /tmp/f-$(id -u) && echo fifo=ok";
    // Code runs as `user` by default: no capabilities at all.
    let out = app.client.sh(&sb.id, probe).await.unwrap();
    assert!(
        out.stdout.contains("CapEff:\t0000000000000000"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("no_new_privs: 1")
            && out.stdout.contains("mknod=1")
            && out.stdout.contains("fifo=ok"),
        "{}",
        out.stdout
    );
    // Root, where the sandbox allows it: CHOWN DAC_OVERRIDE FOWNER FSETID KILL
    // NET_BIND_SERVICE; no SETUID/SETGID/SYS_ADMIN/MKNOD.
    let as_root = |command: &str| ExecRequest {
        command: Some(command.into()),
        user: Some("root".into()),
        ..Default::default()
    };
    let out = app.client.exec(&sb.id, &as_root(probe)).await.unwrap();
    assert!(
        out.stdout.contains("CapEff:\t000000000000043b"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("no_new_privs: 1"), "{}", out.stdout);
    assert!(
        out.stdout.contains("lo\n") && !out.stdout.contains("eth0"),
        "network none: {}",
        out.stdout
    );
    assert!(out.stdout.contains("mknod=1"), "{}", out.stdout);
    // The agent (PID 1) is off limits to root user code beside it.
    let agent = app
        .client
        .exec(
            &sb.id,
            &as_root(
                "head -c 1 /proc/1/environ >/dev/null 2>&1; echo environ=$?; \
                 if (exec 3</proc/1/mem) 2>/dev/null; then echo mem=open; else echo mem=refused; fi; \
                 kill -9 1; echo alive",
            ),
        )
        .await
        .unwrap();
    // gVisor 20221219 lets root read a non-dumpable PID 1's environ (the sandbox's own
    // settings: nothing of the host's or another sandbox's), not its memory.
    let environ = if common::test_runtime().pty_signals_keys() {
        "1"
    } else {
        "0"
    };
    assert_eq!(
        agent.stdout,
        format!("environ={environ}\nmem=refused\nalive\n"),
        "{agent:?}"
    );
    assert_eq!(
        app.client.sh(&sb.id, "echo still").await.unwrap().stdout,
        "still\n"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn stop_then_resume_keeps_every_file_and_both_are_idempotent() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    app.client
        .sh(
            &sb.id,
            "mkdir -p data && head -c 100000 /dev/urandom > data/blob && sha256sum data/blob > sum",
        )
        .await
        .unwrap();
    let stopped = app.client.stop(&sb.id).await.unwrap();
    assert_eq!(stopped.state, "stopped");
    assert!(stopped.stopped_at.is_some());
    assert_eq!(
        app.client.stop(&sb.id).await.unwrap().state,
        "stopped",
        "stop is idempotent"
    );
    let gone = docker()
        .await
        .inspect_container(&format!("berth-{}", sb.id), None)
        .await;
    assert!(gone.is_err(), "a stopped sandbox has no container");
    let resumed = app.client.resume(&sb.id).await.unwrap();
    assert_eq!(resumed.state, "running");
    assert_eq!(
        app.client.resume(&sb.id).await.unwrap().state,
        "running",
        "resume is idempotent"
    );
    let check = app.client.sh(&sb.id, "sha256sum -c sum").await.unwrap();
    assert_eq!(check.exit_code, Some(0), "{check:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn exec_on_a_stopped_sandbox_resumes_it_unless_auto_resume_is_off() {
    let app = spawn_app().await;
    let auto = app.sandbox(json!({"files": {"f": "x"}})).await;
    app.client.stop(&auto.id).await.unwrap();
    let out = app.client.sh(&auto.id, "cat f").await.unwrap();
    assert_eq!(out.stdout, "x");
    assert_eq!(
        app.client.get_sandbox(&auto.id).await.unwrap().state,
        "running"
    );

    let manual = app
        .sandbox(json!({"auto_resume": false, "files": {"f": "y"}}))
        .await;
    app.client.stop(&manual.id).await.unwrap();
    let err = app.client.sh(&manual.id, "true").await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT));
    app.client.stop(&auto.id).await.unwrap();
    assert_eq!(
        app.client.read_file(&auto.id, "f").await.unwrap(),
        "x",
        "a stopped sandbox can be read"
    );
    assert_eq!(
        app.client.get_sandbox(&auto.id).await.unwrap().state,
        "stopped",
        "reads never resume"
    );
    assert_eq!(app.client.read_file(&manual.id, "f").await.unwrap(), "y");
    assert_eq!(
        app.client.get_sandbox(&manual.id).await.unwrap().state,
        "stopped"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn delete_removes_the_volume_unless_kept_and_a_terminated_sandbox_stays_terminated() {
    let app = spawn_app().await;
    let docker = docker().await;
    let removed = app.sandbox(json!({})).await;
    let gone = app.client.delete(&removed.id, false).await.unwrap();
    assert_eq!(gone.state, "terminated");
    assert!(
        docker.inspect_volume(&removed.volume).await.is_err(),
        "volume removed"
    );

    let kept = app
        .sandbox(json!({"files": {"keep.txt": "still here"}}))
        .await;
    app.client.delete(&kept.id, true).await.unwrap();
    docker
        .inspect_volume(&kept.volume)
        .await
        .expect("volume kept");
    assert_eq!(
        app.client.read_file(&kept.id, "keep.txt").await.unwrap(),
        "still here",
        "a kept volume stays readable"
    );
    let err = app.client.resume(&kept.id).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT));
    let err = app.client.sh(&kept.id, "true").await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT));
    assert_eq!(
        app.client.delete(&kept.id, true).await.unwrap().state,
        "terminated",
        "delete is idempotent"
    );

    // The kept volume can be mounted by a new sandbox.
    let again = app.sandbox(json!({"volume": kept.volume})).await;
    assert_eq!(
        app.client.read_file(&again.id, "keep.txt").await.unwrap(),
        "still here"
    );
    let busy = app
        .client
        .request(Method::DELETE, &format!("/v1/volumes/{}", kept.volume))
        .send()
        .await
        .unwrap();
    assert_eq!(
        busy.status(),
        StatusCode::CONFLICT,
        "a mounted volume cannot be deleted"
    );
    app.client.delete(&again.id, false).await.unwrap();
    let freed = app
        .client
        .request(Method::DELETE, &format!("/v1/volumes/{}", kept.volume))
        .send()
        .await
        .unwrap();
    assert_eq!(freed.status(), StatusCode::NO_CONTENT);
    assert!(docker.inspect_volume(&kept.volume).await.is_err());
    let deleted = app
        .client
        .read_file(&kept.id, "keep.txt")
        .await
        .unwrap_err();
    assert_eq!(
        deleted.status(),
        Some(StatusCode::CONFLICT),
        "its volume is gone now"
    );
    let gone = app
        .client
        .read_file(&removed.id, "anything")
        .await
        .unwrap_err();
    assert_eq!(
        gone.status(),
        Some(StatusCode::CONFLICT),
        "no volume, nothing to read"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn list_filters_by_state_and_label_and_patch_changes_deadlines_and_labels() {
    let app = spawn_app().await;
    let a = app.sandbox(json!({"labels": {"session": "one"}})).await;
    let b = app.sandbox(json!({"labels": {"session": "two"}})).await;
    app.client.stop(&b.id).await.unwrap();
    let running = app.client.list_sandboxes("state=running").await.unwrap();
    assert_eq!(
        running.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [a.id.as_str()]
    );
    let two = app
        .client
        .list_sandboxes("label=session%3Dtwo")
        .await
        .unwrap();
    assert_eq!(
        two.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [b.id.as_str()]
    );
    let bad = app
        .client
        .request(Method::GET, "/v1/sandboxes?state=sleeping")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let patched = app
        .client
        .patch(
            &a.id,
            &json!({"timeout_s": 7200, "labels": {"session": "renamed"}}),
        )
        .await
        .unwrap();
    assert_eq!(patched.labels["session"], "renamed");
    assert_eq!(patched.limits["timeout_s"], 7200);
    let expires =
        chrono::DateTime::parse_from_rfc3339(patched.expires_at.as_deref().unwrap()).unwrap();
    let started =
        chrono::DateTime::parse_from_rfc3339(patched.started_at.as_deref().unwrap()).unwrap();
    assert_eq!((expires - started).num_seconds(), 7200);
    let bad = app
        .client
        .request(Method::PATCH, &format!("/v1/sandboxes/{}", a.id))
        .json(&json!({"cpu": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        bad.status(),
        StatusCode::BAD_REQUEST,
        "unknown PATCH fields are refused"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_sandbox_and_refuses_a_different_body() {
    let app = spawn_app().await;
    let create = |body: Value| {
        app.client
            .request(Method::POST, "/v1/sandboxes")
            .header("Idempotency-Key", "k-1")
            .json(&body)
            .send()
    };
    let first: Value = create(json!({"image": "base", "memory_mb": 256}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second = create(json!({"memory_mb": 256, "image": "base"}))
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    let different = create(json!({"image": "base", "memory_mb": 300}))
        .await
        .unwrap();
    assert_eq!(different.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.client.list_sandboxes("").await.unwrap().len(), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn another_tenants_sandbox_is_not_found_for_every_route() {
    let app = spawn_app().await;
    let mine = app.sandbox(json!({})).await;
    let intruder = app.other_tenant("tenant-b").await;
    assert_eq!(
        intruder.get_sandbox(&mine.id).await.unwrap_err().status(),
        Some(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        intruder.sh(&mine.id, "id").await.unwrap_err().status(),
        Some(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        intruder
            .read_file(&mine.id, "/etc/hostname")
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        intruder.stop(&mine.id).await.unwrap_err().status(),
        Some(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        intruder.delete(&mine.id, false).await.unwrap_err().status(),
        Some(StatusCode::NOT_FOUND)
    );
    assert!(intruder.list_sandboxes("").await.unwrap().is_empty());
    let vol = intruder
        .request(Method::GET, &format!("/v1/volumes/{}", mine.volume))
        .send()
        .await
        .unwrap();
    assert_eq!(vol.status(), StatusCode::NOT_FOUND);
    let mount = intruder
        .create_sandbox(&json!({"image": "base", "volume": mine.volume}))
        .await
        .unwrap_err();
    assert_eq!(
        mount.status(),
        Some(StatusCode::NOT_FOUND),
        "another tenant's volume cannot be mounted"
    );
    assert_eq!(
        app.client.get_sandbox(&mine.id).await.unwrap().state,
        "running",
        "nothing happened to it"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_create_nothing() {
    let app = spawn_app().await;
    // An image that is not there is missing, like a volume that is not there.
    let absent = app
        .client
        .create_sandbox(&serde_json::json!({"image": "no/such-image:tag"}))
        .await
        .unwrap_err();
    assert_eq!(absent.status(), Some(StatusCode::NOT_FOUND), "{absent}");
    assert!(absent.to_string().contains("not present"), "{absent}");
    let post = |body: &'static str| {
        app.client
            .request(Method::POST, "/v1/sandboxes")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (body, status, needle) in [
        ("{not json", StatusCode::BAD_REQUEST, "invalid JSON"),
        (
            r#"{"image":"base","cpu":1,"gpu":1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (r#"{"cpu":1}"#, StatusCode::BAD_REQUEST, "image"),
        (
            r#"{"image":"base","memory_mb":1}"#,
            StatusCode::BAD_REQUEST,
            "memory_mb",
        ),
        (
            r#"{"image":"base","network":"host"}"#,
            StatusCode::BAD_REQUEST,
            "network",
        ),
        ("", StatusCode::BAD_REQUEST, "required"),
    ] {
        let response = post(body).await.unwrap();
        assert_eq!(response.status(), status, "{body}");
        assert!(response.headers().contains_key("x-request-id"));
        let error: Value = response.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
        assert_eq!(error["error"]["code"], "invalid_request");
    }
    let huge = format!(
        r#"{{"image":"base","files":{{"a":"{}"}}}}"#,
        "x".repeat(17 * 1024 * 1024)
    );
    let response = app
        .client
        .request(Method::POST, "/v1/sandboxes")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(app.client.list_sandboxes("").await.unwrap().is_empty());
    let missing = app
        .client
        .get_sandbox("sb-0000000000000000")
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(StatusCode::NOT_FOUND));
    let malformed = app.client.get_sandbox("..%2F..%2Fetc").await.unwrap_err();
    assert_eq!(malformed.status(), Some(StatusCode::NOT_FOUND));
    let bad_exec = app
        .client
        .exec("sb-0000000000000000", &ExecRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        bad_exec.status(),
        Some(StatusCode::BAD_REQUEST),
        "the body is checked first"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused() {
    let app = spawn_app().await;
    let anonymous = berth::client::Client::new(app.base.clone(), None);
    let r = anonymous
        .request(Method::GET, "/v1/sandboxes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let wrong = berth::client::Client::new(app.base.clone(), Some("bk_wrong".into()));
    let r = wrong
        .request(Method::GET, "/v1/sandboxes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    app.cleanup().await;
}
