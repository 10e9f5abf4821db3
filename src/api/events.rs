//! `GET /v1/events`: the tenant's lifecycle events as server-sent events (429 `busy` when
//! the tenant or the server has too many streams open). In a cluster, a stream that can
//! no longer see the other nodes' events (Redis went away) ends with an `error` event,
//! rather than going on with this node's alone.

use super::{ApiError, AppState, Tenant};
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;

pub async fn stream(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let mut subscription = state.service.subscribe(&tenant)?;
    let service = state.service.clone();
    let events = async_stream(move |tx| async move {
        let mut check = tokio::time::interval(CLUSTER_CHECK);
        loop {
            let received = tokio::select! {
                received = subscription.receiver.recv() => received,
                // The client went away: give the subscription's place back now.
                _ = tx.closed() => return,
                _ = check.tick() => match service.cluster_events_available() {
                    Ok(()) => continue,
                    Err(e) => {
                        let error = serde_json::json!({"error": {
                            "code": "unavailable",
                            "message": format!("{e}; reconnect: the stream answers 503 until it is back"),
                            "retryable": true,
                        }});
                        let _ = tx.send(SseEvent::default().event("error").data(error.to_string())).await;
                        return;
                    }
                },
            };
            match received {
                Ok(event) => {
                    let data = serde_json::to_string(&event).unwrap_or_default();
                    if tx
                        .send(SseEvent::default().event(event.kind.name()).data(data))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    let lagged = SseEvent::default()
                        .event("lagged")
                        .data(format!("{{\"missed\":{n}}}"));
                    if tx.send(lagged).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    let keep_alive = KeepAlive::new().interval(std::time::Duration::from_secs(5));
    Ok(Sse::new(events).keep_alive(keep_alive))
}

/// How often an open stream checks that it still sees the cluster's events.
const CLUSTER_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// A stream fed by a task through a small channel; the task stops when the client goes.
fn async_stream<F, Fut>(producer: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(producer(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)))
}
