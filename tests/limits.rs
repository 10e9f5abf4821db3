//! One set of limits, enforced once: concurrency budgets answer 429 `busy` with
//! `Retry-After`, requests up to the supervisor's limits reach the sandbox whole, output
//! past the cap keeps its head and tail, event streams are bounded per tenant, and keys
//! travel only where they must.

mod common;

use berth_runtime::wire::{ExecEvent, ExecRequest};
use common::{eventually, spawn_app, spawn_with, test_config};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn past_the_per_sandbox_budget_a_request_is_busy_until_one_finishes() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.limits.max_requests_per_sandbox = 2;
    let app = spawn_with(config).await;
    let sb = app.sandbox(json!({})).await;
    let other = app.sandbox(json!({})).await;
    let long = ExecRequest {
        command: Some("echo started; sleep 30".into()),
        timeout_s: Some(60.0),
        ..Default::default()
    };
    // Two streams in flight (each has sent its first line, so each holds its place).
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut events = Box::pin(app.client.exec_stream(&sb.id, &long).await.unwrap());
        let first = events.next().await.unwrap().unwrap();
        assert_eq!(
            first,
            ExecEvent::Stdout {
                data: "started\n".into()
            }
        );
        streams.push(events);
    }
    let response = app
        .client
        .request(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{}/exec", sb.id),
        )
        .json(&json!({"command": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "busy", "{body}");
    // File routes share the budget; another sandbox does not.
    let read = app
        .client
        .request(
            reqwest::Method::GET,
            &format!("/v1/sandboxes/{}/files/list", sb.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        app.client.sh(&other.id, "echo free").await.unwrap().stdout,
        "free\n"
    );
    // A client that leaves gives its place back.
    drop(streams.pop());
    let freed = eventually(Duration::from_secs(10), || async {
        app.client.sh(&sb.id, "echo again").await.ok()
    })
    .await
    .expect("a place came free");
    assert_eq!(freed.stdout, "again\n");
    app.cleanup().await;
}

#[tokio::test]
async fn stdin_up_to_the_json_limit_reaches_the_command_whole() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let stdin = "x".repeat(3 * 1024 * 1024);
    let out = app
        .client
        .exec(
            &sb.id,
            &ExecRequest {
                command: Some("wc -c".into()),
                stdin: Some(stdin),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "3145728");
    app.cleanup().await;
}

#[tokio::test]
async fn output_past_the_cap_keeps_its_head_and_tail_with_a_marker_between() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let noisy = ExecRequest {
        command: Some(
            "echo FIRST; head -c 300000 /dev/zero | tr '\\0' x; echo; echo 'SUMMARY: 765 passed'"
                .into(),
        ),
        max_output_bytes: Some(65536),
        ..Default::default()
    };
    let out = app.client.exec(&sb.id, &noisy).await.unwrap();
    assert!(out.truncated);
    assert!(out.stdout.starts_with("FIRST\n"), "head kept");
    assert!(out.stdout.ends_with("SUMMARY: 765 passed\n"), "tail kept");
    let total = 6 + 300_000 + 1 + 20;
    assert_eq!(out.stdout_cut_bytes, Some(total - 65536));
    assert!(
        out.stdout.contains(&format!(
            "[berth: {} bytes of stdout cut here",
            total - 65536
        )),
        "a marker says what was cut"
    );
    let mut events = Box::pin(app.client.exec_stream(&sb.id, &noisy).await.unwrap());
    let mut text = String::new();
    let mut cut = None;
    while let Some(event) = events.next().await {
        match event.unwrap() {
            ExecEvent::Stdout { data } => text.push_str(&data),
            ExecEvent::Truncated { cut_bytes, .. } => cut = cut_bytes,
            _ => {}
        }
    }
    assert_eq!(cut, Some(total - 65536));
    assert!(text.starts_with("FIRST\n") && text.ends_with("SUMMARY: 765 passed\n"));
    assert_eq!(text.len() as u64, 65536);
    app.cleanup().await;
}

#[tokio::test]
async fn event_streams_are_bounded_per_tenant() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.limits.max_event_streams_per_tenant = 1;
    let app = spawn_with(config).await;
    let first = app
        .client
        .request(reqwest::Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = app
        .client
        .request(reqwest::Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another tenant has its own budget.
    let other = app.other_tenant("tenant-b").await;
    let theirs = other
        .request(reqwest::Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::OK);
    drop(first);
    // The server notices at its next keep-alive (every 5 s) at the latest.
    let again = eventually(Duration::from_secs(30), || async {
        let r = app
            .client
            .request(reqwest::Method::GET, "/v1/events")
            .send()
            .await
            .ok()?;
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(again.is_some(), "a closed stream frees its place");
    app.cleanup().await;
}

#[tokio::test]
async fn keys_in_the_query_string_are_refused_outside_websocket_upgrades() {
    let app = spawn_app().await;
    let url = format!("{}/v1/sandboxes?token={}", app.base, app.key);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    app.cleanup().await;
}

#[tokio::test]
async fn metrics_count_states_on_change_and_ended_records_are_pruned() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.limits.ended_retention_s = 2;
    let app = spawn_with(config).await;
    let gauge = |text: &str, state: &str| -> u64 {
        let prefix = format!("berth_sandboxes{{state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or(u64::MAX)
    };
    let scrape = || async {
        reqwest::get(format!("{}/metrics", app.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let sb = app.sandbox(json!({})).await;
    let text = scrape().await;
    assert_eq!(gauge(&text, "running"), 1, "{text}");
    app.client.stop(&sb.id).await.unwrap();
    let text = scrape().await;
    assert_eq!((gauge(&text, "running"), gauge(&text, "stopped")), (0, 1));
    app.client.delete(&sb.id, false).await.unwrap();
    assert_eq!(gauge(&scrape().await, "terminated"), 1);
    let pruned = eventually(Duration::from_secs(20), || async {
        let gone = app.client.get_sandbox(&sb.id).await.is_err();
        gone.then_some(())
    })
    .await;
    assert!(
        pruned.is_some(),
        "a terminated record is forgotten after its retention"
    );
    assert_eq!(gauge(&scrape().await, "terminated"), 0);
    let ready: Value = reqwest::get(format!("{}/readyz", app.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready,
        json!({"docker": "ok", "database": "ok", "server": "ok"})
    );
    app.cleanup().await;
}

#[tokio::test]
async fn read_only_helpers_count_against_their_tenants_ceiling() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.limits.max_readers_per_tenant = 1;
    let app = spawn_with(config).await;
    let a = app.sandbox(json!({"files": {"f": "a"}})).await;
    let b = app.sandbox(json!({"files": {"f": "b"}})).await;
    app.client.stop(&a.id).await.unwrap();
    app.client.stop(&b.id).await.unwrap();
    assert_eq!(app.client.read_file(&a.id, "f").await.unwrap(), "a");
    let err = app.client.read_file(&b.id, "f").await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS), "{err}");
    assert!(err.to_string().contains("read-only helpers"), "{err}");
    // Its own helper, already running, is reused.
    assert_eq!(
        app.client.read_file(&a.id, "f").await.unwrap(),
        "a",
        "its own helper is reused"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn json_bodies_being_read_are_bounded_server_wide() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.limits.max_json_bytes_in_flight = 1024 * 1024;
    let app = spawn_with(config).await;
    let sb = app.sandbox(json!({})).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let head = |len: usize| {
        format!(
            "POST /v1/sandboxes/{}/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
            sb.id, app.key
        )
    };
    // A client that declares 1 MiB and sends it slowly holds that much of the budget.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(head(1024 * 1024).as_bytes()).await.unwrap();
    slow.write_all(b"{\"command\": \"true\", \"stdin\": \"")
        .await
        .unwrap();
    let refused = eventually(Duration::from_secs(10), || async {
        let response = app
            .client
            .request(
                reqwest::Method::POST,
                &format!("/v1/sandboxes/{}/exec", sb.id),
            )
            .json(&json!({"command": "true", "stdin": "x".repeat(100_000)}))
            .send()
            .await
            .ok()?;
        (response.status() == StatusCode::TOO_MANY_REQUESTS).then_some(())
    })
    .await;
    assert!(refused.is_some(), "a second large body waits for room");
    // Small requests without a body are not held back.
    assert_eq!(
        app.client.get_sandbox(&sb.id).await.unwrap().state,
        "running"
    );
    // The slow client finishes (or leaves): its share comes back.
    let rest = 1024 * 1024 - 30 - 2;
    slow.write_all("x".repeat(rest).as_bytes()).await.unwrap();
    slow.write_all(b"\"}").await.unwrap();
    let mut status = [0u8; 12];
    slow.read_exact(&mut status).await.unwrap();
    assert_eq!(&status, b"HTTP/1.1 200");
    drop(slow);
    let out = app
        .client
        .exec(
            &sb.id,
            &ExecRequest {
                command: Some("wc -c".into()),
                stdin: Some("x".repeat(100_000)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.stdout.trim(), "100000");
    app.cleanup().await;
}
