//! Terminals over WebSocket against the real server and engine: a real PTY in the agent,
//! named sessions that outlive their clients (and the supervisor), replay and offsets,
//! several viewers, slow viewers evicted without slowing anyone, limits, keys, origins,
//! and asciicast recordings kept on the host.

mod common;

use common::{eventually, peak_rss_bytes, spawn_app, spawn_with, test_config};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A terminal client: output bytes seen so far, control messages seen so far.
struct Term {
    ws: Socket,
    /// The last few MiB of output (a flood is counted, not kept: this client runs in
    /// the same process as the server whose memory a test measures).
    out: Vec<u8>,
    /// Bytes of output received in all.
    total: usize,
    /// How far `until` has searched `out` (so a long stream is scanned once).
    searched: usize,
    controls: Vec<Value>,
    closed: Option<(u16, String)>,
}

/// The last `n` bytes of `bytes`, as text (for failure messages).
fn tail(bytes: &[u8], n: usize) -> String {
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(n)..]).into_owned()
}

fn ws_url(app: &common::TestApp, id: &str, query: &str) -> String {
    format!(
        "{}/v1/sandboxes/{id}/terminal?{query}",
        app.base.replace("http://", "ws://")
    )
}

/// Connects with `key` (as a header) and `extra` headers; the HTTP status when refused.
async fn connect_with(url: &str, key: Option<&str>, extra: &[(&str, &str)]) -> Result<Term, u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    for (k, v) in extra {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = k.parse().unwrap();
        request.headers_mut().insert(name, v.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(Term {
            ws,
            out: Vec::new(),
            total: 0,
            searched: 0,
            controls: Vec::new(),
            closed: None,
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("connect failed: {e}"),
    }
}

async fn connect(app: &common::TestApp, id: &str, query: &str) -> Term {
    let mut term = connect_with(&ws_url(app, id, query), Some(&app.key), &[])
        .await
        .expect("terminal opens");
    term.next_control("hello").await;
    term
}

impl Term {
    /// Reads one message; false once the stream ended.
    async fn read_one(&mut self) -> bool {
        match self.ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                self.total += b.len();
                self.out.extend_from_slice(&b);
                const KEEP: usize = 2 * 1024 * 1024;
                if self.out.len() > 2 * KEEP {
                    let cut = self.out.len() - KEEP;
                    self.out.drain(..cut);
                    self.searched = self.searched.saturating_sub(cut);
                }
            }
            Some(Ok(Message::Text(t))) => self.controls.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                self.closed = Some(
                    frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new())),
                );
                return false;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                self.closed.get_or_insert((1006, String::new()));
                return false;
            }
        }
        true
    }

    /// Reads until the output (from where the last `until` found its needle) contains
    /// `needle`; returns the whole output as text. Panics after 30 s.
    async fn until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let needle_bytes = needle.as_bytes();
        loop {
            let from = self.searched.saturating_sub(needle_bytes.len());
            if let Some(at) = self.out[from..]
                .windows(needle_bytes.len())
                .position(|w| w == needle_bytes)
            {
                self.searched = from + at + needle_bytes.len();
                return String::from_utf8_lossy(&self.out).into_owned();
            }
            self.searched = self.out.len();
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.read_one()).await {
                Ok(true) => {}
                _ => panic!(
                    "no {needle:?} in {} bytes of output, ending {:?} (closed: {:?})",
                    self.total,
                    tail(&self.out, 300),
                    self.closed
                ),
            }
        }
    }

    /// Reads until a control message of `kind` arrives; returns it.
    async fn next_control(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self.controls.iter().position(|c| c["type"] == kind) {
                return self.controls.remove(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.read_one()).await {
                Ok(true) => {}
                _ => panic!("no {kind} control: {:?} {:?}", self.controls, self.closed),
            }
        }
    }

    /// Reads to the end of the stream; returns the close code and reason.
    async fn until_closed(&mut self) -> (u16, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, self.read_one()).await.is_err() {
                panic!("the terminal stayed open");
            }
        }
        self.closed.clone().unwrap()
    }

    async fn type_text(&mut self, text: &str) {
        self.ws
            .send(Message::Binary(text.as_bytes().to_vec().into()))
            .await
            .unwrap();
    }

    async fn resize(&mut self, cols: u16, rows: u16) {
        let text = json!({"type": "resize", "cols": cols, "rows": rows}).to_string();
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }
}

