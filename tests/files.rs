//! Every file route against real sandboxes, including hostile paths: `..`, absolute paths,
//! planted symlinks to `/` and `/etc`, NUL bytes, oversize uploads, ranges, tar in and out.

mod common;

use berth_runtime::wire::{EditRequest, FileKind, GlobRequest, GrepRequest};
use common::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn write_read_list_and_delete_round_trip_with_modes_and_parents() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let c = &app.client;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    c.write_file(&sb.id, "deep/nested/blob.bin", bytes.clone())
        .await
        .unwrap();
    assert_eq!(
        c.read_file(&sb.id, "deep/nested/blob.bin")
            .await
            .unwrap()
            .to_vec(),
        bytes
    );
    assert_eq!(
        c.read_file(&sb.id, "/workspace/deep/nested/blob.bin")
            .await
            .unwrap()
            .len(),
        70_000,
        "absolute paths too"
    );
    let put = c
        .request(
            Method::PUT,
            &format!("/v1/sandboxes/{}/files?path=run.sh&mode=0755", sb.id),
        )
        .body("#!/bin/sh\necho ran\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    assert_eq!(c.sh(&sb.id, "./run.sh").await.unwrap().stdout, "ran\n");

    let list = c.list_files(&sb.id, ".", 3).await.unwrap();
    let paths: Vec<&str> = list.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["deep", "deep/nested", "deep/nested/blob.bin", "run.sh"]
    );
    let run = list.entries.iter().find(|e| e.path == "run.sh").unwrap();
    assert_eq!((run.kind, run.mode.as_str()), (FileKind::File, "0755"));
    assert_eq!(list.entries[0].kind, FileKind::Dir);
    let shallow = c.list_files(&sb.id, ".", 1).await.unwrap();
    assert_eq!(shallow.entries.len(), 2);

    let not_empty = c.delete_file(&sb.id, "deep", false).await.unwrap_err();
    assert_eq!(not_empty.status(), Some(StatusCode::CONFLICT));
    c.delete_file(&sb.id, "deep", true).await.unwrap();
    assert_eq!(
        c.read_file(&sb.id, "deep/nested/blob.bin")
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        c.delete_file(&sb.id, "deep", true)
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::NOT_FOUND)
    );
    app.cleanup().await;
}

#[tokio::test]
async fn reading_a_directory_is_a_400_and_a_missing_file_a_404() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    assert_eq!(
        app.client
            .read_file(&sb.id, ".")
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        app.client
            .read_file(&sb.id, "nope.txt")
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::NOT_FOUND)
    );
    let no_path = app
        .client
        .request(Method::GET, &format!("/v1/sandboxes/{}/files", sb.id))
        .send()
        .await
        .unwrap();
    assert_eq!(no_path.status(), StatusCode::BAD_REQUEST);
    let bad_mode = app
        .client
        .request(
            Method::PUT,
            &format!("/v1/sandboxes/{}/files?path=x&mode=rwx", sb.id),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_mode.status(), StatusCode::BAD_REQUEST);
    app.cleanup().await;
}

#[tokio::test]
async fn ranges_return_partial_content() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(json!({"files": {"abc.txt": "0123456789"}}))
        .await;
    let get = |range: &'static str| {
        app.client
            .request(
                Method::GET,
                &format!("/v1/sandboxes/{}/files?path=abc.txt", sb.id),
            )
            .header("Range", range)
            .send()
    };
    let r = get("bytes=2-5").await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 2-5/10");
    assert_eq!(r.text().await.unwrap(), "2345");
    assert_eq!(get("bytes=-3").await.unwrap().text().await.unwrap(), "789");
    assert_eq!(
        get("bytes=50-").await.unwrap().status(),
        StatusCode::RANGE_NOT_SATISFIABLE
    );
    app.cleanup().await;
}

