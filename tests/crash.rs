//! Crash safety with a real `berth serve` process: SIGKILLed at every step of create, stop,
//! resume, delete, snapshot, archive and restore (`BERTH_CRASH_AT`), then started again
//! on the same data dir, after which Docker's objects, the store's rows and the archive's
//! objects must agree and the operation must work when retried; containers killed or
//! removed behind berth's back; SIGTERM; a second server on the same data dir.

mod common;

use berth::client::Client;
use berth::domain::{SandboxState, SnapshotKind, SnapshotState, TenantId};
use common::eventually;
use common::serve::{serve, DataDir, Serve};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What a data dir's server owns, as Docker, the store and the archive see it; asserts
/// that the three agree: every running sandbox has its container and nothing else does,
/// every volume Docker has is recorded and every recorded one exists, an archived
/// sandbox has no volume and a whole archive, every snapshot row is ready and has its
/// object, and no object lacks a row.
async fn assert_consistent(data: &Path) {
    let instance = std::fs::read_to_string(data.join("instance-id")).unwrap();
    let filter = format!("label=dev.berth.instance={}", instance.trim());
    let lines = |args: &[&str]| -> Vec<String> {
        let out = Command::new("docker").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let containers = lines(&[
        "ps",
        "-a",
        "--filter",
        &filter,
        "--format",
        "{{.Label \"dev.berth.sandbox\"}} {{.Label \"dev.berth.role\"}} {{.State}}",
    ]);
    let volumes: BTreeSet<String> = lines(&["volume", "ls", "-q", "--filter", &filter])
        .into_iter()
        .collect();

    let store = berth::store::open(&format!(
        "sqlite://{}?mode=rwc",
        data.join("berth.db").display()
    ))
    .await
    .unwrap();
    let sandboxes = store.list_sandboxes(None, None).await.unwrap();
    let snapshots = store.list_snapshots(None).await.unwrap();
    let tenant = TenantId::parse("default").unwrap();
    let recorded_volumes: BTreeSet<String> = store
        .list_volumes(&tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|(v, _)| v.to_string())
        .collect();
    let objects: BTreeSet<String> = std::fs::read_dir(data.join("archive/snapshots"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| format!("snapshots/{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    let report =
        format!(
        "containers {containers:?}\nvolumes {volumes:?}\nrecorded volumes {recorded_volumes:?}\n\
         objects {objects:?}\nsandboxes {:?}\nsnapshots {:?}",
        sandboxes
            .iter()
            .map(|s| (s.id.to_string(), s.state, s.volume.to_string(), s.archive.clone()))
            .collect::<Vec<_>>(),
        snapshots
            .iter()
            .map(|s| (s.id.to_string(), s.kind, s.state))
            .collect::<Vec<_>>()
    );

    let running: BTreeSet<String> = sandboxes
        .iter()
        .filter(|s| s.state == SandboxState::Running)
        .map(|s| s.id.to_string())
        .collect();
    let with_container: BTreeSet<String> = containers
        .iter()
        .map(|c| {
            let parts: Vec<&str> = c.split(' ').collect();
            assert_eq!(parts.get(1), Some(&""), "only sandbox containers: {report}");
            assert_eq!(parts.get(2), Some(&"running"), "{report}");
            parts[0].to_string()
        })
        .collect();
    assert_eq!(containers.len(), with_container.len(), "{report}");
    assert_eq!(with_container, running, "{report}");
    assert_eq!(volumes, recorded_volumes, "{report}");
    for s in &sandboxes {
        match s.state {
            SandboxState::Creating => panic!("a create was left half done: {report}"),
            SandboxState::Running | SandboxState::Stopped => {
                assert!(volumes.contains(s.volume.as_str()), "{report}")
            }
            SandboxState::Archived => {
                assert!(!volumes.contains(s.volume.as_str()), "{report}");
                let archive = s.archive.as_ref().expect("an archive");
                let snap = snapshots
                    .iter()
                    .find(|x| &x.id == archive)
                    .unwrap_or_else(|| panic!("the archive row is missing: {report}"));
                assert_eq!(snap.kind, SnapshotKind::Archive, "{report}");
            }
            SandboxState::Failed => {
                assert!(!volumes.contains(s.volume.as_str()), "{report}")
            }
            _ => {}
        }
    }
    for snap in &snapshots {
        assert_eq!(snap.state, SnapshotState::Ready, "{report}");
        if snap.kind == SnapshotKind::Archive {
            assert!(
                sandboxes
                    .iter()
                    .any(|s| s.state == SandboxState::Archived
                        && s.archive.as_ref() == Some(&snap.id)),
                "an archive no sandbox uses: {report}"
            );
        }
    }
    let keyed: BTreeSet<String> = snapshots.iter().map(|s| s.id.object_key()).collect();
    assert_eq!(objects, keyed, "{report}");
}

async fn create(client: &Client, key: Option<&str>) -> Result<Value, reqwest::Error> {
    let mut req = client
        .request(Method::POST, "/v1/sandboxes")
        .json(&json!({"image": "base", "memory_mb": 256, "cpu": 1.0}));
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    assert!(status.is_success(), "{status} {body}");
    Ok(body)
}

async fn state(client: &Client, id: &str) -> String {
    client.get_sandbox(id).await.unwrap().state
}

async fn until_state(client: &Client, id: &str, want: &str) {
    let got = eventually(Duration::from_secs(60), || async {
        let s = client.get_sandbox(id).await.ok()?;
        (s.state == want).then_some(())
    })
    .await;
    assert!(
        got.is_some(),
        "{id} never became {want}: {}",
        state(client, id).await
    );
}

/// A sandbox with a file whose content must survive whatever the crash hit.
async fn sandbox_with_file(client: &Client) -> String {
    let id = create(client, None).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    client.write_file(&id, "keep.txt", "kept").await.unwrap();
    id
}

async fn has_file(client: &Client, id: &str) {
    let out = client.sh(id, "cat keep.txt").await.unwrap();
    assert_eq!(out.stdout, "kept", "{out:?}");
}

async fn crash_during_create(point: &str) {
    let data = DataDir::new();
    let first = serve(&data.path(), &[("BERTH_CRASH_AT", point)]).await;
    let client = first.client.clone();
    assert!(
        create(&client, Some("the-key")).await.is_err(),
        "the crash cut the answer"
    );
    first.crashed_at(point).await;

    let second = serve(&data.path(), &[]).await;
    assert_consistent_live(&data.path(), &second).await;
    // The retry with the same key creates the sandbox, once; a second retry returns it.
    let made = create(&second.client, Some("the-key")).await.unwrap();
    let again = create(&second.client, Some("the-key")).await.unwrap();
    assert_eq!(made["id"], again["id"]);
    let id = made["id"].as_str().unwrap();
    assert_eq!(
        second.client.sh(id, "echo up").await.unwrap().stdout,
        "up\n"
    );
    let live: Vec<_> = second
        .client
        .list_sandboxes("state=running")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, vec![id.to_string()]);
    assert_eq!(second.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

/// Checks consistency while `_server` runs and is idle (the store is SQLite in WAL mode:
/// reading beside it is safe).
async fn assert_consistent_live(data: &Path, _server: &Serve) {
    assert_consistent(data).await;
}

#[tokio::test]
async fn crash_at_create_after_record() {
    crash_during_create("create.after_record").await;
}

#[tokio::test]
async fn crash_at_create_after_volume() {
    crash_during_create("create.after_volume").await;
}

#[tokio::test]
async fn crash_at_create_after_container() {
    crash_during_create("create.after_container").await;
}

#[tokio::test]
async fn crash_at_stop_after_container() {
    let point = "stop.after_container";
    let data = DataDir::new();
    let first = serve(&data.path(), &[("BERTH_CRASH_AT", point)]).await;
    let id = sandbox_with_file(&first.client).await;
    assert!(first.client.stop(&id).await.is_err());
    first.crashed_at(point).await;
    let second = serve(&data.path(), &[]).await;
    // The container is gone, so the stop is finished.
    assert_eq!(state(&second.client, &id).await, "stopped");
    assert_consistent_live(&data.path(), &second).await;
    second.client.resume(&id).await.unwrap();
    has_file(&second.client, &id).await;
    assert_eq!(second.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

#[tokio::test]
async fn crash_at_resume_after_container() {
    let point = "resume.after_container";
    let data = DataDir::new();
    let first = serve(&data.path(), &[("BERTH_CRASH_AT", point)]).await;
    let id = sandbox_with_file(&first.client).await;
    first.client.stop(&id).await.unwrap();
    assert!(first.client.resume(&id).await.is_err());
    first.crashed_at(point).await;
    let second = serve(&data.path(), &[]).await;
    // The record never said running: the resume is undone (its container removed).
    assert_eq!(state(&second.client, &id).await, "stopped");
    assert_consistent_live(&data.path(), &second).await;
    second.client.resume(&id).await.unwrap();
    has_file(&second.client, &id).await;
    assert_eq!(second.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

#[tokio::test]
async fn crash_at_delete_after_container() {
    let point = "delete.after_container";
    let data = DataDir::new();
    let first = serve(&data.path(), &[("BERTH_CRASH_AT", point)]).await;
    let id = sandbox_with_file(&first.client).await;
    assert!(first.client.delete(&id, false).await.is_err());
    first.crashed_at(point).await;
    let second = serve(&data.path(), &[]).await;
    // Its container went, its volume did not: stopped, files whole; the retry deletes.
    assert_eq!(state(&second.client, &id).await, "stopped");
    assert_consistent_live(&data.path(), &second).await;
    second.client.delete(&id, false).await.unwrap();
    assert_eq!(state(&second.client, &id).await, "terminated");
    assert_eq!(second.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

#[tokio::test]
async fn crash_at_resume_after_record() {
    // An archived sandbox, resumed: the record says running, its archive not dropped yet.
    let point = "resume.after_record";
    let data = DataDir::new();
    let archive_soon = ("BERTH_ARCHIVE_AFTER_S", "1");
    let first = serve(&data.path(), &[("BERTH_CRASH_AT", point), archive_soon]).await;
    let id = sandbox_with_file(&first.client).await;
    first.client.stop(&id).await.unwrap();
    until_state(&first.client, &id, "archived").await;
    assert!(first.client.resume(&id).await.is_err());
    first.crashed_at(point).await;
    let second = serve(&data.path(), &[]).await;
    // Finished: running on its restored volume, the archive removed.
    assert_eq!(state(&second.client, &id).await, "running");
    assert_consistent_live(&data.path(), &second).await;
    has_file(&second.client, &id).await;
    assert_eq!(second.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

#[tokio::test]
async fn crash_at_delete_after_record() {
    let point = "delete.after_record";
    let data = DataDir::new();
    // A delete without keep_volume: the volume goes at the restart.
    let first = serve(&data.path(), &[("BERTH_CRASH_AT", point)]).await;
    let plain = sandbox_with_file(&first.client).await;
    let volume = first.client.get_sandbox(&plain).await.unwrap().volume;
    assert!(first.client.delete(&plain, false).await.is_err());
    first.crashed_at(point).await;
    let second = serve(&data.path(), &[]).await;
    assert_eq!(state(&second.client, &plain).await, "terminated");
    let listed = Command::new("docker")
        .args(["volume", "inspect", &volume])
        .output()
        .unwrap();
    assert!(
        !listed.status.success(),
        "the deleted sandbox's volume was left"
    );
    assert_consistent_live(&data.path(), &second).await;
    drop(second);

    // An archived sandbox deleted with keep_volume: its archive is the tenant's snapshot.
    let archive_soon = ("BERTH_ARCHIVE_AFTER_S", "1");
    let third = serve(&data.path(), &[("BERTH_CRASH_AT", point), archive_soon]).await;
    let id = sandbox_with_file(&third.client).await;
    third.client.stop(&id).await.unwrap();
    until_state(&third.client, &id, "archived").await;
    assert!(third.client.delete(&id, true).await.is_err());
    third.crashed_at(point).await;
    let fourth = serve(&data.path(), &[]).await;
    assert_eq!(state(&fourth.client, &id).await, "terminated");
    let list: Value = fourth
        .client
        .request(Method::GET, "/v1/snapshots")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kept = &list["snapshots"][0];
    assert_eq!(kept["sandbox_id"], id.as_str(), "{list}");
    let fork = fourth
        .client
        .create_sandbox(&json!({"image": "base", "from_snapshot": kept["id"]}))
        .await
        .unwrap();
    has_file(&fourth.client, &fork.id).await;
    assert_eq!(fourth.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

async fn crash_during_snapshot(point: &str) {
    let data = DataDir::new();
    let first = serve(&data.path(), &[("BERTH_CRASH_AT", point)]).await;
    let id = sandbox_with_file(&first.client).await;
    let resp = first
        .client
        .request(Method::POST, &format!("/v1/sandboxes/{id}/snapshots"))
        .send()
        .await;
    assert!(resp.is_err(), "the crash cut the answer");
    first.crashed_at(point).await;
    let second = serve(&data.path(), &[]).await;
    // The half-written snapshot is undone: no row, no object.
    let list: Value = second
        .client
        .request(Method::GET, "/v1/snapshots")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["snapshots"], json!([]));
    assert_consistent_live(&data.path(), &second).await;
    let resp = second
        .client
        .request(Method::POST, &format!("/v1/sandboxes/{id}/snapshots"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let snap: Value = resp.json().await.unwrap();
    let fork = second
        .client
        .create_sandbox(&json!({"image": "base", "from_snapshot": snap["id"]}))
        .await
        .unwrap();
    has_file(&second.client, &fork.id).await;
    assert_eq!(second.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

#[tokio::test]
async fn crash_at_snapshot_after_record() {
    crash_during_snapshot("snapshot.after_record").await;
}

#[tokio::test]
async fn crash_at_snapshot_after_upload() {
    crash_during_snapshot("snapshot.after_upload").await;
}

async fn crash_during_archive(point: &str) {
    let data = DataDir::new();
    let archive_soon = ("BERTH_ARCHIVE_AFTER_S", "1");
    let first = serve(&data.path(), &[("BERTH_CRASH_AT", point), archive_soon]).await;
    let id = sandbox_with_file(&first.client).await;
    first.client.stop(&id).await.unwrap();
    // The reaper archives it a second later, and the crash comes.
    first.crashed_at(point).await;
    let second = serve(&data.path(), &[]).await;
    assert_consistent_live(&data.path(), &second).await;
    drop(second);
    // Archiving goes on after the restart, and the archive comes back whole.
    let third = serve(&data.path(), &[archive_soon]).await;
    until_state(&third.client, &id, "archived").await;
    has_file(&third.client, &id).await;
    assert_eq!(state(&third.client, &id).await, "running");
    assert_eq!(third.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

#[tokio::test]
async fn crash_at_archive_after_upload() {
    crash_during_archive("archive.after_upload").await;
}

#[tokio::test]
async fn crash_at_archive_after_record() {
    crash_during_archive("archive.after_record").await;
}

/// An archive cut short on an S3-compatible store (the crash matrix above uses the local
/// one): the object uploaded but never recorded is removed from the bucket at the
/// restart, and the sandbox, still stopped, resumes with its files.
#[tokio::test]
async fn an_archive_cut_short_on_s3_leaves_no_object_in_the_bucket() {
    let point = "archive.after_upload";
    let s3 = common::S3Server::start().await;
    let data = DataDir::new();
    let url = format!("s3://{}/crash", s3.bucket);
    let env = [
        ("BERTH_ARCHIVE_URL", url.as_str()),
        ("BERTH_ARCHIVE_ENDPOINT", s3.endpoint.as_str()),
        ("BERTH_ARCHIVE_REGION", "us-east-1"),
        ("BERTH_ARCHIVE_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", common::S3_ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", common::S3_SECRET_KEY),
    ];
    let mut crashing = env.to_vec();
    crashing.extend([("BERTH_CRASH_AT", point), ("BERTH_ARCHIVE_AFTER_S", "1")]);
    let first = serve(&data.path(), &crashing).await;
    let id = sandbox_with_file(&first.client).await;
    first.client.stop(&id).await.unwrap();
    first.crashed_at(point).await;
    let uploaded = s3.keys().await;
    assert_eq!(uploaded.len(), 1, "the upload finished first: {uploaded:?}");
    let second = serve(&data.path(), &env).await;
    assert!(s3.keys().await.is_empty(), "the unrecorded object went");
    assert_eq!(state(&second.client, &id).await, "stopped");
    second.client.resume(&id).await.unwrap();
    has_file(&second.client, &id).await;
    second.client.delete(&id, false).await.unwrap();
    assert_eq!(second.terminate().await.code(), Some(0));
}

async fn crash_during_restore(point: &str) {
    let data = DataDir::new();
    let archive_soon = ("BERTH_ARCHIVE_AFTER_S", "1");
    let first = serve(&data.path(), &[("BERTH_CRASH_AT", point), archive_soon]).await;
    let id = sandbox_with_file(&first.client).await;
    first.client.stop(&id).await.unwrap();
    until_state(&first.client, &id, "archived").await;
    assert!(first.client.resume(&id).await.is_err());
    first.crashed_at(point).await;
    let second = serve(&data.path(), &[]).await;
    // The restore is undone: still archived, its archive whole, no volume left.
    assert_eq!(state(&second.client, &id).await, "archived");
    assert_consistent_live(&data.path(), &second).await;
    second.client.resume(&id).await.unwrap();
    has_file(&second.client, &id).await;
    assert_eq!(second.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

/// A fork cut short after its files came out of the snapshot: undone at the restart, and
/// the retried create with the same key makes the fork, once, with the files.
#[tokio::test]
async fn crash_at_create_after_restore() {
    let point = "create.after_restore";
    let data = DataDir::new();
    let first = serve(&data.path(), &[("BERTH_CRASH_AT", point)]).await;
    let id = sandbox_with_file(&first.client).await;
    let snap: Value = first
        .client
        .request(Method::POST, &format!("/v1/sandboxes/{id}/snapshots"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fork = json!({"image": "base", "memory_mb": 256, "from_snapshot": snap["id"]});
    let cut = first
        .client
        .request(Method::POST, "/v1/sandboxes")
        .header("Idempotency-Key", "the-fork")
        .json(&fork)
        .send()
        .await;
    assert!(cut.is_err(), "the crash cut the answer");
    first.crashed_at(point).await;

    let second = serve(&data.path(), &[]).await;
    assert_consistent_live(&data.path(), &second).await;
    let forked = |key: &'static str| {
        let client = second.client.clone();
        let fork = fork.clone();
        async move {
            let resp = client
                .request(Method::POST, "/v1/sandboxes")
                .header("Idempotency-Key", key)
                .json(&fork)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.json::<Value>().await.unwrap()
        }
    };
    let made = forked("the-fork").await;
    let again = forked("the-fork").await;
    assert_eq!(made["id"], again["id"]);
    assert_ne!(made["id"].as_str(), Some(id.as_str()));
    has_file(&second.client, made["id"].as_str().unwrap()).await;
    assert_eq!(second.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

/// A read of an archived sandbox cut short after its reader restored the archive into a
/// volume of its own: the restart removes that volume (the sandbox stays archived, its
/// archive whole), and reads work again.
#[tokio::test]
async fn crash_at_reader_after_restore() {
    let point = "reader.after_restore";
    let data = DataDir::new();
    let archive_soon = ("BERTH_ARCHIVE_AFTER_S", "1");
    let first = serve(&data.path(), &[("BERTH_CRASH_AT", point), archive_soon]).await;
    let id = sandbox_with_file(&first.client).await;
    first.client.stop(&id).await.unwrap();
    until_state(&first.client, &id, "archived").await;
    assert!(first.client.read_file(&id, "keep.txt").await.is_err());
    first.crashed_at(point).await;
    let second = serve(&data.path(), &[]).await;
    assert_eq!(state(&second.client, &id).await, "archived");
    assert_consistent_live(&data.path(), &second).await;
    let kept = second.client.read_file(&id, "keep.txt").await.unwrap();
    assert_eq!(kept.as_ref(), b"kept");
    assert_eq!(state(&second.client, &id).await, "archived");
    assert_eq!(second.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

#[tokio::test]
async fn crash_at_restore_after_volume() {
    crash_during_restore("restore.after_volume").await;
}

#[tokio::test]
async fn crash_at_restore_after_extract() {
    crash_during_restore("restore.after_extract").await;
}

#[test]
fn every_crash_point_has_a_test() {
    let source = include_str!("crash.rs");
    for point in berth::crash::POINTS {
        let name = format!("fn crash_at_{}()", point.replace('.', "_"));
        assert!(source.contains(&name), "no test for crash point {point}");
    }
}

/// Collects the SSE stream's text until it contains `needle` (or 20 s pass).
async fn until_event(resp: reqwest::Response, needle: &str) -> String {
    use futures_util::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains(needle) {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let Ok(Some(Ok(chunk))) = next else {
            panic!("no {needle} event: {seen}");
        };
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

#[tokio::test]
async fn containers_killed_or_removed_behind_berths_back_show_within_seconds() {
    let data = DataDir::new();
    let server = serve(&data.path(), &[]).await;
    // `rm -f` kills first: berth may see the dead container or none at all.
    for (how, args, reasons) in [
        ("docker kill", vec!["kill"], &["exited"][..]),
        (
            "docker rm -f",
            vec!["rm", "-f"],
            &["exited", "vanished"][..],
        ),
    ] {
        let id = sandbox_with_file(&server.client).await;
        let events = server
            .client
            .request(Method::GET, "/v1/events")
            .send()
            .await
            .unwrap();
        let out = Command::new("docker")
            .args(&args)
            .arg(format!("berth-{id}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{how}: {out:?}");
        // No call to the sandbox is needed for berth to notice.
        let seen = until_event(events, "sandbox.stopped").await;
        assert!(seen.contains(&id), "{how}: {seen}");
        let sb = server.client.get_sandbox(&id).await.unwrap();
        assert_eq!(sb.state, "stopped", "{how}");
        assert!(
            reasons.contains(&sb.reason.as_deref().unwrap_or("")),
            "{how}: {sb:?}"
        );
        // The volume survived; the sandbox resumes with its files.
        server.client.resume(&id).await.unwrap();
        has_file(&server.client, &id).await;
    }
    assert_eq!(server.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

/// The kernel's OOM killer taking PID 1 (the agent) behind berth's back: a memory hog
/// started with `docker exec`, not through the API, and the agent made the OOM killer's
/// first choice from the host. The sandbox is stopped with reason `oom` and its event,
/// with no call to it, and resumes with its files. runc only: under gVisor the agent's
/// memory guard takes the hog before the host's limit is reached (tests/exec.rs).
#[tokio::test]
async fn a_sandbox_whose_agent_the_oom_killer_takes_is_stopped_as_oom() {
    if common::test_runtime() == berth::domain::Runtime::Gvisor {
        eprintln!("runc only: gVisor's own kernel and the agent's guard meet the hog first");
        return;
    }
    let data = DataDir::new();
    let server = serve(&data.path(), &[]).await;
    let id = sandbox_with_file(&server.client).await;
    let name = format!("berth-{id}");
    let inspect = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &name])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), "1000").unwrap();
    let events = server
        .client
        .request(Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    // `tail` keeps a line without a newline whole: it grows past the 256 MiB limit.
    let hog = Command::new("docker")
        .args(["exec", &name, "sh", "-c", "head -c 2000m /dev/zero | tail"])
        .output()
        .unwrap();
    assert!(!hog.status.success(), "{hog:?}");
    let seen = until_event(events, "sandbox.oom").await;
    assert!(seen.contains(&id), "{seen}");
    let sb = server.client.get_sandbox(&id).await.unwrap();
    assert_eq!(
        (sb.state.as_str(), sb.reason.as_deref()),
        ("stopped", Some("oom")),
        "{sb:?}"
    );
    server.client.resume(&id).await.unwrap();
    has_file(&server.client, &id).await;
    assert_eq!(server.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}

#[tokio::test]
async fn sigterm_drains_and_leaves_sandboxes_running_and_one_server_per_data_dir() {
    let data = DataDir::new();
    let server = serve(&data.path(), &[("BERTH_SHUTDOWN_NOTICE_MS", "1500")]).await;
    let id = sandbox_with_file(&server.client).await;

    // A second server on the same data dir refuses, saying why.
    let second = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("BERTH_POOL", "off")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains("another berth server") && said.contains(&server.child.id().to_string()),
        "{said}"
    );

    // An exec under way, and a terminal attached.
    let (ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/v1/sandboxes/{id}/terminal?token={}",
        server.base.replace("http://", "ws://"),
        server.client.key().unwrap()
    ))
    .await
    .unwrap();
    let exec_client = server.client.clone();
    let exec_id = id.clone();
    let exec =
        tokio::spawn(async move { exec_client.sh(&exec_id, "sleep 1; echo finished").await });
    // And one that would outlast the shutdown's grace period.
    let long_client = server.client.clone();
    let long_id = id.clone();
    let long =
        tokio::spawn(async move { long_client.sh(&long_id, "sleep 120; echo too-late").await });
    // Both execs are running before the signal.
    eventually(Duration::from_secs(10), || async {
        let out = server
            .client
            .sh(&id, "ps -eo args | grep -c -e '^sleep 1$' -e '^sleep 120$'")
            .await
            .ok()?;
        (out.stdout.trim() == "2").then_some(())
    })
    .await
    .expect("the execs started");

    let pid = server.child.id() as i32;
    let signalled = std::time::Instant::now();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    // Not ready any more, while requests are still answered.
    let http = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(5), || async {
        let r = http
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .ok()?;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    assert!(ready.is_some(), "/readyz turned 503");
    // The terminal is closed with 1001 (going away).
    use futures_util::StreamExt;
    let (_, mut read) = ws.split();
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = read.next().await {
            if let Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) = msg {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("the terminal was closed");
    assert_eq!(close, Some(1001));
    // The exec under way finished with its output.
    let out = exec.await.unwrap().unwrap();
    assert_eq!(out.stdout, "finished\n");
    let status = server.ended().await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    // The long one was cut off at the end of the grace period (1.5 s notice + 5 s), and
    // the server still ended cleanly.
    let waited = signalled.elapsed();
    assert!(waited < Duration::from_secs(20), "{waited:?}");
    assert!(waited >= Duration::from_secs(6), "{waited:?}");
    match long.await.unwrap() {
        Err(_) => {}
        Ok(out) => assert!(!out.stdout.contains("too-late"), "{out:?}"),
    }

    // The sandbox kept running; the next server adopts it.
    let next = serve(&data.path(), &[]).await;
    assert_eq!(state(&next.client, &id).await, "running");
    has_file(&next.client, &id).await;
    assert_eq!(next.terminate().await.code(), Some(0));
    assert_consistent(&data.path()).await;
}
