//! Exec against real sandboxes: exit codes, stdin, env, cwd, stderr, binary output,
//! timeouts that kill whole trees, fork and memory bombs, streaming, background processes.

mod common;

use berth_runtime::wire::{ExecEvent, ExecRequest};
use common::{eventually, spawn_app};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn sh(command: &str) -> ExecRequest {
    ExecRequest {
        command: Some(command.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn exec_reports_exit_codes_stdout_stderr_and_honours_stdin_env_and_cwd() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({"env": {"FROM_SANDBOX": "yes"}})).await;
    let out = app
        .client
        .sh(&sb.id, "echo out; echo err >&2; exit 7")
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(7), "out\n", "err\n")
    );
    assert!(!out.timed_out && !out.truncated && !out.oom_killed);

    let cat = ExecRequest {
        cmd: Some(vec!["cat".into()]),
        stdin: Some("from stdin\n".into()),
        ..Default::default()
    };
    assert_eq!(
        app.client.exec(&sb.id, &cat).await.unwrap().stdout,
        "from stdin\n"
    );

    app.client.sh(&sb.id, "mkdir -p sub/dir").await.unwrap();
    let env = ExecRequest {
        command: Some("echo $GREETING $FROM_SANDBOX; pwd".into()),
        env: BTreeMap::from([("GREETING".into(), "hello".into())]),
        cwd: Some("sub/dir".into()),
        ..Default::default()
    };
    assert_eq!(
        app.client.exec(&sb.id, &env).await.unwrap().stdout,
        "hello yes\n/workspace/sub/dir\n"
    );

    let argv = ExecRequest {
        cmd: Some(vec![
            "printf".into(),
            "%s|".into(),
            "a b".into(),
            "$HOME".into(),
        ]),
        ..Default::default()
    };
    assert_eq!(
        app.client.exec(&sb.id, &argv).await.unwrap().stdout,
        "a b|$HOME|",
        "argv is not shell-expanded"
    );

    let missing = ExecRequest {
        cmd: Some(vec!["no-such-program".into()]),
        ..Default::default()
    };
    let out = app.client.exec(&sb.id, &missing).await.unwrap();
    assert_eq!(out.exit_code, Some(127));
    assert!(out.stderr.contains("no-such-program"), "{}", out.stderr);

    let nobody = ExecRequest {
        command: Some("id -u".into()),
        user: Some("nobody".into()),
        ..Default::default()
    };
    assert_eq!(
        app.client.exec(&sb.id, &nobody).await.unwrap().stdout,
        "65534\n"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn non_utf8_output_is_lossy_in_text_and_exact_in_base64() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let mut req = sh("printf 'ok\\377\\376end'");
    req.encoding = Some("base64".into());
    let out = app.client.exec(&sb.id, &req).await.unwrap();
    assert_eq!(out.stdout, "ok\u{fffd}\u{fffd}end");
    use base64::Engine;
    let exact = base64::engine::general_purpose::STANDARD
        .decode(out.stdout_b64.unwrap())
        .unwrap();
    assert_eq!(exact, b"ok\xff\xfeend");
    app.cleanup().await;
}