#[tokio::test]
async fn paths_never_leave_the_sandbox_whatever_dots_absolutes_or_planted_symlinks_say() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let c = &app.client;
    // A marker that exists only on the host: no path may reach it.
    let host_marker = app.data_dir.join("host-secret");
    std::fs::write(&host_marker, "HOST").unwrap();
    let host_path = host_marker.display().to_string();
    assert_eq!(
        c.read_file(&sb.id, &host_path).await.unwrap_err().status(),
        Some(StatusCode::NOT_FOUND)
    );
    let escape = format!("../../../../../../..{host_path}");
    assert_eq!(
        c.read_file(&sb.id, &escape).await.unwrap_err().status(),
        Some(StatusCode::NOT_FOUND)
    );

    // `..` resolves inside the container's own filesystem.
    let hostname = c
        .read_file(&sb.id, "../../../../etc/hostname")
        .await
        .unwrap();
    assert_eq!(
        hostname, "sandbox\n",
        "the sandbox's own /etc, not the host's"
    );

    // Symlinks planted inside point into the sandbox's own root.
    c.sh(
        &sb.id,
        "ln -s / rootlink && ln -s /etc etclink && ln -s /tmp tmplink && ln -s /etc/passwd pw",
    )
    .await
    .unwrap();
    let through = c.read_file(&sb.id, "rootlink/etc/hostname").await.unwrap();
    assert_eq!(through, "sandbox\n");
    let via_marker = format!("rootlink{host_path}");
    assert_eq!(
        c.read_file(&sb.id, &via_marker).await.unwrap_err().status(),
        Some(StatusCode::NOT_FOUND)
    );
    // The file API writes with the sandbox user's rights: not into the sandbox's /etc...
    let refused = c
        .write_file(&sb.id, "etclink/berth-test", "inside")
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(StatusCode::CONFLICT), "{refused}");
    // ...but through a link into the sandbox's own /tmp, never the host's.
    let marker = format!("berth-test-{}", sb.id);
    c.write_file(&sb.id, &format!("tmplink/{marker}"), "inside")
        .await
        .unwrap();
    assert_eq!(
        c.sh(&sb.id, &format!("cat /tmp/{marker}"))
            .await
            .unwrap()
            .stdout,
        "inside"
    );
    assert!(
        !std::path::Path::new(&format!("/tmp/{marker}")).exists()
            && !std::path::Path::new("/etc/berth-test").exists(),
        "the host's /tmp and /etc are untouched"
    );
    assert!(c
        .read_file(&sb.id, "pw")
        .await
        .unwrap()
        .starts_with(b"root:x:0:0"));

    // NUL bytes in paths are refused, not truncated.
    let nul = c
        .request(
            Method::GET,
            &format!("/v1/sandboxes/{}/files?path=a%00b", sb.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(nul.status(), StatusCode::BAD_REQUEST);
    let nul_put = c
        .request(
            Method::PUT,
            &format!("/v1/sandboxes/{}/files?path=x%00y", sb.id),
        )
        .body("z")
        .send()
        .await
        .unwrap();
    assert_eq!(nul_put.status(), StatusCode::BAD_REQUEST);
    assert_eq!(std::fs::read_to_string(&host_marker).unwrap(), "HOST");
    app.cleanup().await;
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_with_413_before_it_is_buffered() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = common::test_config(temp.path());
    config.limits.max_upload_bytes = 1024 * 1024;
    let app = common::spawn_with(config).await;
    let sb = app.sandbox(json!({"files": {"big.bin": "original"}})).await;
    // Declared too large: refused from the header alone, before the body is read (sent
    // by hand, since a client library will not declare more than it sends).
    let mut raw = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "PUT /v1/sandboxes/{}/files?path=big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n0123456789",
        sb.id,
        app.key,
        50u64 << 30
    );
    tokio::io::AsyncWriteExt::write_all(&mut raw, head.as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut raw, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
    // Streamed without a length: cut off at the limit.
    let chunks =
        futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![7u8; 64 * 1024])));
    let streamed = app
        .client
        .request(
            Method::PUT,
            &format!("/v1/sandboxes/{}/files?path=big.bin", sb.id),
        )
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = streamed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_large");
    assert_eq!(
        app.client.read_file(&sb.id, "big.bin").await.unwrap(),
        "original",
        "nothing was written"
    );
    let leftovers = app
        .client
        .sh(&sb.id, "ls -A | grep -c berth || true")
        .await
        .unwrap();
    assert_eq!(leftovers.stdout.trim(), "0", "no temp file left behind");
    app.cleanup().await;
}

