//! Several nodes on one Redis: membership (heartbeats with load, a node gone when its
//! lease lapses), every node's events on any node's `GET /v1/events`, and Redis stopped
//! mid-run (503 `retryable` for what needs the other nodes, each node still serving its
//! own sandboxes, everything back when Redis returns). The nodes are real `berth serve`
//! processes sharing this host's Docker engine (each scoped by its instance label) and a
//! private Redis the test starts; each keeps its own SQLite store here.

mod common;

use common::serve::{serve, DataDir, Serve};
use common::{eventually, RedisServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// The secret every node of these tests signs its hops with.
const SECRET: &str = "a test cluster's secret, 32+ characters long";

async fn node(data: &DataDir, redis: &RedisServer, name: &str) -> Serve {
    let url = redis.url();
    let advertise = format!("http://{name}.berth.test:8080");
    serve(
        &data.path(),
        &[
            ("BERTH_REDIS_URL", url.as_str()),
            ("BERTH_NODE_NAME", name),
            ("BERTH_ADVERTISE", advertise.as_str()),
            ("BERTH_CLUSTER_SECRET", SECRET),
        ],
    )
    .await
}

/// `GET /v1/nodes` on `server`: its status and body.
async fn nodes(server: &Serve) -> (StatusCode, Value) {
    let resp = server
        .client
        .request(Method::GET, "/v1/nodes")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn names(body: &Value) -> Vec<String> {
    body["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect()
}

async fn until_nodes(server: &Serve, want: &[&str]) -> Value {
    let seen = eventually(Duration::from_secs(20), || async {
        let (status, body) = nodes(server).await;
        (status == StatusCode::OK && names(&body) == want).then_some(body)
    })
    .await;
    match seen {
        Some(body) => body,
        None => panic!("nodes never became {want:?}: {:?}", nodes(server).await),
    }
}

async fn events(server: &Serve) -> reqwest::Response {
    let resp = server
        .client
        .request(Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp
}

/// `GET /v1/events` on `server` once it answers `status` (within 10 s).
async fn events_answering(server: &Serve, status: StatusCode) -> Option<reqwest::Response> {
    eventually(Duration::from_secs(10), || async {
        let resp = server
            .client
            .request(Method::GET, "/v1/events")
            .send()
            .await
            .ok()?;
        (resp.status() == status).then_some(resp)
    })
    .await
}

/// Reads an SSE stream until a line holds every one of `needles`.
async fn until_event(resp: reqwest::Response, needles: &[&str]) -> String {
    use futures_util::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(line) = seen.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let Ok(Some(Ok(chunk))) = next else {
            panic!("no event with {needles:?}: {seen}");
        };
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn nodes_see_each_other_and_each_others_events_and_ride_out_redis_going_away() {
    let mut redis = RedisServer::start().await;
    let (data_a, data_b) = (DataDir::new(), DataDir::new());
    let a = node(&data_a, &redis, "node-a").await;
    let b = node(&data_b, &redis, "node-b").await;

    // Each node sees both, with their addresses, epochs and what they hold.
    let body = until_nodes(&a, &["node-a", "node-b"]).await;
    let b_info = &body["nodes"][1];
    assert_eq!(b_info["advertise"], "http://node-b.berth.test:8080");
    assert!(b_info["epoch"].as_u64().unwrap() >= 1, "{body}");
    assert!(b_info["cpus"].as_f64().unwrap() >= 1.0, "{body}");
    until_nodes(&b, &["node-a", "node-b"]).await;

    // A sandbox made on B: its view names B, and A's event stream tells of it.
    let stream = events(&a).await;
    let sb = b
        .client
        .create_sandbox(&json!({"image": "base", "memory_mb": 256, "cpu": 0.5}))
        .await
        .unwrap();
    let view = b.client.get_sandbox(&sb.id).await.unwrap();
    assert_eq!(view.node.as_deref(), Some("node-b"));
    let line = until_event(stream, &["sandbox.started", &sb.id, "\"node\":\"node-b\""]).await;
    assert!(line.contains("\"state\":\"running\""), "{line}");
    // B's heartbeat carries what its sandbox reserves.
    let loaded = eventually(Duration::from_secs(10), || async {
        let (_, body) = nodes(&a).await;
        let b = body["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["name"] == "node-b")?
            .clone();
        (b["sandboxes"] == 1 && b["reserved_memory_mb"] == 256).then_some(())
    })
    .await;
    assert!(loaded.is_some(), "{:?}", nodes(&a).await);

    // Redis goes away: what needs the other nodes answers 503 retryable; A still
    // serves a sandbox of its own.
    let open = events(&a).await;
    redis.stop();
    // A stream open then ends, saying why, rather than go on with A's events alone.
    let line = until_event(open, &["\"code\":\"unavailable\"", "redis", "retryable"]).await;
    assert!(line.starts_with("data:"), "{line}");
    let refused = events_answering(&a, StatusCode::SERVICE_UNAVAILABLE)
        .await
        .expect("the event stream is refused while redis is down");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["retryable"], true, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("redis"),
        "{error}"
    );
    let (status, body) = nodes(&a).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let own = a
        .client
        .create_sandbox(&json!({"image": "base", "memory_mb": 256, "cpu": 0.5}))
        .await
        .unwrap();
    assert_eq!(
        a.client.sh(&own.id, "echo alone").await.unwrap().stdout,
        "alone\n"
    );

    // Redis is back (empty: it kept nothing): heartbeats and events resume by themselves.
    redis.restart().await;
    until_nodes(&a, &["node-a", "node-b"]).await;
    let stream = events_answering(&a, StatusCode::OK)
        .await
        .expect("the event stream is back");
    b.client.stop(&sb.id).await.unwrap();
    until_event(stream, &["sandbox.stopped", &sb.id, "node-b"]).await;

    // B dies without a word: A drops it once its lease lapses.
    b.client.delete(&sb.id, false).await.unwrap();
    drop(b);
    until_nodes(&a, &["node-a"]).await;
    a.client.delete(&own.id, false).await.unwrap();
    assert_eq!(a.terminate().await.code(), Some(0));
}

/// Two nodes on one PostgreSQL database (and one Redis): a node's start-up
/// reconciliation, reaper and watcher see to its own sandboxes only. Node B, started
/// and restarted beside A's running sandbox (whose container B's engine scope does not
/// hold), leaves it running; A's sandbox keeps working, and B's own are B's.
#[tokio::test]
async fn nodes_on_one_postgresql_leave_each_others_sandboxes_alone() {
    let Ok(server) = std::env::var("BERTH_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this with BERTH_TEST_POSTGRES_URL (scripts/test.sh starts PostgreSQL)"
        );
        eprintln!("no BERTH_TEST_POSTGRES_URL: scripts/test.sh starts a private PostgreSQL");
        return;
    };
    let database = format!(
        "{}/berth_cluster_{}",
        server.trim_end_matches('/'),
        std::process::id()
    );
    let redis = RedisServer::start().await;
    let (data_a, data_b) = (DataDir::new(), DataDir::new());
    let shared = |name: &'static str| {
        let (redis, database) = (redis.url(), database.clone());
        move |data: &DataDir| {
            let (redis, database) = (redis.clone(), database.clone());
            let data = data.path();
            async move {
                serve(
                    &data,
                    &[
                        ("BERTH_REDIS_URL", redis.as_str()),
                        ("BERTH_NODE_NAME", name),
                        ("BERTH_DATABASE_URL", database.as_str()),
                        ("BERTH_CLUSTER_SECRET", SECRET),
                    ],
                )
                .await
            }
        }
    };
    let a = shared("node-a")(&data_a).await;
    let sb = a
        .client
        .create_sandbox(&json!({"image": "base", "memory_mb": 256, "cpu": 0.5}))
        .await
        .unwrap();
    a.client
        .write_file(&sb.id, "mine.txt", "a's")
        .await
        .unwrap();
    // B shares the database, so A's key: the key file is the tenant's, not the node's.
    let key = berth::startup::DEFAULT_KEY_FILE;
    std::fs::create_dir_all(data_b.path().join(key).parent().unwrap()).unwrap();
    std::fs::copy(data_a.path().join(key), data_b.path().join(key)).unwrap();
    for round in 0..2 {
        let b = shared("node-b")(&data_b).await;
        let seen = b.client.get_sandbox(&sb.id).await.unwrap();
        assert_eq!(
            (seen.state.as_str(), seen.node.as_deref()),
            ("running", Some("node-a")),
            "round {round}"
        );
        let theirs = b
            .client
            .create_sandbox(&json!({"image": "base", "memory_mb": 256, "cpu": 0.5}))
            .await
            .unwrap();
        assert_eq!(theirs.node.as_deref(), Some("node-b"));
        b.client.delete(&theirs.id, false).await.unwrap();
        assert_eq!(b.terminate().await.code(), Some(0));
    }
    let out = a.client.sh(&sb.id, "cat mine.txt").await.unwrap();
    assert_eq!(out.stdout, "a's");
    assert_eq!(a.client.get_sandbox(&sb.id).await.unwrap().state, "running");
    a.client.delete(&sb.id, false).await.unwrap();
    assert_eq!(a.terminate().await.code(), Some(0));
}

/// The PostgreSQL database of one test (on the server scripts/test.sh starts), or `None`
/// outside CI when there is none.
fn test_database(name: &str) -> Option<String> {
    let Ok(server) = std::env::var("BERTH_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this with BERTH_TEST_POSTGRES_URL (scripts/test.sh starts PostgreSQL)"
        );
        eprintln!("no BERTH_TEST_POSTGRES_URL: scripts/test.sh starts a private PostgreSQL");
        return None;
    };
    Some(format!(
        "{}/berth_{name}_{}",
        server.trim_end_matches('/'),
        std::process::id()
    ))
}

/// Nodes `names` on one Redis and one database, each on its own data dir (the first's
/// key copied to the others: the tenant's key is in the shared database). Each advertises
/// the address it listens on (the default).
async fn cluster(redis: &RedisServer, database: &str, names: &[&str]) -> Vec<(DataDir, Serve)> {
    let mut nodes: Vec<(DataDir, Serve)> = Vec::new();
    for name in names {
        let data = DataDir::new();
        if let Some((first, _)) = nodes.first() {
            let key = berth::startup::DEFAULT_KEY_FILE;
            std::fs::create_dir_all(data.path().join(key).parent().unwrap()).unwrap();
            std::fs::copy(first.path().join(key), data.path().join(key)).unwrap();
        }
        let url = redis.url();
        let node = serve(
            &data.path(),
            &[
                ("BERTH_REDIS_URL", url.as_str()),
                ("BERTH_NODE_NAME", name),
                ("BERTH_DATABASE_URL", database),
                ("BERTH_CLUSTER_SECRET", SECRET),
                ("BERTH_MAX_SANDBOXES_PER_TENANT", "6"),
                // Creates racing for the quota overlap every time.
                ("BERTH_PAUSE_AT", "admission.after_count"),
            ],
        )
        .await;
        nodes.push((data, node));
    }
    nodes
}

/// A terminal through `server` on `id`: it echoes `command`'s output back.
async fn terminal_echoes(server: &Serve, id: &str, key: &str, command: &str, want: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!(
        "{}/v1/sandboxes/{id}/terminal?token={key}",
        server.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the terminal opens");
    ws.send(Message::Binary(format!("{command}\r").into_bytes().into()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&seen).contains(want) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => seen.extend_from_slice(&bytes),
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "no {want:?} from the terminal ({other:?}): {}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

/// Any node serves any sandbox: creates are placed (on the node asked for, or the least
/// loaded), and exec, streams, files and a terminal through a node that does not hold the
/// sandbox reach the one that does, signed as a hop that carries no tenant key. A hop
/// that does not verify is refused; a retried create with the same `Idempotency-Key`
/// through another node is the same sandbox; the owner gone, its sandboxes' requests
/// answer 503 `node_unavailable` through the others. The three nodes share this host's
/// Docker engine, each scoped by its instance label.
#[tokio::test]
async fn any_node_serves_any_sandbox_and_creates_go_where_there_is_room() {
    let Some(database) = test_database("proxy") else {
        return;
    };
    let redis = RedisServer::start().await;
    let mut members = cluster(&redis, &database, &["node-a", "node-b", "node-c"]).await;
    let (a, b, c) = (&members[0].1, &members[1].1, &members[2].1);
    until_nodes(a, &["node-a", "node-b", "node-c"]).await;
    until_nodes(c, &["node-a", "node-b", "node-c"]).await;

    // Through A, asked for B: it is B's.
    let sb = a
        .client
        .create_sandbox(&json!({"image": "base", "memory_mb": 256, "cpu": 0.5, "node": "node-b"}))
        .await
        .unwrap();
    assert_eq!(sb.node.as_deref(), Some("node-b"));
    let unknown = a
        .client
        .create_sandbox(&json!({"image": "base", "node": "node-z"}))
        .await
        .unwrap_err();
    assert_eq!(unknown.status(), Some(StatusCode::BAD_REQUEST), "{unknown}");
    assert!(unknown.to_string().contains("node-z"), "{unknown}");

    // Through C: exec, a stream, files and a terminal reach it on B.
    let out = c
        .client
        .sh(&sb.id, "echo from-$((40+2)) > f.txt; cat f.txt")
        .await
        .unwrap();
    assert_eq!(out.stdout, "from-42\n");
    assert_eq!(
        &a.client.read_file(&sb.id, "f.txt").await.unwrap()[..],
        b"from-42\n"
    );
    c.client.write_file(&sb.id, "g.txt", "via c").await.unwrap();
    assert_eq!(
        b.client.sh(&sb.id, "cat g.txt").await.unwrap().stdout,
        "via c"
    );
    {
        use futures_util::StreamExt;
        let request = serde_json::from_value(json!({
            "command": "for i in 1 2 3; do echo tick$i; done"
        }))
        .unwrap();
        let events: Vec<_> = c
            .client
            .exec_stream(&sb.id, &request)
            .await
            .unwrap()
            .collect()
            .await;
        let text = format!("{events:?}");
        assert!(text.contains("tick3") && text.contains("exit"), "{text}");
    }
    let key = a.client.key().unwrap().to_string();
    terminal_echoes(c, &sb.id, &key, "echo hop$((1+1))", "hop2").await;

    // The Modal-compatible routes name their sandbox by the session in the body: a
    // session begun through B is B's, and A and C reach it there.
    let compat = |node: &Serve, route: &str, body: Value| {
        let request = node
            .client
            .request(Method::POST, &format!("/compat/modal/{route}"))
            .json(&body);
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let write = json!({"sessionId": "hop-s", "path": "h.txt", "content": "from b"});
    let (status, body) = compat(b, "write_file", write).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = compat(
        a,
        "read_file",
        json!({"sessionId": "hop-s", "path": "h.txt"}),
    )
    .await;
    assert_eq!(
        (status, &body["content"]),
        (StatusCode::OK, &json!("from b")),
        "{body}"
    );
    let (status, body) = compat(c, "list_files", json!({"sessionId": "hop-s"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.to_string().contains("h.txt"), "{body}");
    let sessions = c
        .client
        .list_sandboxes("label=session=hop-s")
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].node.as_deref(), Some("node-b"));
    let session_sandbox = sessions[0].id.clone();
    let forwarded = |body: String| {
        body.lines()
            .find_map(|l| l.strip_prefix("berth_forwarded_requests_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let metrics = c
        .client
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    // exec, the stream, the write, the terminal and the listing; C ran none of them itself.
    assert_eq!(forwarded(metrics.clone()), 5, "{metrics}");
    assert!(metrics.contains("berth_execs_total 0"), "{metrics}");
    a.client.delete(&session_sandbox, false).await.unwrap();

    // A hop is only as good as its signature: forged, or signed with another secret,
    // it is refused; signed with the cluster's, it is served.
    let path = format!("/v1/sandboxes/{}", sb.id);
    let hop_to_b = |auth: String| {
        reqwest::Client::new()
            .get(format!("{}{path}", b.base))
            .header("x-berth-node-auth", auth)
            .header("x-berth-tenant", "default")
            .header("x-berth-key-hash", "")
            .send()
    };
    // The tenant of the key file berth made at its first start.
    let hop = berth::cluster::hop::Hop::new("node-x", "node-b", "default", "");
    let now = chrono::Utc::now().timestamp();
    let wrong = berth::cluster::hop::Secret("not the cluster's secret, but as long".into());
    let right = berth::cluster::hop::Secret(SECRET.into());
    for forged in [
        "v1:0:node-x:00".to_string(),
        berth::cluster::hop::sign(&wrong, now, &hop, "GET", &path),
        berth::cluster::hop::sign(&right, now, &hop, "DELETE", &path),
    ] {
        let resp = hop_to_b(forged).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let credential = berth::cluster::hop::sign(&right, now, &hop, "GET", &path);
    let signed = hop_to_b(credential.clone()).await.unwrap();
    assert_eq!(signed.status(), StatusCode::OK);
    // Read off the wire and sent again, the same credential is refused.
    let replayed = hop_to_b(credential).await.unwrap();
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    let body = replayed.text().await.unwrap();
    assert!(body.contains("used before"), "{body}");
    // Nor is one signed for B taken by another node.
    let for_b = berth::cluster::hop::sign(&right, now, &hop, "GET", &path);
    let elsewhere = reqwest::Client::new()
        .get(format!("{}{path}", c.base))
        .header("x-berth-node-auth", for_b)
        .header("x-berth-tenant", "default")
        .header("x-berth-key-hash", "")
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
    // A hop is never sent on again, and a node that does not hold the sandbox changes
    // nothing of it: A, sent B's sandbox's delete as a hop, refuses.
    let for_a = berth::cluster::hop::Hop::new("node-x", "node-a", "default", "");
    let to_a = reqwest::Client::new()
        .delete(format!("{}{path}", a.base))
        .header(
            "x-berth-node-auth",
            berth::cluster::hop::sign(&right, now, &for_a, "DELETE", &path),
        )
        .header("x-berth-tenant", "default")
        .header("x-berth-key-hash", "")
        .send()
        .await
        .unwrap();
    assert_eq!(to_a.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = to_a.text().await.unwrap();
    assert!(body.contains("held by node node-b"), "{body}");
    assert_eq!(c.client.get_sandbox(&sb.id).await.unwrap().state, "running");
    // An id spelled with escapes is the same sandbox, and goes to B too.
    let escaped = format!("/v1/sandboxes/%73{}/exec", &sb.id[1..]);
    let out: Value = c
        .client
        .request(Method::POST, &escaped)
        .json(&json!({"command": "cat g.txt"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["stdout"], "via c", "{out}");

    // Placement: with A and B loaded, a create through A goes to C, the least loaded.
    let mut loaded = Vec::new();
    for _ in 0..2 {
        let s = b
            .client
            .create_sandbox(
                &json!({"image": "base", "memory_mb": 256, "cpu": 0.5, "node": "node-a"}),
            )
            .await
            .unwrap();
        assert_eq!(s.node.as_deref(), Some("node-a"));
        loaded.push(s.id);
    }
    let seen = eventually(Duration::from_secs(10), || async {
        let (_, body) = nodes(a).await;
        let count = |name: &str| {
            body["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["name"] == name)?["sandboxes"]
                .as_u64()
        };
        (count("node-a")? == 2 && count("node-b")? == 1).then_some(())
    })
    .await;
    assert!(seen.is_some(), "{:?}", nodes(a).await);
    let placed = a
        .client
        .request(Method::POST, "/v1/sandboxes")
        .header("idempotency-key", "placed-once")
        .json(&json!({"image": "base", "memory_mb": 256, "cpu": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::CREATED);
    let placed: Value = placed.json().await.unwrap();
    assert_eq!(placed["node"], "node-c", "{placed}");
    // The same key through B: the same sandbox, wherever this one would have gone.
    let again: Value = b
        .client
        .request(Method::POST, "/v1/sandboxes")
        .header("idempotency-key", "placed-once")
        .json(&json!({"image": "base", "memory_mb": 256, "cpu": 0.5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["id"], placed["id"], "{again}");

    // A node whose heartbeat is still in but which cannot be reached (nothing listens at
    // its address) looks the least loaded: a create placed there goes on to a live one.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ghost = json!({
        "name": "node-ghost", "advertise": format!("http://{dead}"), "epoch": 1,
        "cpus": 64.0, "memory_mb": 1 << 20, "reserved_cpu": 0.0, "reserved_memory_mb": 0,
        "sandboxes": 0, "heartbeat_at": chrono::Utc::now().to_rfc3339(),
    });
    let ghost = ghost.to_string();
    let set = ["SET", "berth:node:node-ghost", &ghost, "PX", "60000"];
    assert_eq!(redis_command(&redis, &set).await, "+OK");
    until_nodes(a, &["node-a", "node-b", "node-c", "node-ghost"]).await;
    let elsewhere = a
        .client
        .create_sandbox(&json!({"image": "base", "memory_mb": 128, "cpu": 0.25}))
        .await
        .unwrap();
    let on = elsewhere.node.clone().unwrap_or_default();
    assert!(
        ["node-a", "node-b", "node-c"].contains(&on.as_str()),
        "{on}"
    );
    redis_command(&redis, &["DEL", "berth:node:node-ghost"]).await;
    a.client.delete(&elsewhere.id, false).await.unwrap();

    // The tenant's quota (6) holds across the nodes: of four creates at once through
    // all three, with four sandboxes live, two are made.
    // (Each made on its own node: a node's own creates queue for its admission anyway.)
    let small = |on: &str| json!({"image": "base", "memory_mb": 128, "cpu": 0.25, "node": on});
    let asks = [
        small("node-a"),
        small("node-b"),
        small("node-c"),
        small("node-a"),
    ];
    let through = [a, b, c, a];
    let creates = through
        .iter()
        .zip(&asks)
        .map(|(node, ask)| node.client.create_sandbox(ask));
    let results = futures_util::future::join_all(creates).await;
    let made: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|s| s.id.clone()))
        .collect();
    assert_eq!(made.len(), 2, "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(refused.to_string().contains("limit 6"), "{refused}");
    }
    for id in &made {
        a.client.delete(id, false).await.unwrap();
    }

    // B is gone: its sandbox's requests through the others say so, retryable.
    let (_data_b, gone) = members.remove(1);
    drop(gone);
    let (a, c) = (&members[0].1, &members[1].1);
    until_nodes(a, &["node-a", "node-c"]).await;
    let refused = c.client.sh(&sb.id, "true").await.unwrap_err();
    assert_eq!(
        refused.status(),
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "{refused}"
    );
    assert!(refused.to_string().contains("node-b"), "{refused}");

    for id in loaded
        .iter()
        .chain([placed["id"].as_str().unwrap().to_string()].iter())
    {
        c.client.delete(id, false).await.unwrap();
    }
    for (_data, node) in members {
        assert_eq!(node.terminate().await.code(), Some(0));
    }
}

/// One command to `redis` in RESP; its reply's first line.
async fn redis_command(redis: &RedisServer, args: &[&str]) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut wire = format!("*{}\r\n", args.len());
    for arg in args {
        wire.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
        .await
        .unwrap();
    conn.write_all(wire.as_bytes()).await.unwrap();
    let mut reply = String::new();
    tokio::io::BufReader::new(conn)
        .read_line(&mut reply)
        .await
        .unwrap();
    reply.trim_end().to_string()
}

/// `berth serve` as node `name` of the cluster on `redis` and `database`, with `extra`
/// (its engine, its archive store); the first node's key goes to the others' data dirs.
async fn member(
    name: &str,
    data: &DataDir,
    first: Option<&DataDir>,
    redis: &RedisServer,
    database: &str,
    extra: &[(&str, &str)],
) -> Serve {
    if let Some(first) = first {
        let key = berth::startup::DEFAULT_KEY_FILE;
        std::fs::create_dir_all(data.path().join(key).parent().unwrap()).unwrap();
        std::fs::copy(first.path().join(key), data.path().join(key)).unwrap();
    }
    let url = redis.url();
    let mut env = vec![
        ("BERTH_REDIS_URL", url.as_str()),
        ("BERTH_NODE_NAME", name),
        ("BERTH_DATABASE_URL", database),
        ("BERTH_CLUSTER_SECRET", SECRET),
    ];
    env.extend_from_slice(extra);
    serve(&data.path(), &env).await
}

/// The names of the containers and volumes on `engine`.
fn engine_objects(engine: &common::engine::Engine) -> String {
    let list = |args: &[&str]| {
        let out = engine.docker().args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    list(&["ps", "-a", "--format", "{{.Names}}"]) + &list(&["volume", "ls", "-q"])
}

/// Node loss with an engine per node (B and C each get a private dockerd; A uses the
/// host's) and one S3-compatible archive store: SIGKILL B, and within its lease its
/// sandboxes are `lost` (an event on A). The one with a snapshot resumes on C with the
/// snapshot's files (what was written after it was on B); the one without says so.
/// B restarts: the copy C took over is removed from B's engine (never run twice), and
/// the one nobody took runs on at B as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nodes_sandboxes_come_back_elsewhere_and_never_run_twice() {
    use common::engine::{busybox_image, Engine};
    let Some(database) = test_database("loss") else {
        return;
    };
    let engines = (Engine::start(), Engine::start());
    let (Some(engine_b), Some(engine_c)) = engines else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root, with dockerd"
        );
        return;
    };
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("b")).unwrap();
    std::fs::create_dir_all(work.path().join("c")).unwrap();
    let image = busybox_image(&engine_b, &work.path().join("b"));
    assert_eq!(busybox_image(&engine_c, &work.path().join("c")), image);
    let s3 = common::S3Server::start().await;
    let redis = RedisServer::start().await;
    let archive = format!("s3://{}/cluster", s3.bucket);
    let store = [
        ("BERTH_ARCHIVE_URL", archive.as_str()),
        ("BERTH_ARCHIVE_ENDPOINT", s3.endpoint.as_str()),
        ("BERTH_ARCHIVE_REGION", "us-east-1"),
        ("BERTH_ARCHIVE_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", common::S3_ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", common::S3_SECRET_KEY),
        // The private engines have no runsc: runc under every pass.
        ("BERTH_RUNTIME", "runc"),
    ];
    let (host_b, host_c) = (engine_b.host(), engine_c.host());
    fn on<'a>(store: &[(&'a str, &'a str)], host: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut env = store.to_vec();
        env.push(("DOCKER_HOST", host));
        env
    }
    let with_host_b = on(&store, &host_b);
    let (data_a, data_b, data_c) = (DataDir::new(), DataDir::new(), DataDir::new());
    let a = member("node-a", &data_a, None, &redis, &database, &store).await;
    let b = member(
        "node-b",
        &data_b,
        Some(&data_a),
        &redis,
        &database,
        &with_host_b,
    )
    .await;
    let c = member(
        "node-c",
        &data_c,
        Some(&data_a),
        &redis,
        &database,
        &on(&store, &host_c),
    )
    .await;
    until_nodes(&a, &["node-a", "node-b", "node-c"]).await;

    let cat = |path: &str| {
        serde_json::from_value::<berth_runtime::wire::ExecRequest>(
            json!({"cmd": ["/bin/busybox", "cat", path]}),
        )
        .unwrap()
    };
    let on_b = json!({"image": image, "memory_mb": 128, "cpu": 0.25, "node": "node-b"});
    let kept = a.client.create_sandbox(&on_b).await.unwrap();
    let unsaved = a.client.create_sandbox(&on_b).await.unwrap();
    assert_eq!(kept.node.as_deref(), Some("node-b"));
    a.client
        .write_file(&kept.id, "before.txt", "in the snapshot")
        .await
        .unwrap();
    let snap = a
        .client
        .request(
            Method::POST,
            &format!("/v1/sandboxes/{}/snapshots", kept.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(snap.status(), StatusCode::CREATED);
    c.client
        .write_file(&kept.id, "after.txt", "only on b")
        .await
        .unwrap();
    a.client
        .write_file(&unsaved.id, "mine.txt", "b's alone")
        .await
        .unwrap();
    assert!(engine_objects(&engine_b).contains(&kept.id));

    // B dies: within its lease (and a look or two), its sandboxes are lost.
    let stream = events(&a).await;
    let killed = std::time::Instant::now();
    drop(b);
    let line = until_event(stream, &["sandbox.lost", &kept.id]).await;
    assert!(line.contains("\"state\":\"lost\""), "{line}");
    let lost_after = killed.elapsed();
    assert!(lost_after < Duration::from_secs(15), "{lost_after:?}");
    let seen = eventually(Duration::from_secs(10), || async {
        let s = c.client.get_sandbox(&unsaved.id).await.ok()?;
        (s.state == "lost").then_some(s)
    })
    .await
    .expect("the sandbox without a snapshot is lost too");
    assert_eq!(seen.node.as_deref(), Some("node-b"));

    // The one with a snapshot comes back on C, from it.
    let back = c.client.resume(&kept.id).await.unwrap();
    assert_eq!(
        (back.state.as_str(), back.node.as_deref()),
        ("running", Some("node-c"))
    );
    let out = a.client.exec(&kept.id, &cat("before.txt")).await.unwrap();
    assert_eq!(out.stdout, "in the snapshot");
    let out = a.client.exec(&kept.id, &cat("after.txt")).await.unwrap();
    assert_ne!(
        out.exit_code,
        Some(0),
        "written after the snapshot: lost with b"
    );
    assert!(engine_objects(&engine_c).contains(&kept.id));
    // The other has nothing to come back from, and says what would bring it back.
    let refused = c.client.resume(&unsaved.id).await.unwrap_err();
    assert_eq!(refused.status(), Some(StatusCode::CONFLICT), "{refused}");
    assert!(refused.to_string().contains("no snapshot"), "{refused}");

    // B returns: the copy C holds now goes from B's engine; the other is B's again.
    let b = member("node-b", &data_b, None, &redis, &database, &with_host_b).await;
    let objects = engine_objects(&engine_b);
    assert!(!objects.contains(&kept.id), "{objects}");
    assert!(objects.contains(&unsaved.id), "{objects}");
    let again = a.client.get_sandbox(&unsaved.id).await.unwrap();
    assert_eq!(
        (again.state.as_str(), again.node.as_deref()),
        ("running", Some("node-b"))
    );
    let out = c.client.exec(&unsaved.id, &cat("mine.txt")).await.unwrap();
    assert_eq!(out.stdout, "b's alone");
    // And C's is untouched by B's return.
    let out = b.client.exec(&kept.id, &cat("before.txt")).await.unwrap();
    assert_eq!(out.stdout, "in the snapshot");

    a.client.delete(&kept.id, false).await.unwrap();
    a.client.delete(&unsaved.id, false).await.unwrap();
    for node in [a, b, c] {
        assert_eq!(node.terminate().await.code(), Some(0));
    }
}
