//! Operations routes and the API's conventions: health, readiness, metrics, OpenAPI that
//! covers every route, request ids, JSON errors for unknown routes, auth on every /v1 route.

mod common;

use berth::api::openapi::OPERATIONS;
use common::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn health_readiness_metrics_and_openapi_answer_without_auth() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", app.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
    let ready: Value = get("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(
        ready,
        json!({"docker": "ok", "database": "ok", "server": "ok"})
    );
    let sb = app.sandbox(json!({})).await;
    app.client.sh(&sb.id, "true").await.unwrap();
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("berth_sandboxes{state=\"running\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"/v1/sandboxes/{id}/exec\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("berth_execs_total 1"));
    let doc: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path, ..) in OPERATIONS {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} documented"
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn every_documented_v1_route_exists_and_refuses_requests_without_a_key() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let authed = |path: &str| path.starts_with("/v1") || path.starts_with("/compat");
    for (method, path, ..) in OPERATIONS.iter().filter(|op| authed(op.1)) {
        let concrete = path
            .replace("{id}", "sb-0000000000000000")
            .replace("{pid}", "1")
            .replace("{name}", "vol");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = http
            .request(method.clone(), format!("{}{concrete}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert!(response.headers().contains_key("x-request-id"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn request_ids_are_echoed_and_unknown_routes_get_json_errors() {
    let app = spawn_app().await;
    let r = app
        .client
        .request(Method::GET, "/v1/sandboxes")
        .header("x-request-id", "trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-123");
    let r = app
        .client
        .request(Method::GET, "/v1/nothing-here")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let r = app
        .client
        .request(Method::PUT, "/v1/sandboxes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    app.cleanup().await;
}

#[tokio::test]
async fn lifecycle_events_stream_to_their_tenant_only() {
    let app = spawn_app().await;
    let other = app.other_tenant("tenant-b").await;
    let mine = app
        .client
        .request(Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    let theirs = other
        .request(Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), StatusCode::OK);
    let sb = app.sandbox(json!({})).await;
    app.client.stop(&sb.id).await.unwrap();
    let mut stream = mine.bytes_stream();
    let mut seen = String::new();
    use futures_util::StreamExt;
    while !seen.contains("sandbox.stopped") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("event: sandbox.created") && seen.contains("event: sandbox.started"),
        "{seen}"
    );
    assert!(seen.contains(&sb.id));
    let mut their_stream = theirs.bytes_stream();
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(500), their_stream.next()).await;
    assert!(nothing.is_err(), "another tenant sees none of these events");
    drop((stream, their_stream));
    app.cleanup().await;
}