#[tokio::test]
async fn edit_replaces_unique_text_and_refuses_absent_or_ambiguous_text() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(json!({"files": {"a.py": "x = 1\ny = 1\n"}}))
        .await;
    let edit = |old: &str, new: &str, all: bool| EditRequest {
        path: "a.py".into(),
        old: old.into(),
        new: new.into(),
        replace_all: all,
    };
    assert_eq!(
        app.client
            .edit(&sb.id, &edit("x = 1", "x = 2", false))
            .await
            .unwrap()
            .replacements,
        1
    );
    let absent = app
        .client
        .edit(&sb.id, &edit("z = 9", "", false))
        .await
        .unwrap_err();
    assert_eq!(absent.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    let ambiguous = app
        .client
        .edit(&sb.id, &edit(" = ", " == ", false))
        .await
        .unwrap_err();
    assert_eq!(ambiguous.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    assert_eq!(
        app.client
            .edit(&sb.id, &edit(" = ", " := ", true))
            .await
            .unwrap()
            .replacements,
        2
    );
    assert_eq!(
        app.client.read_file(&sb.id, "a.py").await.unwrap(),
        "x := 2\ny := 1\n"
    );
    let missing = EditRequest {
        path: "nope.py".into(),
        ..edit("a", "b", false)
    };
    assert_eq!(
        app.client
            .edit(&sb.id, &missing)
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::NOT_FOUND)
    );
    app.cleanup().await;
}