async fn terminals(app: &common::TestApp, id: &str) -> Vec<Value> {
    let body: Value = app
        .client
        .request(
            reqwest::Method::GET,
            &format!("/v1/sandboxes/{id}/terminals"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["terminals"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_echoes_follows_resizes_and_answers_bad_control_with_an_error() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let mut term = connect_with(
        &ws_url(&app, &sb.id, "session=main&cols=100&rows=30"),
        Some(&app.key),
        &[],
    )
    .await
    .unwrap();
    let hello = term.next_control("hello").await;
    assert_eq!(
        hello,
        json!({"type": "hello", "session": "main", "cols": 100, "rows": 30, "offset": 0})
    );
    term.type_text("stty size; echo ok-$((6*7))\r").await;
    let out = term.until("ok-42").await;
    assert!(out.contains("30 100"), "{out}");
    term.resize(120, 40).await;
    term.type_text("stty size\r").await;
    term.until("40 120").await;
    // Sizes are clamped; a control that is not one gets an error, not a crash.
    term.resize(0, 60000).await;
    term.type_text("stty size\r").await;
    term.until("1000 2").await;
    term.ws
        .send(Message::Text("{\"type\":\"explode\"}".into()))
        .await
        .unwrap();
    let error = term.next_control("error").await;
    assert!(
        error["message"].as_str().unwrap().contains("resize"),
        "{error}"
    );
    // Still working after it.
    term.type_text("echo still-$((1+1))\r").await;
    term.until("still-2").await;
    // A program's exit reaches the client with its code, then a normal close.
    term.type_text("exit 3\r").await;
    let exit = term.next_control("exit").await;
    assert_eq!(exit["exit_code"], 3);
    assert_eq!(term.until_closed().await.0, 1000);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_session_lives_on_detached_and_replays_from_an_offset_without_duplicates() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let mut term = connect(&app, &sb.id, "session=work").await;
    term.type_text("echo first-$((1+1)); (sleep 0.5; echo detached-$((2+2))) &\r")
        .await;
    term.until("first-2").await;
    let seen = term.total as u64;
    drop(term);
    // Output while nobody watches is drained and kept.
    let later = eventually(Duration::from_secs(10), || async {
        let list = terminals(&app, &sb.id).await;
        let t = list.iter().find(|t| t["name"] == "work")?;
        (t["offset"].as_u64()? > seen + 10 && t["clients"] == 0).then_some(())
    })
    .await;
    assert!(later.is_some(), "{:?}", terminals(&app, &sb.id).await);

    let mut whole = connect(&app, &sb.id, "session=work").await;
    let replay = whole.until("detached-4").await;
    assert!(
        replay.contains("first-2"),
        "all that is kept is replayed: {replay}"
    );

    let mut rest = connect_with(
        &ws_url(&app, &sb.id, &format!("session=work&offset={seen}")),
        Some(&app.key),
        &[],
    )
    .await
    .unwrap();
    let hello = rest.next_control("hello").await;
    assert_eq!(hello["offset"], seen);
    let tail = rest.until("detached-4").await;
    assert!(
        !tail.contains("first-2"),
        "no duplicates after the offset: {tail}"
    );
    assert!(rest.controls.iter().all(|c| c["type"] != "dropped"));

    // More than the ring keeps: asking from 0 says how much was lost.
    whole
        .type_text("head -c 1500000 /dev/zero | tr '\\0' x; echo; echo big-$((3*3))\r")
        .await;
    whole.until("big-9").await;
    let mut old = connect_with(
        &ws_url(&app, &sb.id, "session=work&offset=0"),
        Some(&app.key),
        &[],
    )
    .await
    .unwrap();
    let hello = old.next_control("hello").await;
    let dropped = old.next_control("dropped").await;
    assert!(hello["offset"].as_u64().unwrap() > 0);
    assert_eq!(dropped["bytes"], hello["offset"]);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_viewers_see_each_other_and_an_unnamed_terminal_ends_with_its_client() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let mut a = connect(&app, &sb.id, "session=pair").await;
    let mut b = connect(&app, &sb.id, "session=pair").await;
    a.type_text("echo from-a-$((1+0))\r").await;
    a.until("from-a-1").await;
    b.until("from-a-1").await;
    b.type_text("echo from-b-$((1+1))\r").await;
    b.until("from-b-2").await;
    a.until("from-b-2").await;
    let list = terminals(&app, &sb.id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["clients"], 2);

    // A client killed mid-stream: the named session stays; an unnamed one goes.
    drop(a);
    let mut lone = connect(&app, &sb.id, "cols=80&rows=24").await;
    lone.type_text("sleep 1000\r").await;
    assert_eq!(terminals(&app, &sb.id).await.len(), 2);
    drop(lone);
    let gone = eventually(Duration::from_secs(10), || async {
        let list = terminals(&app, &sb.id).await;
        (list.len() == 1 && list[0]["name"] == "pair" && list[0]["clients"] == 1).then_some(())
    })
    .await;
    assert!(gone.is_some(), "{:?}", terminals(&app, &sb.id).await);
    let ps = app
        .client
        .sh(&sb.id, "ps -eo args | grep -c '^sleep 1000' || true")
        .await
        .unwrap();
    assert_eq!(ps.stdout.trim(), "0", "the unnamed terminal's tree is gone");

    // Ending a session: its viewers hear the exit.
    let response = app
        .client
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/sandboxes/{}/terminals/pair", sb.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    b.next_control("exit").await;
    assert!(terminals(&app, &sb.id).await.is_empty());
    let missing = app
        .client
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/sandboxes/{}/terminals/pair", sb.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_does_not_keep_up_is_evicted_and_slows_nobody() {
    let app = spawn_app().await;
    // A quarter of a CPU for the flood, so the reading viewer (this test, a debug build
    // sharing two cores with the suite) keeps up with it under either runtime: with half
    // a CPU, gVisor's flood outran it here (evicted after 13-16 MB); with a quarter, 15 MB
    // take ~8 s under both.
    let sb = app.sandbox(json!({"cpu": 0.25})).await;
    let mut reader = connect(&app, &sb.id, "session=flood").await;
    let mut slow = connect(&app, &sb.id, "session=flood").await;
    let mut sleeper = connect(&app, &sb.id, "session=flood").await;
    let rss_before = peak_rss_bytes();
    // A viewer that reads, but a message now and then while the flood runs (1 a second:
    // behind whatever rate the runtime's terminal reaches) and is closed with 1008; once
    // the flood is over it reads on at full speed, so the close frame reaches it.
    let flood_over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let over = flood_over.clone();
    let slow_viewer = tokio::spawn(async move {
        loop {
            if !over.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if !slow.read_one().await {
                return slow.closed;
            }
        }
    });
    reader
        .type_text("yes | head -c 10000000; echo; echo flood-done-$((5*5))\r")
        .await;
    // The reader takes everything (15 MB once the PTY has turned each "\n" into "\r\n");
    // the sleeper reads nothing at all.
    reader.until("flood-done-25").await;
    flood_over.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.total > 15_000_000, "{}", reader.total);
    assert!(
        reader.closed.is_none(),
        "the reading viewer was not evicted"
    );
    let closed = tokio::time::timeout(Duration::from_secs(30), slow_viewer)
        .await
        .expect("the slow viewer was closed")
        .unwrap();
    let (code, reason) = closed.unwrap();
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("keep up"), "{reason}");
    // Only the reader is left (the sleeper's queue filled long ago).
    let evicted = eventually(Duration::from_secs(10), || async {
        let list = terminals(&app, &sb.id).await;
        (list.first()?["clients"] == 1).then_some(())
    })
    .await;
    assert!(evicted.is_some(), "{:?}", terminals(&app, &sb.id).await);
    // A viewer that never read anything: its socket was full, so no close frame could
    // follow the output it had not read; its connection was dropped.
    let (code, _) = sleeper.until_closed().await;
    assert!(code == 1008 || code == 1006, "closed with {code}");
    // Three viewers, 15 MB each: the supervisor held at most its bound per viewer.
    let grown = peak_rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 40 * 1024 * 1024,
        "the supervisor grew {} MiB for 3 x 15 MB of output",
        grown / (1024 * 1024)
    );
    reader.type_text("echo after-$((2*2))\r").await;
    reader.until("after-4").await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_origins_and_frame_sizes_are_checked_before_anything_runs() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let url = ws_url(&app, &sb.id, "session=guard");
    assert_eq!(connect_with(&url, None, &[]).await.err(), Some(401));
    assert_eq!(
        connect_with(&url, Some("berth_nope"), &[]).await.err(),
        Some(401)
    );
    // Browsers send the key as ?token=.
    let with_token = format!("{url}&token={}", app.key);
    let mut t = connect_with(&with_token, None, &[]).await.unwrap();
    t.next_control("hello").await;
    drop(t);
    let other = app.other_tenant("tenant-b").await;
    let _ = other;
    let key_b = common::key_for(app.service.store().as_ref(), "tenant-b").await;
    assert_eq!(connect_with(&url, Some(&key_b), &[]).await.err(), Some(404));
    // A foreign Origin is refused; this server's own is fine.
    let host = app.base.trim_start_matches("http://").to_string();
    assert_eq!(
        connect_with(&url, Some(&app.key), &[("origin", "http://evil.example")])
            .await
            .err(),
        Some(403)
    );
    let own = format!("http://{host}");
    let mut t = connect_with(&url, Some(&app.key), &[("origin", &own)])
        .await
        .unwrap();
    let hello = t.next_control("hello").await;
    assert!(hello.get("incarnation").is_none(), "{hello}");
    // A message past the limit closes the connection; the session itself lives on.
    t.ws.send(Message::Binary(vec![b'a'; 300 * 1024].into()))
        .await
        .ok();
    let (code, _) = t.until_closed().await;
    assert!(
        code == u16::from(CloseCode::Size) || code == 1006,
        "closed with {code}"
    );
    assert_eq!(terminals(&app, &sb.id).await.len(), 1);
    // A plain GET is told to use a WebSocket.
    let plain = app
        .client
        .request(
            reqwest::Method::GET,
            &format!("/v1/sandboxes/{}/terminal", sb.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    // A bad session name is refused before the upgrade.
    let bad = ws_url(&app, &sb.id, "session=../etc");
    assert_eq!(
        connect_with(&bad, Some(&app.key), &[]).await.err(),
        Some(400)
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_closes_its_terminals_within_seconds() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let second = common::key_for(app.service.store().as_ref(), "tenant-a").await;
    let mut t = connect_with(&ws_url(&app, &sb.id, "session=k"), Some(&second), &[])
        .await
        .unwrap();
    t.next_control("hello").await;
    let hash = berth::domain::ApiKey::from_presented(&second).hash();
    let revoked = app
        .service
        .store()
        .revoke_api_keys(&hash[..16])
        .await
        .unwrap();
    assert_eq!(revoked, 1);
    let started = Instant::now();
    let (code, reason) = t.until_closed().await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_on_a_stopped_sandbox_resumes_it_or_says_why_not() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    app.client.stop(&sb.id).await.unwrap();
    let mut t = connect(&app, &sb.id, "session=back").await;
    t.type_text("echo resumed-$((4+4))\r").await;
    t.until("resumed-8").await;
    assert_eq!(
        app.client.get_sandbox(&sb.id).await.unwrap().state,
        "running"
    );
    drop(t);
    let fixed = app.sandbox(json!({"auto_resume": false})).await;
    app.client.stop(&fixed.id).await.unwrap();
    let refused = connect_with(&ws_url(&app, &fixed.id, "session=x"), Some(&app.key), &[]).await;
    assert_eq!(refused.err(), Some(409));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_keeps_a_sandbox_from_idling_and_an_idle_stop_closes_the_terminal() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({"idle_timeout_s": 2})).await;
    let mut t = connect(&app, &sb.id, "session=busy").await;
    for i in 0..8 {
        t.type_text(&format!("echo tick-{i}\r")).await;
        t.until(&format!("tick-{i}\r\n")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        app.client.get_sandbox(&sb.id).await.unwrap().state,
        "running"
    );
    let (code, reason) = t.until_closed().await;
    assert_eq!(code, 1001, "{reason}");
    let stopped = eventually(Duration::from_secs(10), || async {
        (app.client.get_sandbox(&sb.id).await.ok()?.state == "stopped").then_some(())
    })
    .await;
    assert!(stopped.is_some(), "the idle sandbox stopped");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_supervisor_restart_and_its_recording_replays_the_commands() {
    let temp = tempfile::tempdir().unwrap();
    let mut app = spawn_with(test_config(temp.path())).await;
    let sb = app.sandbox(json!({})).await;
    let mut t = connect(&app, &sb.id, "session=rec").await;
    t.type_text("echo before-$((10+1))\r").await;
    t.until("before-11").await;
    drop(t);
    assert_eq!(app.service.recorders_running(), 1);
    app.stop_server().await;
    // Its recorder ended with it: the next server's must be the only one appending.
    assert_eq!(app.service.recorders_running(), 0);

    let app = spawn_with(test_config(temp.path())).await;
    let mut t = connect(&app, &sb.id, "session=rec").await;
    let replay = t.until("before-11").await;
    assert!(replay.contains("echo before"), "{replay}");
    t.type_text("echo after-$((10+2))\r").await;
    t.until("after-12").await;
    let recorded = eventually(Duration::from_secs(10), || async {
        let text = app
            .client
            .request(
                reqwest::Method::GET,
                &format!("/v1/sandboxes/{}/terminals/rec/recording", sb.id),
            )
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("after-12").then_some(text)
    })
    .await
    .expect("the recording has the output after the restart");
    let mut lines = recorded.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    let events: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let output: String = events
        .iter()
        .filter(|e| e[1] == "o")
        .map(|e| e[2].as_str().unwrap())
        .collect();
    assert_eq!(
        output.matches("before-11\r\n").count(),
        1,
        "the restart neither lost nor repeated output: {output:?}"
    );
    assert!(output.contains("echo after-$((10+2))"));
    // It plays in asciinema (which wants a terminal: `script` gives it one).
    let cast = temp.path().join("rec.cast");
    std::fs::write(&cast, &recorded).unwrap();
    let played = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("asciinema cat {}", cast.display()),
            "/dev/null",
        ])
        .output()
        .expect("asciinema and script are installed (scripts/test.sh installs them)");
    let played = String::from_utf8_lossy(&played.stdout);
    assert!(played.contains("echo after-$((10+2))"), "{played}");
    // The recording lives on the host, out of the sandbox's reach.
    let inside = app
        .client
        .sh(
            &sb.id,
            "find / -name 'rec.cast' -not -path '/proc/*' 2>/dev/null | wc -l",
        )
        .await
        .unwrap();
    assert_eq!(inside.stdout.trim(), "0");
    let none = app
        .client
        .request(
            reqwest::Method::GET,
            &format!("/v1/sandboxes/{}/terminals/nope/recording", sb.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_may_open_terminals() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.terminal_origins = vec!["https://app.example".into()];
    let app = spawn_with(config).await;
    let sb = app.sandbox(json!({})).await;
    let url = ws_url(&app, &sb.id, "session=o");
    let mut t = connect_with(&url, Some(&app.key), &[("origin", "https://app.example")])
        .await
        .unwrap();
    t.next_control("hello").await;
    assert_eq!(
        connect_with(&url, Some(&app.key), &[("origin", "https://other.example")])
            .await
            .err(),
        Some(403)
    );
    app.cleanup().await;
}

async fn recording(app: &common::TestApp, id: &str, session: &str) -> Option<String> {
    let response = app
        .client
        .request(
            reqwest::Method::GET,
            &format!("/v1/sandboxes/{id}/terminals/{session}/recording"),
        )
        .send()
        .await
        .ok()?;
    response.status().is_success().then_some(())?;
    response.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_and_restarted_sessions_are_recorded_whole() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    // An unnamed terminal whose program ends at once: its output is still recorded.
    let mut quick = connect_with(
        &ws_url(&app, &sb.id, "cmd=echo%20short-%24((1%2B1))"),
        Some(&app.key),
        &[],
    )
    .await
    .unwrap();
    let hello = quick.next_control("hello").await;
    let name = hello["session"].as_str().unwrap().to_string();
    quick.next_control("exit").await;
    let cast = eventually(Duration::from_secs(10), || async {
        let text = recording(&app, &sb.id, &name).await?;
        text.contains("short-2").then_some(text)
    })
    .await
    .expect("the short command's output is recorded");
    let header: Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);

    // A session name used again: one recording, both runs, a marker between.
    let mut first = connect(&app, &sb.id, "session=again").await;
    first.type_text("echo first-run-$((2+2)); exit\r").await;
    first.next_control("exit").await;
    let mut second = connect(&app, &sb.id, "session=again").await;
    second.type_text("echo second-run-$((3+3))\r").await;
    second.until("second-run-6").await;
    let cast = eventually(Duration::from_secs(10), || async {
        let text = recording(&app, &sb.id, "again").await?;
        text.contains("second-run-6").then_some(text)
    })
    .await
    .expect("the second run is recorded");
    assert!(cast.contains("first-run-4"), "{cast}");
    assert!(cast.contains("the session was started again"), "{cast}");
    let headers = cast.lines().filter(|l| l.starts_with('{')).count();
    assert_eq!(headers, 1, "one recording: {cast}");
    app.cleanup().await;
}
