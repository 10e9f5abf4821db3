//! Lifetime and idle deadlines, and what survives a supervisor restart: running sandboxes
//! are adopted, deadlines still fire, vanished containers are recorded, strays removed.

mod common;

use common::{docker, eventually, spawn_with, test_config};
use serde_json::json;
use std::time::Duration;

async fn state_of(app: &common::TestApp, id: &str) -> (String, Option<String>) {
    let sb = app.client.get_sandbox(id).await.unwrap();
    (sb.state, sb.reason)
}

#[tokio::test]
async fn a_sandbox_past_its_lifetime_is_stopped_with_its_volume_kept() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;
    let sb = app
        .sandbox(json!({"timeout_s": 2, "files": {"kept.txt": "yes"}}))
        .await;
    let stopped = eventually(Duration::from_secs(20), || async {
        let (state, reason) = state_of(&app, &sb.id).await;
        (state == "stopped").then_some(reason)
    })
    .await;
    assert_eq!(stopped, Some(Some("timeout".to_string())));
    assert!(docker()
        .await
        .inspect_container(&format!("berth-{}", sb.id), None)
        .await
        .is_err());
    assert_eq!(
        app.client.read_file(&sb.id, "kept.txt").await.unwrap(),
        "yes",
        "readable while stopped"
    );
    app.client.resume(&sb.id).await.unwrap();
    assert_eq!(
        app.client.sh(&sb.id, "cat kept.txt").await.unwrap().stdout,
        "yes"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn an_idle_sandbox_is_stopped_but_activity_keeps_it_alive() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;
    let busy = app.sandbox(json!({"idle_timeout_s": 4})).await;
    let idle = app.sandbox(json!({"idle_timeout_s": 4})).await;
    // Keep one busy for twice its idle timeout; reading metadata is not activity.
    for _ in 0..8 {
        app.client.sh(&busy.id, "true").await.unwrap();
        app.client.get_sandbox(&idle.id).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(state_of(&app, &busy.id).await.0, "running");
    let stopped = eventually(Duration::from_secs(10), || async {
        let (state, reason) = state_of(&app, &idle.id).await;
        (state == "stopped").then_some(reason)
    })
    .await;
    assert_eq!(stopped, Some(Some("idle".to_string())));
    app.cleanup().await;
}

#[tokio::test]
async fn a_restarted_supervisor_adopts_running_sandboxes_and_still_enforces_their_deadlines() {
    let temp = tempfile::tempdir().unwrap();
    let mut first = spawn_with(test_config(temp.path())).await;
    let key = first.key.clone();
    let long = first
        .sandbox(json!({"files": {"state.txt": "before restart"}}))
        .await;
    let short = first.sandbox(json!({"timeout_s": 5})).await;
    first.stop_server().await;
    drop(first);

    let second = spawn_with(test_config(temp.path())).await;
    let client = berth::client::Client::new(second.base.clone(), Some(key));
    assert_eq!(client.get_sandbox(&long.id).await.unwrap().state, "running");
    let out = client.sh(&long.id, "cat state.txt").await.unwrap();
    assert_eq!(
        out.stdout, "before restart",
        "the adopted sandbox is usable"
    );
    let stopped = eventually(Duration::from_secs(20), || async {
        let sb = client.get_sandbox(&short.id).await.ok()?;
        (sb.state == "stopped").then_some(sb.reason)
    })
    .await;
    assert_eq!(
        stopped,
        Some(Some("timeout".to_string())),
        "the persisted lifetime fired after the restart"
    );
    second.cleanup().await;
}

#[tokio::test]
async fn on_start_vanished_containers_are_recorded_and_unknown_ones_removed() {
    let temp = tempfile::tempdir().unwrap();
    let mut first = spawn_with(test_config(temp.path())).await;
    let key = first.key.clone();
    let sb = first
        .sandbox(json!({"files": {"f": "on the volume"}}))
        .await;
    first.stop_server().await;
    drop(first);

    let docker = docker().await;
    let options = Some(bollard::container::RemoveContainerOptions {
        force: true,
        ..Default::default()
    });
    docker
        .remove_container(&format!("berth-{}", sb.id), options)
        .await
        .unwrap();
    // A stray container labelled as this instance's, for a sandbox the store never had.
    let instance = std::fs::read_to_string(temp.path().join("instance-id"))
        .unwrap()
        .trim()
        .to_string();
    let stray = "berth-sb-zzzzzzzzzzzzzzzz";
    let labels = std::collections::HashMap::from([
        ("dev.berth.managed".to_string(), "true".to_string()),
        (
            "dev.berth.sandbox".to_string(),
            "sb-zzzzzzzzzzzzzzzz".to_string(),
        ),
        ("dev.berth.instance".to_string(), instance),
    ]);
    let config = bollard::container::Config {
        image: Some("berth/base:latest".to_string()),
        cmd: Some(vec!["sleep".to_string(), "600".to_string()]),
        labels: Some(labels),
        ..Default::default()
    };
    docker
        .create_container(
            Some(bollard::container::CreateContainerOptions {
                name: stray,
                platform: None,
            }),
            config,
        )
        .await
        .unwrap();

    let second = spawn_with(test_config(temp.path())).await;
    let client = berth::client::Client::new(second.base.clone(), Some(key));
    let recorded = client.get_sandbox(&sb.id).await.unwrap();
    assert_eq!(recorded.state, "stopped");
    assert!(recorded.reason.unwrap().contains("vanished"));
    assert!(
        docker.inspect_container(stray, None).await.is_err(),
        "the stray container was removed"
    );
    assert_eq!(
        client.sh(&sb.id, "cat f").await.unwrap().stdout,
        "on the volume",
        "auto-resume brings it back"
    );
    second.cleanup().await;
}