#[tokio::test]
async fn glob_and_grep_find_files_and_lines() {
    let app = spawn_app().await;
    let files = json!({"src/a.py": "def solve():\n    return 42\n", "src/b.py": "print('x')\n", "README.md": "solve it\n", "node_modules/x.py": "def solve(): pass\n"});
    let sb = app.sandbox(json!({"files": files})).await;
    let glob = app
        .client
        .glob(
            &sb.id,
            &GlobRequest {
                include_ignored: false,
                pattern: "**/*.py".into(),
                path: ".".into(),
                max_results: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(glob.paths, ["src/a.py", "src/b.py"]);
    let grep = GrepRequest {
        include_ignored: false,
        pattern: r"def \w+".into(),
        path: ".".into(),
        glob: Some("*.py".into()),
        max_results: None,
        case_insensitive: false,
    };
    let found = app.client.grep(&sb.id, &grep).await.unwrap();
    assert_eq!(found.matches.len(), 1);
    assert_eq!(
        (
            found.matches[0].path.as_str(),
            found.matches[0].line,
            found.matches[0].text.as_str()
        ),
        ("src/a.py", 1, "def solve():")
    );
    let limited = GrepRequest {
        include_ignored: false,
        pattern: "solve".into(),
        path: ".".into(),
        glob: None,
        max_results: Some(1),
        case_insensitive: false,
    };
    let found = app.client.grep(&sb.id, &limited).await.unwrap();
    assert!(found.truncated);
    let bad = GrepRequest {
        pattern: "(".into(),
        ..limited
    };
    assert_eq!(
        app.client.grep(&sb.id, &bad).await.unwrap_err().status(),
        Some(StatusCode::BAD_REQUEST)
    );
    app.cleanup().await;
}

#[tokio::test]
async fn archives_round_trip_a_tree_and_refuse_entries_that_escape() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(json!({"files": {"proj/main.py": "print(1)\n", "proj/pkg/util.py": "x=1\n"}}))
        .await;
    app.client
        .sh(&sb.id, "ln -s /etc/passwd proj/link")
        .await
        .unwrap();
    let tar_bytes = app.client.get_archive(&sb.id, "proj").await.unwrap();
    let mut names: Vec<String> = tar::Archive::new(&tar_bytes[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["./", "link", "main.py", "pkg", "pkg/util.py"],
        "symlinks travel as links"
    );

    app.client
        .put_archive(&sb.id, "copy", tar_bytes.to_vec())
        .await
        .unwrap();
    assert_eq!(
        app.client
            .read_file(&sb.id, "copy/pkg/util.py")
            .await
            .unwrap(),
        "x=1\n"
    );
    let link = app.client.sh(&sb.id, "readlink copy/link").await.unwrap();
    assert_eq!(link.stdout, "/etc/passwd\n");

    // A hand-made tar whose entry climbs out with `..`.
    let mut header = tar::Header::new_gnu();
    let evil = b"owned";
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../../evil.sh");
    header.set_size(evil.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &evil[..]).unwrap();
    let evil_tar = builder.into_inner().unwrap();
    let refused = app.client.put_archive(&sb.id, "target", evil_tar).await;
    let escaped = app
        .client
        .sh(&sb.id, "ls /evil.sh /workspace/evil.sh 2>/dev/null | wc -l")
        .await
        .unwrap();
    assert_eq!(
        escaped.stdout.trim(),
        "0",
        "the entry did not land outside the target: {refused:?}"
    );
    let garbage = app
        .client
        .put_archive(&sb.id, "target", b"not a tar at all, just words".to_vec())
        .await;
    assert_eq!(garbage.unwrap_err().status(), Some(StatusCode::BAD_REQUEST));
    app.cleanup().await;
}

#[tokio::test]
async fn a_stopped_sandbox_is_readable_through_every_read_route_but_not_writable() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(
            json!({"auto_resume": false, "files": {"a.py": "def f(): pass\n", "dir/b.txt": "b"}}),
        )
        .await;
    // A file only its owner (the sandbox user) may read.
    let own = app
        .client
        .sh(&sb.id, "printf mine > own.key && chmod 600 own.key")
        .await
        .unwrap();
    assert_eq!(own.exit_code, Some(0), "{own:?}");
    app.client.stop(&sb.id).await.unwrap();
    let c = &app.client;
    assert_eq!(c.read_file(&sb.id, "own.key").await.unwrap(), "mine");
    assert_eq!(
        c.write_file(&sb.id, "a.py", "2")
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::CONFLICT)
    );
    assert_eq!(
        c.read_file(&sb.id, "a.py").await.unwrap(),
        "def f(): pass\n"
    );
    let list = c.list_files(&sb.id, ".", 2).await.unwrap();
    assert_eq!(
        list.entries
            .iter()
            .map(|e| e.path.as_str())
            .collect::<Vec<_>>(),
        ["a.py", "dir", "dir/b.txt", "own.key"]
    );
    let glob = c
        .glob(
            &sb.id,
            &GlobRequest {
                include_ignored: false,
                pattern: "**/*.txt".into(),
                path: ".".into(),
                max_results: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(glob.paths, ["dir/b.txt"]);
    let grep = GrepRequest {
        include_ignored: false,
        pattern: "def".into(),
        path: ".".into(),
        glob: None,
        max_results: None,
        case_insensitive: false,
    };
    assert_eq!(c.grep(&sb.id, &grep).await.unwrap().matches.len(), 1);
    assert!(!c.get_archive(&sb.id, ".").await.unwrap().is_empty());
    assert_eq!(
        c.get_sandbox(&sb.id).await.unwrap().state,
        "stopped",
        "reading did not resume it"
    );
    let main = common::docker()
        .await
        .inspect_container(&format!("berth-{}", sb.id), None)
        .await;
    assert!(
        main.is_err(),
        "only a read-only helper runs, not the sandbox"
    );
    c.resume(&sb.id).await.unwrap();
    assert_eq!(c.sh(&sb.id, "cat dir/b.txt").await.unwrap().stdout, "b");
    app.cleanup().await;
}

fn tar_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, &data[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip on the host");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[tokio::test]
async fn archive_uploads_are_all_or_nothing_and_gzip_is_accepted() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = common::test_config(temp.path());
    config.limits.max_upload_bytes = 1024 * 1024;
    let app = common::spawn_with(config).await;
    let sb = app.sandbox(json!({})).await;
    let exists = |path: &'static str| {
        let (client, id) = (app.client.clone(), sb.id.clone());
        async move {
            client
                .sh(&id, &format!("test -e {path} && echo yes || echo no"))
                .await
                .unwrap()
                .stdout
        }
    };
    // Past the limit after a first entry: 413, and neither the entry nor the target dir.
    // Streamed without a length, so the cut happens after the first entry was extracted.
    let big = tar_of(&[
        ("first.txt", b"first".to_vec()),
        ("big.bin", vec![1u8; 2 << 20]),
    ]);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let err = app
        .client
        .put_archive(&sb.id, "dest", body)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::PAYLOAD_TOO_LARGE), "{err}");
    assert!(err.to_string().contains("nothing was extracted"), "{err}");
    assert_eq!(exists("dest").await, "no\n", "nothing was written");
    assert_eq!(
        app.client.sh(&sb.id, "ls -A").await.unwrap().stdout,
        "",
        "no staging left behind"
    );
    // A zip is named, and leaves nothing.
    let err = app
        .client
        .put_archive(&sb.id, "dest", b"PK\x03\x04rest-of-a-zip".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    assert!(err.to_string().contains("zip"), "{err}");
    assert_eq!(exists("dest").await, "no\n");
    // gzip is decompressed inside the sandbox.
    let tgz = gzip(&tar_of(&[("src/a.py", b"print(1)\n".to_vec())]));
    app.client.put_archive(&sb.id, "dest", tgz).await.unwrap();
    assert_eq!(
        app.client.read_file(&sb.id, "dest/src/a.py").await.unwrap(),
        "print(1)\n"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn concurrent_edits_of_one_string_let_exactly_one_win() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(json!({"files": {"f.txt": "counter = 0\n"}}))
        .await;
    let mut edits = Vec::new();
    for i in 0..16 {
        let (client, id) = (app.client.clone(), sb.id.clone());
        edits.push(tokio::spawn(async move {
            client
                .edit(
                    &id,
                    &EditRequest {
                        path: "f.txt".into(),
                        old: "counter = 0".into(),
                        new: format!("counter = {}", i + 1),
                        replace_all: false,
                    },
                )
                .await
        }));
    }
    let mut won = 0;
    for e in edits {
        match e.await.unwrap() {
            Ok(_) => won += 1,
            Err(err) => assert_eq!(
                err.status(),
                Some(StatusCode::UNPROCESSABLE_ENTITY),
                "{err}"
            ),
        }
    }
    assert_eq!(won, 1, "one edit won; the others saw their old text gone");
    let text = app.client.read_file(&sb.id, "f.txt").await.unwrap();
    assert!(
        text.starts_with(b"counter = ") && text != "counter = 0\n",
        "{text:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn deleting_the_workdir_is_refused_up_front_and_keeps_every_file() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(json!({"files": {"keep.txt": "k", "sub/x": "x"}}))
        .await;
    for path in [".", "/workspace", "/workspace/", "sub/..", "/"] {
        let response = app
            .client
            .request(Method::DELETE, &format!("/v1/sandboxes/{}/files", sb.id))
            .query(&[("path", path), ("recursive", "true")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CONFLICT, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("refusing"),
            "{body}"
        );
    }
    assert_eq!(app.client.read_file(&sb.id, "keep.txt").await.unwrap(), "k");
    app.client.delete_file(&sb.id, "sub", true).await.unwrap();
    assert!(app.client.read_file(&sb.id, "sub/x").await.is_err());
    app.cleanup().await;
}

#[tokio::test]
async fn grep_and_glob_skip_virtualenvs_and_ignored_paths_unless_asked() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(json!({"files": {
            "src/app.py": "needle = 1\n",
            ".venv/lib/site.py": "needle = 2\n",
            "node_modules/m/index.js": "needle\n",
            "build/gen.py": "needle = 3\n",
            ".gitignore": "build/\n",
            "long.txt": format!("{}needle{}\n", "a".repeat(5000), "b".repeat(5000)),
        }}))
        .await;
    let grep = |include_ignored| GrepRequest {
        pattern: "needle".into(),
        path: ".".into(),
        glob: None,
        max_results: None,
        case_insensitive: false,
        include_ignored,
    };
    let found = app.client.grep(&sb.id, &grep(false)).await.unwrap();
    let paths: Vec<&str> = found.matches.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, ["long.txt", "src/app.py"], "{found:?}");
    let long = &found.matches[0].text;
    assert!(
        long.contains("needle") && long.chars().count() <= 2_010,
        "clipped around the match"
    );
    let all = app.client.grep(&sb.id, &grep(true)).await.unwrap();
    assert_eq!(all.matches.len(), 5, "{all:?}");
    let glob = app
        .client
        .glob(
            &sb.id,
            &GlobRequest {
                pattern: "**/*.py".into(),
                path: ".".into(),
                max_results: None,
                include_ignored: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(glob.paths, ["src/app.py"]);
    let missing = app
        .client
        .glob(
            &sb.id,
            &GlobRequest {
                pattern: "*".into(),
                path: "nope".into(),
                max_results: None,
                include_ignored: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(StatusCode::NOT_FOUND));
    app.cleanup().await;
}

#[tokio::test]
async fn an_unsatisfiable_range_names_the_file_size() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(json!({"files": {"ten.txt": "0123456789"}}))
        .await;
    let response = app
        .client
        .request(
            Method::GET,
            &format!("/v1/sandboxes/{}/files?path=ten.txt", sb.id),
        )
        .header("range", "bytes=100-200")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(response.headers()["content-range"], "bytes */10");
    app.cleanup().await;
}