#[tokio::test]
async fn a_timeout_kills_the_whole_tree_even_children_that_ignore_sigterm_or_escape_the_group() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let started = Instant::now();
    let mut req = sh("trap '' TERM; \
         (trap '' TERM; sleep 1001) & \
         setsid sh -c 'sleep 1002' & \
         sh -c 'setsid sh -c \"sleep 1003\" &' ; \
         sleep 1000");
    req.timeout_s = Some(1.5);
    let out = app.client.exec(&sb.id, &req).await.unwrap();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, None);
    assert!(started.elapsed() < Duration::from_secs(10));
    let left = app
        .client
        .sh(&sb.id, "ps -eo args | grep -c '^sleep 100' || true")
        .await
        .unwrap();
    assert_eq!(
        left.stdout.trim(),
        "0",
        "no sleep of the timed-out tree survives"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_fork_bomb_is_stopped_by_the_pids_limit_and_the_sandbox_survives() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({"pids": 64})).await;
    let mut bomb = sh("bomb() { bomb | bomb & }; bomb; sleep 3");
    bomb.timeout_s = Some(5.0);
    // Its shell may end at once (no pid left for `sleep`): the tree goes with it, as
    // an agent's exec asks, rather than whenever its retrying forks give up.
    bomb.kill_on_exit = true;
    let out = app.client.exec(&sb.id, &bomb).await.unwrap();
    assert_ne!(
        out.exit_code.is_some(),
        out.timed_out,
        "the exec ended one defined way: {out:?}"
    );
    let after = app.client.sh(&sb.id, "echo alive").await.unwrap();
    assert_eq!(after.stdout, "alive\n");
    if common::test_runtime().counts_processes_on_the_host() {
        assert_eq!(common::cgroup_limits(&app, &sb.id).await.pids, "64");
    } else {
        // gVisor: the agent's RLIMIT_NPROC, which gVisor's kernel counts per sandbox. The
        // bomb's killed tasks may count there a moment longer than /proc shows them (the
        // shell then says "Cannot fork"), so this reads until the shell could fork.
        let limits = eventually(Duration::from_secs(10), || async {
            let out = app
                .client
                .sh(&sb.id, "prlimit --nproc --noheadings --output SOFT,HARD")
                .await
                .ok()?;
            (!out.stderr.contains("Cannot fork")).then_some(out)
        })
        .await
        .expect("the shell can fork again within seconds");
        let fields: Vec<&str> = limits.stdout.split_whitespace().collect();
        assert_eq!(fields, ["64", "64"], "{limits:?}");
    }
    // A glob, not `ls`: it needs no statx (which gVisor 20221219 refuses to coreutils).
    let count = app
        .client
        .sh(&sb.id, "set -- /proc/[0-9]*; echo $#")
        .await
        .unwrap();
    let procs: u32 = count.stdout.trim().parse().unwrap();
    assert!(procs < 10, "the bomb's processes are gone: {procs}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_memory_bomb_is_reported_as_oom_killed_and_the_sandbox_survives() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({"memory_mb": 128})).await;
    let mut bomb = sh("head -c 2000m /dev/zero | tail");
    bomb.timeout_s = Some(60.0);
    let out = app.client.exec(&sb.id, &bomb).await.unwrap();
    assert!(out.oom_killed, "{out:?}");
    assert_ne!(out.exit_code, Some(0));
    assert_eq!(
        app.client.sh(&sb.id, "echo alive").await.unwrap().stdout,
        "alive\n"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn memory_filled_by_many_small_processes_is_taken_back_and_the_sandbox_survives() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({"memory_mb": 128})).await;
    // 24 processes of 12 MiB each (`tail` keeps what it reads until its input ends), none
    // big enough alone to be the memory's culprit: together 288 MiB, past the 128 MiB.
    let mut crowd =
        sh("for i in $(seq 24); do { head -c 12m /dev/zero; sleep 5; } | tail & done; wait");
    crowd.timeout_s = Some(60.0);
    let out = app.client.exec(&sb.id, &crowd).await.unwrap();
    assert!(out.oom_killed, "{out:?}");
    assert!(!out.timed_out, "{out:?}");
    assert_eq!(
        app.client.sh(&sb.id, "echo alive").await.unwrap().stdout,
        "alive\n"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn output_past_the_cap_is_dropped_and_flagged() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let mut req = sh("yes 0123456789 | head -c 5000000; echo done >&2");
    req.max_output_bytes = Some(1000);
    let out = app.client.exec(&sb.id, &req).await.unwrap();
    assert!(out.truncated);
    assert_eq!(out.stdout_cut_bytes, Some(5_000_000 - 1000));
    let marker =
        "\n[berth: 4999000 bytes of stdout cut here; raise max_output_bytes to keep more]\n";
    assert_eq!(
        out.stdout.len(),
        1000 + marker.len(),
        "500 bytes of head, 500 of tail"
    );
    assert!(out.stdout.contains(marker));
    assert_eq!(out.stderr, "done\n");
    assert_eq!(out.exit_code, Some(0));
    app.cleanup().await;
}

/// A leftover that holds stdout keeps its pipe open past the exec's end: the answer still
/// comes at once, and with the tail of capped output (kept until the end) and the marker.
#[tokio::test]
async fn a_leftover_holding_the_pipe_neither_delays_the_answer_nor_loses_its_tail() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let started = Instant::now();
    let mut req = sh("yes 0123456789 | head -c 300000; printf END; sleep 60 &");
    req.max_output_bytes = Some(1000);
    let out = app.client.exec(&sb.id, &req).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert!(out.truncated, "{out:?}");
    assert_eq!(out.stdout_cut_bytes, Some(300_003 - 1000));
    assert!(
        out.stdout.ends_with("\n01234567END"),
        "the tail came: {:?}",
        &out.stdout[out.stdout.len() - 40..]
    );
    app.client.sh(&sb.id, "pkill sleep || true").await.unwrap();
    app.cleanup().await;
}

