//! Snapshots, forks, replay reads and archives against the real engine: a snapshot of a
//! running and of a stopped sandbox, a fork from it byte for byte, a file read out of a
//! snapshot whose sandbox is gone, tenants kept apart, archive → resume round trips
//! (explicit and `auto_resume`), hostile archive entries, and the S3 store (a real
//! S3-compatible server, SeaweedFS).

mod common;

use berth::client::{Client, SandboxInfo};
use berth_runtime::wire::{GlobRequest, GrepRequest};
use common::{eventually, fingerprint, make_tree, spawn_with, test_config, S3Server, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// Takes a snapshot of `id`; the answer's JSON.
async fn snapshot(client: &Client, id: &str, label: Option<&str>) -> Value {
    let mut req = client.request(Method::POST, &format!("/v1/sandboxes/{id}/snapshots"));
    if let Some(label) = label {
        req = req.json(&json!({ "label": label }));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// `GET /v1/snapshots/{snap}/files?path=`: status and body.
async fn snapshot_file(client: &Client, snap: &str, path: &str) -> (StatusCode, bytes::Bytes) {
    let resp = client
        .request(Method::GET, &format!("/v1/snapshots/{snap}/files"))
        .query(&[("path", path)])
        .send()
        .await
        .unwrap();
    (resp.status(), resp.bytes().await.unwrap())
}

fn names(listing: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(listing).unwrap();
    let mut names: Vec<String> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn archive_objects(app: &TestApp) -> Vec<String> {
    let dir = app.data_dir.join("archive/snapshots");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn volume_exists(name: &str) -> bool {
    common::docker().await.inspect_volume(name).await.is_ok()
}

#[tokio::test]
async fn a_snapshot_forks_byte_for_byte_and_replays_after_its_sandbox_is_gone() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;
    let sb = app.sandbox(json!({})).await;
    make_tree(&app, &sb.id, 3 << 20).await;
    let before = fingerprint(&app, &sb.id).await;

    let snap = snapshot(&app.client, &sb.id, Some("after setup")).await;
    let snap_id = snap["id"].as_str().unwrap().to_string();
    assert!(snap_id.starts_with("snap-"), "{snap}");
    assert_eq!(snap["sandbox_id"], sb.id.as_str());
    assert_eq!(snap["state"], "ready");
    assert_eq!(snap["label"], "after setup");
    // 3 MiB of random data does not compress.
    assert!(snap["size_bytes"].as_u64().unwrap() > 3 << 20, "{snap}");
    assert_eq!(snap["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(archive_objects(&app), vec![format!("{snap_id}.tar.zst")]);

    // Listed and fetched.
    let list: Value = app
        .client
        .request(Method::GET, "/v1/snapshots")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![snap_id.as_str()]);
    let got: Value = app
        .client
        .request(Method::GET, &format!("/v1/snapshots/{snap_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, snap);

    // Changes after the snapshot are not in it, nor in the fork.
    app.client
        .write_file(&sb.id, "later.txt", "after")
        .await
        .unwrap();

    // A fork restores the tree exactly: modes, links, empty dirs, binary bytes, mtimes.
    let fork = app
        .sandbox(json!({ "from_snapshot": snap_id.as_str() }))
        .await;
    assert_ne!(fork.volume, sb.volume);
    assert_eq!(fingerprint(&app, &fork.id).await, before);
    let mtime = app.client.sh(&fork.id, "stat -c %Y d/e/f").await.unwrap();
    assert_eq!(mtime.stdout.trim(), "1577934245", "{mtime:?}");
    // The fork is its own: writes there do not reach the source.
    app.client
        .write_file(&fork.id, "bin3", "changed")
        .await
        .unwrap();
    assert_eq!(
        app.client.read_file(&sb.id, "bin3").await.unwrap().as_ref(),
        b"\x00\xff\x01"
    );

    // The source goes, volume and all; the snapshot still answers reads (replay).
    app.client.delete(&sb.id, false).await.unwrap();
    let (status, body) = snapshot_file(&app.client, &snap_id, "d/e/f").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_ref(), b"x");
    let (status, body) =
        snapshot_file(&app.client, &snap_id, "/workspace/with space/a b.txt").await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"spaced"[..]));
    let (status, big) = snapshot_file(&app.client, &snap_id, "big.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(big.len(), 3 << 20);
    let (_, root) = snapshot_file(&app.client, &snap_id, ".").await;
    assert_eq!(
        names(&root),
        vec![
            "abs-link",
            "big.bin",
            "bin3",
            "d",
            "empty",
            "link",
            "with space"
        ]
    );
    let (_, sub) = snapshot_file(&app.client, &snap_id, "d").await;
    assert_eq!(names(&sub), vec!["d/e"]);
    let (status, _) = snapshot_file(&app.client, &snap_id, "later.txt").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = snapshot_file(&app.client, &snap_id, "link").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a symlink is neither file nor dir"
    );

    // Another tenant sees none of it.
    let other = app.other_tenant("tenant-b").await;
    for path in [
        format!("/v1/snapshots/{snap_id}"),
        format!("/v1/snapshots/{snap_id}/files?path=d/e/f"),
    ] {
        let resp = other.request(Method::GET, &path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let theirs: Value = other
        .request(Method::GET, "/v1/snapshots")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["snapshots"], json!([]));
    let refused = other
        .create_sandbox(&json!({ "image": "base", "from_snapshot": snap_id.as_str() }))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(StatusCode::NOT_FOUND));
    let resp = other
        .request(Method::DELETE, &format!("/v1/snapshots/{snap_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Deleted: gone from the store and the archive; a fork from it is a 404.
    let resp = app
        .client
        .request(Method::DELETE, &format!("/v1/snapshots/{snap_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(archive_objects(&app).is_empty());
    let (status, _) = snapshot_file(&app.client, &snap_id, "d/e/f").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let gone = app
        .client
        .create_sandbox(&json!({ "image": "base", "from_snapshot": snap_id.as_str() }))
        .await
        .unwrap_err();
    assert_eq!(gone.status(), Some(StatusCode::NOT_FOUND));
    for bad in ["snap-nope", "../../etc", "sb-123"] {
        let resp = app
            .client
            .request(Method::GET, &format!("/v1/snapshots/{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{bad}");
    }
    let bad = app
        .client
        .create_sandbox(&json!({ "image": "base", "from_snapshot": "nonsense" }))
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(StatusCode::BAD_REQUEST));
    app.cleanup().await;
}

#[tokio::test]
async fn a_stopped_sandbox_is_snapshotted_without_starting_it() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;
    let sb = app.sandbox(json!({})).await;
    make_tree(&app, &sb.id, 64 << 10).await;
    let before = fingerprint(&app, &sb.id).await;
    let stopped = app.client.stop(&sb.id).await.unwrap();
    let snap = snapshot(&app.client, &sb.id, None).await;
    let after = app.client.get_sandbox(&sb.id).await.unwrap();
    assert_eq!(after.state, "stopped");
    // Not resumed and stopped again on the way: its clocks did not move.
    assert_eq!(after.started_at, stopped.started_at);
    assert_eq!(after.stopped_at, stopped.stopped_at);
    let fork = app
        .sandbox(json!({ "from_snapshot": snap["id"].as_str().unwrap() }))
        .await;
    assert_eq!(fingerprint(&app, &fork.id).await, before);
    // A label too long is refused; a sandbox that never got a volume has nothing to take.
    let resp = app
        .client
        .request(Method::POST, &format!("/v1/sandboxes/{}/snapshots", sb.id))
        .json(&json!({ "label": "x".repeat(300) }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = app
        .client
        .request(Method::POST, "/v1/sandboxes/sb-doesnotexist/snapshots")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    app.cleanup().await;
}

/// Waits until sandbox `id` is archived (the reaper's archive pass).
async fn until_archived(client: &Client, id: &str) -> SandboxInfo {
    eventually(Duration::from_secs(60), || async {
        let sb = client.get_sandbox(id).await.ok()?;
        (sb.state == "archived").then_some(sb)
    })
    .await
    .expect("the sandbox was archived")
}

#[tokio::test]
async fn archived_sandboxes_come_back_byte_for_byte_by_resume_or_by_themselves() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.retention.archive_after_s = 1;
    let app = spawn_with(config).await;
    let events = app
        .client
        .request(Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();

    // auto_resume on (the default): an exec brings it back.
    let sb = app.sandbox(json!({})).await;
    make_tree(&app, &sb.id, 1 << 20).await;
    let before = fingerprint(&app, &sb.id).await;
    app.client.stop(&sb.id).await.unwrap();
    let archived = until_archived(&app.client, &sb.id).await;
    // The volume goes right after the record says archived (never before).
    let removed = eventually(Duration::from_secs(10), || async {
        (!volume_exists(&sb.volume).await).then_some(())
    })
    .await;
    assert!(removed.is_some(), "the Docker volume is removed");
    let usage = archived
        .usage
        .expect("an archived sandbox reports its archive");
    assert!(
        usage["archive_bytes"].as_u64().unwrap() > 1 << 20,
        "{usage}"
    );
    assert_eq!(archive_objects(&app).len(), 1);
    // Reads come out of the archive, without starting anything.
    assert_eq!(
        app.client
            .read_file(&sb.id, "d/e/f")
            .await
            .unwrap()
            .as_ref(),
        b"x"
    );
    let listed = app.client.list_files(&sb.id, ".", 1).await.unwrap();
    assert!(
        listed.entries.iter().any(|e| e.path.ends_with("big.bin")),
        "{listed:?}"
    );
    // Every read route works on it as on a stopped sandbox: stat, a deeper listing,
    // glob, grep, a byte range and the tar of a directory.
    let f = app
        .client
        .stat(&sb.id, "d/e/f")
        .await
        .unwrap()
        .expect("d/e/f");
    assert_eq!((f.size, f.mode.as_str()), (1, "0600"), "{f:?}");
    let deep = app.client.list_files(&sb.id, ".", 3).await.unwrap();
    assert!(
        deep.entries.iter().any(|e| e.path.ends_with("d/e/f")),
        "{deep:?}"
    );
    let globbed = app
        .client
        .glob(
            &sb.id,
            &GlobRequest {
                pattern: "**/*.txt".into(),
                path: ".".into(),
                max_results: None,
                include_ignored: false,
            },
        )
        .await
        .unwrap();
    assert!(
        globbed
            .paths
            .iter()
            .any(|p| p.ends_with("with space/a b.txt")),
        "{globbed:?}"
    );
    let grepped = app
        .client
        .grep(
            &sb.id,
            &GrepRequest {
                pattern: "spa.ed".into(),
                path: ".".into(),
                glob: None,
                max_results: None,
                case_insensitive: false,
                include_ignored: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(grepped.matches.len(), 1, "{grepped:?}");
    assert_eq!(grepped.matches[0].text, "spaced");
    let ranged = app
        .client
        .request(Method::GET, &format!("/v1/sandboxes/{}/files", sb.id))
        .query(&[("path", "with space/a b.txt")])
        .header("Range", "bytes=1-3")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), b"pac");
    let tarred = app
        .client
        .request(Method::GET, &format!("/v1/sandboxes/{}/archive", sb.id))
        .query(&[("path", "d")])
        .send()
        .await
        .unwrap();
    assert_eq!(tarred.status(), StatusCode::OK);
    let tar_bytes = tarred.bytes().await.unwrap();
    let mut names = Vec::new();
    for entry in tar::Archive::new(tar_bytes.as_ref()).entries().unwrap() {
        names.push(entry.unwrap().path().unwrap().display().to_string());
    }
    assert!(names.iter().any(|n| n.ends_with("e/f")), "{names:?}");
    assert_eq!(
        app.client.get_sandbox(&sb.id).await.unwrap().state,
        "archived"
    );
    // The event stream told of it.
    let mut stream = events.bytes_stream();
    let mut seen = String::new();
    use futures_util::StreamExt;
    while !seen.contains("sandbox.archived") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an archived event")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Exec restores it transparently.
    assert_eq!(fingerprint(&app, &sb.id).await, before);
    // So does a file write (a second sandbox, archived the same way).
    let written = app.sandbox(json!({})).await;
    app.client
        .write_file(&written.id, "old.txt", "old")
        .await
        .unwrap();
    app.client.stop(&written.id).await.unwrap();
    until_archived(&app.client, &written.id).await;
    app.client
        .write_file(&written.id, "new.txt", "new")
        .await
        .unwrap();
    let both = app
        .client
        .sh(&written.id, "cat old.txt new.txt")
        .await
        .unwrap();
    assert_eq!(both.stdout, "oldnew", "{both:?}");
    let back = app.client.get_sandbox(&sb.id).await.unwrap();
    assert_eq!(back.state, "running");
    assert!(volume_exists(&sb.volume).await);
    assert!(
        archive_objects(&app).is_empty(),
        "the archive is dropped once restored"
    );

    // auto_resume off: a 409 that names the state, then an explicit resume.
    let manual = app.sandbox(json!({ "auto_resume": false })).await;
    make_tree(&app, &manual.id, 4096).await;
    let before = fingerprint(&app, &manual.id).await;
    app.client.stop(&manual.id).await.unwrap();
    until_archived(&app.client, &manual.id).await;
    let refused = app.client.sh(&manual.id, "true").await.unwrap_err();
    assert_eq!(refused.status(), Some(StatusCode::CONFLICT));
    assert!(refused.to_string().contains("archived"), "{refused}");
    let refused = app
        .client
        .write_file(&manual.id, "new.txt", "x")
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(StatusCode::CONFLICT));
    let resumed = app.client.resume(&manual.id).await.unwrap();
    assert_eq!(resumed.state, "running");
    assert_eq!(fingerprint(&app, &manual.id).await, before);

    // A sandbox whose volume another sandbox uses is never archived (nor its volume
    // removed): a third one, stopped after it, is archived while it stays stopped.
    let owner = app.sandbox(json!({})).await;
    app.client
        .write_file(&owner.id, "shared.txt", "both")
        .await
        .unwrap();
    app.client.stop(&owner.id).await.unwrap();
    let sharer = app
        .sandbox(json!({ "volume": owner.volume.as_str() }))
        .await;
    app.client.stop(&sharer.id).await.unwrap();
    let later = app.sandbox(json!({})).await;
    app.client.stop(&later.id).await.unwrap();
    until_archived(&app.client, &later.id).await;
    assert_eq!(
        app.client.get_sandbox(&owner.id).await.unwrap().state,
        "stopped"
    );
    assert!(volume_exists(&owner.volume).await);
    assert_eq!(
        app.client
            .read_file(&sharer.id, "shared.txt")
            .await
            .unwrap()
            .as_ref(),
        b"both"
    );
    for id in [&owner.id, &sharer.id, &later.id] {
        app.client.delete(id, false).await.unwrap();
    }

    // Deleting an archived sandbox drops its archive.
    app.client.stop(&manual.id).await.unwrap();
    until_archived(&app.client, &manual.id).await;
    assert_eq!(archive_objects(&app).len(), 1);
    app.client.delete(&manual.id, false).await.unwrap();
    assert!(archive_objects(&app).is_empty());
    app.cleanup().await;
}

/// One raw tar entry whose name is written byte for byte (the tar crate's own setters
/// refuse `..` and absolute names, which is what this test needs to send).
fn raw_entry(
    out: &mut Vec<u8>,
    name: &str,
    kind: tar::EntryType,
    mode: u32,
    link: Option<&str>,
    data: &[u8],
) {
    let mut header = tar::Header::new_old();
    {
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(data.len() as u64);
    header.set_mtime(1_600_000_000);
    if kind == tar::EntryType::Char {
        header.set_device_major(1).ok();
        header.set_device_minor(3).ok();
    }
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0, pad));
}

/// Registers a snapshot of `tar` for tenant-a straight in the store and the local
/// archive, as a damaged or hostile archive store would hand it back.
async fn plant_snapshot(app: &TestApp, mut tar: Vec<u8>) -> String {
    use sha2::Digest;
    tar.extend(std::iter::repeat_n(0, 1024));
    let compressed = zstd_compress(&tar).await;
    let id = berth::domain::SnapshotId::generate();
    let path = app.data_dir.join("archive").join(id.object_key());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &compressed).unwrap();
    let snapshot = berth::domain::Snapshot {
        id: id.clone(),
        tenant: berth::domain::TenantId::parse("tenant-a").unwrap(),
        sandbox_id: berth::domain::SandboxId::generate(),
        kind: berth::domain::SnapshotKind::Snapshot,
        state: berth::domain::SnapshotState::Ready,
        label: Some("planted".into()),
        size_bytes: compressed.len() as u64,
        sha256: Some(hex::encode(sha2::Sha256::digest(&compressed))),
        workdir: "/workspace".into(),
        created_at: chrono::Utc::now(),
        reason: None,
    };
    app.service
        .store()
        .insert_snapshot(&snapshot)
        .await
        .unwrap();
    id.to_string()
}

async fn zstd_compress(data: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncWriteExt;
    let mut enc = async_compression::tokio::write::ZstdEncoder::new(Vec::new());
    enc.write_all(data).await.unwrap();
    enc.shutdown().await.unwrap();
    enc.into_inner()
}

#[tokio::test]
async fn restoring_never_trusts_the_archive() {
    use tar::EntryType;
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;

    // Entries that are neutralised: the restore goes on without them.
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        "../escape.txt",
        EntryType::Regular,
        0o644,
        None,
        b"out",
    );
    raw_entry(
        &mut tar,
        "./../../escape2.txt",
        EntryType::Regular,
        0o644,
        None,
        b"out",
    );
    raw_entry(
        &mut tar,
        "/tmp/absolute.txt",
        EntryType::Regular,
        0o644,
        None,
        b"abs",
    );
    raw_entry(&mut tar, "dev-null", EntryType::Char, 0o666, None, b"");
    raw_entry(&mut tar, "fifo", EntryType::Fifo, 0o644, None, b"");
    raw_entry(
        &mut tar,
        "suid",
        EntryType::Regular,
        0o6755,
        None,
        b"#!/bin/sh\n",
    );
    raw_entry(&mut tar, "ok.txt", EntryType::Regular, 0o644, None, b"fine");
    let neutral = plant_snapshot(&app, tar).await;
    let fork = app.sandbox(json!({ "from_snapshot": neutral })).await;
    let out = app
        .client
        .sh(
            &fork.id,
            "ls -A /workspace | sort | tr '\\n' ' '; echo; \
             ls / | grep escape; ls /tmp | grep absolute; stat -c %a /workspace/suid; \
             cat /workspace/ok.txt",
        )
        .await
        .unwrap();
    let lines: Vec<&str> = out.stdout.lines().collect();
    // Only the plain entries landed; the absolute name landed inside the workdir.
    let listed: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(listed, ["ok.txt", "suid", "tmp"], "{out:?}");
    assert_eq!(&lines[1..], ["755", "fine"], "{out:?}");

    // Entries that are refused: the fork is not made, and nothing of it is left.
    let through_link = {
        let mut tar = Vec::new();
        raw_entry(
            &mut tar,
            "etc-link",
            EntryType::Symlink,
            0o777,
            Some("/etc"),
            b"",
        );
        raw_entry(
            &mut tar,
            "etc-link/planted",
            EntryType::Regular,
            0o644,
            None,
            b"owned",
        );
        tar
    };
    let hard_out = {
        let mut tar = Vec::new();
        raw_entry(
            &mut tar,
            "passwd",
            EntryType::Link,
            0o644,
            Some("/etc/passwd"),
            b"",
        );
        tar
    };
    let hard_up = {
        let mut tar = Vec::new();
        raw_entry(
            &mut tar,
            "up",
            EntryType::Link,
            0o644,
            Some("../../etc/shadow"),
            b"",
        );
        tar
    };
    let (containers_before, volumes_before) = common::instance_objects(&app.data_dir);
    for (what, tar) in [
        ("a file through a planted symlink", through_link),
        ("a hard link to an absolute path", hard_out),
        ("a hard link out of the volume", hard_up),
    ] {
        let snap = plant_snapshot(&app, tar).await;
        let e = app
            .client
            .create_sandbox(&json!({ "image": "base", "from_snapshot": snap }))
            .await
            .expect_err(what);
        assert_eq!(
            e.status(),
            Some(StatusCode::UNPROCESSABLE_ENTITY),
            "{what}: {e}"
        );
        assert!(
            e.to_string().contains("could not be restored"),
            "{what}: {e}"
        );
        assert!(e.to_string().contains("nothing was written"), "{what}: {e}");
    }
    // A refused restore leaves no container or volume behind.
    let (containers, volumes) = common::instance_objects(&app.data_dir);
    assert_eq!(containers, containers_before);
    assert_eq!(volumes, volumes_before);

    // A damaged object that still decompresses (a flipped byte inside a raw, random
    // block) is refused by its checksum, whole: nothing of it lands.
    let random: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut tar = Vec::new();
    raw_entry(&mut tar, "ok.txt", EntryType::Regular, 0o644, None, b"fine");
    raw_entry(
        &mut tar,
        "noise.bin",
        EntryType::Regular,
        0o644,
        None,
        &random,
    );
    let damaged = plant_snapshot(&app, tar).await;
    let id = berth::domain::SnapshotId::parse(&damaged).unwrap();
    let path = app.data_dir.join("archive").join(id.object_key());
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let (containers_before, volumes_before) = common::instance_objects(&app.data_dir);
    let e = app
        .client
        .create_sandbox(&json!({ "image": "base", "from_snapshot": damaged }))
        .await
        .unwrap_err();
    assert_eq!(
        e.status(),
        Some(StatusCode::UNPROCESSABLE_ENTITY),
        "a damaged snapshot: {e}"
    );
    assert!(e.to_string().contains("damaged"), "{e}");
    assert_eq!(
        common::instance_objects(&app.data_dir),
        (containers_before, volumes_before)
    );

    // A snapshot whose tar would make the supervisor hold a huge name in memory is
    // refused when read out of, without reading it all.
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        "././@LongLink",
        EntryType::GNULongName,
        0o644,
        None,
        &vec![b'a'; 4 << 20],
    );
    raw_entry(&mut tar, "x", EntryType::Regular, 0o644, None, b"x");
    let bomb = plant_snapshot(&app, tar).await;
    let (status, body) = snapshot_file(&app.client, &bomb, "x").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn snapshots_and_archives_live_in_an_s3_compatible_store() {
    let s3 = S3Server::start().await;
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.archive = s3.archive_config("berth/node-1");
    config.retention.archive_after_s = 1;
    let app = spawn_with(config).await;
    let sb = app.sandbox(json!({})).await;
    // Bigger than a multipart part (8 MiB), so the upload is multipart.
    make_tree(&app, &sb.id, 20 << 20).await;
    let before = fingerprint(&app, &sb.id).await;
    let snap = snapshot(&app.client, &sb.id, None).await;
    let snap_id = snap["id"].as_str().unwrap();
    let key = format!("berth/node-1/snapshots/{snap_id}.tar.zst");
    assert_eq!(s3.keys().await, vec![key.clone()]);
    let fork = app.sandbox(json!({ "from_snapshot": snap_id })).await;
    assert_eq!(fingerprint(&app, &fork.id).await, before);
    let (status, body) = snapshot_file(&app.client, snap_id, "d/e/f").await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"x"[..]));

    // Archived into the bucket, back out by itself.
    app.client.stop(&sb.id).await.unwrap();
    until_archived(&app.client, &sb.id).await;
    assert_eq!(s3.keys().await.len(), 2);
    assert_eq!(fingerprint(&app, &sb.id).await, before);
    assert_eq!(s3.keys().await, vec![key]);

    let resp = app
        .client
        .request(Method::DELETE, &format!("/v1/snapshots/{snap_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(s3.keys().await.is_empty());

    // The store takes signed requests only: an anonymous listing is refused, and a
    // server with the wrong secret gets a 503 that says what to fix, with nothing kept.
    let anonymous = reqwest::get(format!("{}/{}", s3.endpoint, s3.bucket))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::FORBIDDEN);
    app.cleanup().await;
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.archive = s3.archive_config("berth/wrong");
    config.archive.secret_access_key = Some("not-the-secret".into());
    let app = spawn_with(config).await;
    let sb = app.sandbox(json!({})).await;
    let refused = app
        .client
        .request(Method::POST, &format!("/v1/sandboxes/{}/snapshots", sb.id))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "archive_denied", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AWS_SECRET_ACCESS_KEY"),
        "{body}"
    );
    let listed: Value = app
        .client
        .request(Method::GET, "/v1/snapshots")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["snapshots"], json!([]), "{listed}");
    assert!(s3.keys().await.is_empty());
    app.cleanup().await;
}

/// `berth serve` with its archive store set in the config file's `[archive]` section and
/// its credentials only in the usual `AWS_*` variables: snapshots land in the bucket.
#[tokio::test]
async fn the_archive_store_comes_from_the_config_file_and_aws_variables() {
    let s3 = S3Server::start().await;
    let data = common::serve::DataDir::new();
    let file = data.path().join("berth.toml");
    std::fs::write(
        &file,
        format!(
            "[archive]\nurl = \"s3://{}/from-file\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\n",
            s3.bucket, s3.endpoint
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let server = common::serve::serve(
        &data.path(),
        &[
            ("BERTH_CONFIG", file.as_str()),
            ("AWS_ACCESS_KEY_ID", common::S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", common::S3_SECRET_KEY),
        ],
    )
    .await;
    let sb = server
        .client
        .create_sandbox(&json!({"image": "base", "files": {"a.txt": "from the file"}}))
        .await
        .unwrap();
    let snap = snapshot(&server.client, &sb.id, None).await;
    let key = format!(
        "from-file/snapshots/{}.tar.zst",
        snap["id"].as_str().unwrap()
    );
    assert_eq!(s3.keys().await, vec![key]);
    let (status, body) = snapshot_file(&server.client, snap["id"].as_str().unwrap(), "a.txt").await;
    assert_eq!(
        (status, body.as_ref()),
        (StatusCode::OK, &b"from the file"[..])
    );
    server.client.delete(&sb.id, false).await.unwrap();
    assert_eq!(server.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn old_snapshots_and_kept_volumes_are_removed_after_their_retention() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.retention.snapshots_s = 600;
    config.retention.kept_volumes_s = 600;
    let app = spawn_with(config).await;
    let store = app.service.store();
    let sb = app.sandbox(json!({})).await;
    // A running sandbox reports its volume's bytes on disk.
    app.client
        .sh(&sb.id, "head -c 2000000 /dev/urandom > data.bin")
        .await
        .unwrap();
    let usage = app.client.get_sandbox(&sb.id).await.unwrap().usage.unwrap();
    assert!(
        usage["disk_bytes"].as_u64().unwrap() >= 2_000_000,
        "{usage}"
    );

    // Two snapshots; one made to look an hour old.
    let young = snapshot(&app.client, &sb.id, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let old = snapshot(&app.client, &sb.id, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut row = store
        .get_snapshot(&berth::domain::SnapshotId::parse(&old).unwrap())
        .await
        .unwrap()
        .unwrap();
    row.created_at = chrono::Utc::now() - chrono::Duration::hours(1);
    store.update_snapshot(&row).await.unwrap();

    // Two sandboxes deleted with their volumes kept; one ended an hour ago.
    let kept_young = app.sandbox(json!({})).await;
    app.client.delete(&kept_young.id, true).await.unwrap();
    app.client.delete(&sb.id, true).await.unwrap();
    let id = berth::domain::SandboxId::parse(&sb.id).unwrap();
    let mut ended = store.get_sandbox(&id).await.unwrap().unwrap();
    ended.stopped_at = Some(chrono::Utc::now() - chrono::Duration::hours(1));
    store.update_sandbox(&ended).await.unwrap();

    let status = |snap: String| {
        let client = app.client.clone();
        async move {
            client
                .request(Method::GET, &format!("/v1/snapshots/{snap}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let gone = eventually(Duration::from_secs(30), || async {
        let snap_gone = status(old.clone()).await == StatusCode::NOT_FOUND;
        (snap_gone && !volume_exists(&sb.volume).await).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the old snapshot and the old kept volume outlived their retention"
    );
    // The young ones stay.
    assert_eq!(status(young.clone()).await, StatusCode::OK);
    assert!(volume_exists(&kept_young.volume).await);
    assert_eq!(archive_objects(&app), vec![format!("{young}.tar.zst")]);
    app.cleanup().await;
}