#[tokio::test]
async fn streaming_exec_sends_events_in_order_and_ends_with_exit() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let stream = app
        .client
        .exec_stream(
            &sb.id,
            &sh("for i in 1 2 3; do echo $i; sleep 0.1; done; echo bye >&2; exit 4"),
        )
        .await
        .unwrap();
    let events: Vec<ExecEvent> = stream.map(|e| e.unwrap()).collect().await;
    let stdout: String = events
        .iter()
        .filter_map(|e| match e {
            ExecEvent::Stdout { data } => Some(data.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(stdout, "1\n2\n3\n");
    assert!(events.contains(&ExecEvent::Stderr {
        data: "bye\n".into()
    }));
    match events.last().unwrap() {
        ExecEvent::Exit {
            exit_code,
            timed_out,
            ..
        } => assert_eq!((*exit_code, *timed_out), (Some(4), false)),
        other => panic!("last event must be exit, got {other:?}"),
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_streaming_client_that_disconnects_kills_its_exec() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let mut req = sh("echo started; exec sleep 1234");
    req.timeout_s = Some(600.0);
    let mut stream = Box::pin(app.client.exec_stream(&sb.id, &req).await.unwrap());
    assert_eq!(
        stream.next().await.unwrap().unwrap(),
        ExecEvent::Stdout {
            data: "started\n".into()
        }
    );
    drop(stream);
    let gone = common::eventually(Duration::from_secs(10), || async {
        let out = app
            .client
            .sh(&sb.id, "ps -eo args | grep -c '^sleep 1234' || true")
            .await
            .ok()?;
        (out.stdout.trim() == "0").then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the exec was killed when its client went away"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn background_processes_are_listed_followed_and_killed() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let started: Value = app
        .client
        .request(Method::POST, &format!("/v1/sandboxes/{}/exec", sb.id))
        .json(&json!({"command": "echo ready; exec sleep 600", "background": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = started["pid"].as_u64().expect("a pid");
    let list: Value = app
        .client
        .request(Method::GET, &format!("/v1/sandboxes/{}/processes", sb.id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["processes"][0]["pid"], pid);
    assert_eq!(list["processes"][0]["running"], true);
    // Follow the output; kill only once the process has said it is ready.
    let follow = app
        .client
        .request(
            Method::GET,
            &format!("/v1/sandboxes/{}/processes/{pid}/output?follow=true", sb.id),
        )
        .send()
        .await
        .unwrap();
    let mut body = follow.bytes_stream();
    let mut text = String::new();
    while !text.contains('\n') {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first, json!({"type": "stdout", "data": "ready\n"}));
    let kill = app
        .client
        .request(
            Method::POST,
            &format!("/v1/sandboxes/{}/processes/{pid}/kill", sb.id),
        )
        .json(&json!({"signal": "TERM"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kill.status(), StatusCode::NO_CONTENT);
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "exit", "{text}");
    assert_eq!(last["signal"], 15);
    // Replay from the start after the end: the whole log again.
    let replay = app
        .client
        .request(
            Method::GET,
            &format!("/v1/sandboxes/{}/processes/{pid}/output", sb.id),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(replay, text);
    let missing = app
        .client
        .request(
            Method::GET,
            &format!("/v1/sandboxes/{}/processes/99999/output", sb.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    app.cleanup().await;
}

#[tokio::test]
async fn hostile_or_malformed_exec_requests_are_refused() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let url = format!("/v1/sandboxes/{}/exec", sb.id);
    for (body, needle) in [
        (json!({}), "required"),
        (json!({"cmd": ["true"], "command": "true"}), "not both"),
        (json!({"cmd": []}), "empty"),
        (json!({"command": "true", "timeout_s": 0}), "timeout_s"),
        (json!({"command": "true", "timeout_s": 1e12}), "timeout_s"),
        (
            json!({"command": "true", "max_output_bytes": 1u64 << 40}),
            "max_output_bytes",
        ),
        (json!({"command": "true", "env": {"A=B": "c"}}), "env"),
        (json!({"cmd": ["echo", "a\u{0}b"]}), "NUL"),
        (json!({"command": "true", "shell": "zsh"}), "unknown field"),
    ] {
        let response = app
            .client
            .request(Method::POST, &url)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    // What the sandbox lacks is missing (404) or unusable (409), not a malformed request.
    app.client.sh(&sb.id, "touch plain-file").await.unwrap();
    for (body, status, needle) in [
        (
            json!({"command": "true", "cwd": "/no/such/dir"}),
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            json!({"command": "true", "cwd": "plain-file"}),
            StatusCode::CONFLICT,
            "not a directory",
        ),
        (
            json!({"command": "true", "user": "nosuchuser"}),
            StatusCode::NOT_FOUND,
            "nosuchuser",
        ),
        (
            json!({"cmd": ["no-such-program"], "background": true}),
            StatusCode::NOT_FOUND,
            "no-such-program",
        ),
    ] {
        let response = app
            .client
            .request(Method::POST, &url)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    assert_eq!(
        app.client.sh(&sb.id, "echo fine").await.unwrap().stdout,
        "fine\n"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn coreutils_that_stat_files_work_under_every_runtime() {
    // Bookworm's coreutils call statx with AT_NO_AUTOMOUNT, which gVisor 20221219
    // refuses; its sandboxes preload a shim that clears the flag.
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let out = app
        .client
        .sh(
            &sb.id,
            "mkdir -p d/e && printf 12345 > d/e/f && ls -la d/e | grep -c ' f$' \
             && stat -c %s d/e/f && cp -a d c && du -sb c/e/f | cut -f1 \
             && find c -type f -name f | wc -l",
        )
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_str()),
        (Some(0), "1\n5\n5\n1\n"),
        "{out:?}"
    );
    app.cleanup().await;
}
