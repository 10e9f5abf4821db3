//! Terminal routes: `GET /v1/sandboxes/{id}/terminal` upgrades to a WebSocket bridged to a
//! PTY in the agent (binary frames are terminal bytes both ways, text frames JSON
//! control), plus listing, ending and recordings. Everything that can be refused is
//! refused before the upgrade: key, origin, sandbox state, session name. A viewer that
//! falls a queue's worth behind is closed with 1008; it never slows the terminal.

use super::auth::KeyHash;
use super::{parse_id, ApiError, AppState, Tenant};
use crate::sandbox::{TerminalAttach, TerminalInfo, TerminalRequest};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_runtime::term::{
    clamp_size, encode, encode_control, Frame, FrameReader, TermControl, DATA,
};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Output a viewer may have queued before it is closed with 1008: enough for bursts (a
/// `cat` outruns a client for a moment), never more than this per viewer (every message
/// counts, with its overhead).
pub const VIEWER_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Largest WebSocket message and frame a client may send.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// How often an open terminal checks that its key still works.
const KEY_CHECK: Duration = Duration::from_secs(1);

/// Close codes.
const NORMAL: u16 = 1000;
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;

#[derive(Deserialize)]
pub struct TerminalQuery {
    #[serde(default)]
    cols: Option<u16>,
    #[serde(default)]
    rows: Option<u16>,
    #[serde(default)]
    cmd: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    /// The key, for browsers (checked by the `Tenant` extractor).
    #[serde(default)]
    #[allow(dead_code)]
    token: Option<String>,
}

/// A browser's `Origin` must be this server's own or one the config allows.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        // Not a browser.
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let bare = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    !host.is_empty() && bare.is_some_and(|o| o.eq_ignore_ascii_case(host))
}

pub async fn terminal(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    key_hash: Option<axum::Extension<KeyHash>>,
    Path(id): Path<String>,
    Query(q): Query<TerminalQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|e| {
        ApiError::invalid(format!(
            "this route upgrades to a WebSocket ({e}); connect with a WebSocket client"
        ))
    })?;
    if !origin_allowed(&headers, &state.service.config().terminal_origins) {
        return Err(ApiError::forbidden(
            "this Origin may not open terminals; add it to `terminal_origins` in the config",
        ));
    }
    let id = parse_id(&id)?;
    let attach = state
        .service
        .open_terminal(
            &tenant,
            &id,
            TerminalRequest {
                session: q.session,
                cols: q.cols,
                rows: q.rows,
                offset: q.offset,
                cmd: q.cmd,
            },
        )
        .await?;
    Ok(ws
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| bridge(socket, attach, state, tenant, key_hash.map(|k| k.0 .0))))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.chars().take(120).collect::<String>().into(),
    }))
}

fn control_text(control: &TermControl) -> Message {
    Message::Text(serde_json::to_string(control).unwrap_or_default().into())
}

/// What a client may send as text.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientControl {
    Resize { cols: u16, rows: u16 },
}

/// What a queued message costs against a viewer's bound: its bytes and some overhead, so
/// a stream of tiny messages cannot grow the queue for free either.
fn cost(message: &Message) -> usize {
    64 + match message {
        Message::Binary(b) => b.len(),
        Message::Text(t) => t.len(),
        _ => 0,
    }
}

/// A viewer's outgoing queue: bounded in bytes; past the bound the viewer is evicted,
/// which skips what is queued and closes at once.
struct Outbox {
    tx: mpsc::UnboundedSender<Message>,
    queued: Arc<AtomicUsize>,
    evict: Arc<tokio::sync::Notify>,
}

impl Outbox {
    /// Queues `message`; false once the viewer was evicted (nothing more is queued).
    fn send(&self, message: Message) -> bool {
        let before = self.queued.fetch_add(cost(&message), Ordering::Relaxed);
        if before + cost(&message) > VIEWER_QUEUE_BYTES {
            self.evict.notify_one();
            return false;
        }
        self.tx.send(message).is_ok()
    }
}

/// How long a client may stay silent (no pong, no message) before it is taken for gone.
const SILENT_LIMIT: Duration = Duration::from_secs(90);
/// How often it is pinged.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long the last output, the exit and the close may take to reach a client.
const FAREWELL: Duration = Duration::from_secs(30);

/// Carries one client: agent output to the socket through a byte-bounded queue, client
/// input and resizes to the agent, pings, and a key check; the first to end ends them.
async fn bridge(
    socket: WebSocket,
    attach: TerminalAttach,
    state: AppState,
    tenant: crate::domain::TenantId,
    // None: no key to re-check (a hop that named none).
    key_hash: Option<String>,
) {
    let service = state.service.clone();
    let sandbox = attach.sandbox.clone();
    let (mut to_client, mut from_client) = socket.split();
    let (agent_read, mut agent_write) = tokio::io::split(attach.io);
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let outbox = Outbox {
        tx,
        queued: Arc::new(AtomicUsize::new(0)),
        evict: Arc::new(tokio::sync::Notify::new()),
    };
    let heard = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));

    let writer = {
        let queued = outbox.queued.clone();
        let evict = outbox.evict.clone();
        async move {
            loop {
                let message = tokio::select! {
                    biased;
                    _ = evict.notified() => {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            to_client.send(close(POLICY, "the viewer did not keep up with the output")),
                        )
                        .await;
                        return;
                    }
                    message = rx.recv() => match message {
                        Some(m) => m,
                        None => return,
                    },
                };
                let spent = cost(&message);
                let last = matches!(message, Message::Close(_));
                if to_client.send(message).await.is_err() {
                    return;
                }
                queued.fetch_sub(spent, Ordering::Relaxed);
                if last {
                    return;
                }
            }
        }
    };

    let from_agent = {
        let outbox = &outbox;
        async move {
            let mut frames = FrameReader::new(agent_read);
            loop {
                let frame = match frames.next().await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => {
                        outbox.send(close(GOING_AWAY, "the terminal's sandbox stopped"));
                        return;
                    }
                    Err(e) => {
                        outbox.send(close(1011, &e.to_string()));
                        return;
                    }
                };
                let queued = match frame {
                    Frame::Data(bytes) if bytes.is_empty() => true,
                    Frame::Data(bytes) => outbox.send(Message::Binary(bytes.into())),
                    Frame::Control(TermControl::Exit { exit_code }) => {
                        outbox.send(control_text(&TermControl::Exit { exit_code }));
                        outbox.send(close(NORMAL, "the program exited"));
                        return;
                    }
                    Frame::Control(TermControl::Evicted { .. }) => {
                        outbox.evict.notify_one();
                        return;
                    }
                    // The session's run is the supervisor's business; sizes are the clients'.
                    Frame::Control(TermControl::Hello {
                        session,
                        cols,
                        rows,
                        offset,
                        ..
                    }) => outbox.send(control_text(&TermControl::Hello {
                        session,
                        cols,
                        rows,
                        offset,
                        incarnation: String::new(),
                    })),
                    Frame::Control(TermControl::Resize { .. }) => true,
                    Frame::Control(control) => outbox.send(control_text(&control)),
                };
                if !queued {
                    return;
                }
            }
        }
    };

    let from_client = {
        let outbox = &outbox;
        let service = service.clone();
        let heard = heard.clone();
        async move {
            while let Some(Ok(message)) = from_client.next().await {
                *heard.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
                let frame = match message {
                    Message::Binary(input) if input.is_empty() => continue,
                    Message::Binary(input) => {
                        service.terminal_activity(&sandbox);
                        encode(DATA, &input)
                    }
                    Message::Text(text) => match serde_json::from_str::<ClientControl>(&text) {
                        Ok(ClientControl::Resize { cols, rows }) => {
                            encode_control(&TermControl::Resize {
                                cols: clamp_size(cols),
                                rows: clamp_size(rows),
                            })
                        }
                        Err(e) => {
                            let message = format!(
                                "not a control message ({e}); send {{\"type\":\"resize\",\"cols\":N,\"rows\":N}} as text, input as binary"
                            );
                            if !outbox.send(control_text(&TermControl::Error { message })) {
                                return;
                            }
                            continue;
                        }
                    },
                    Message::Close(_) => return,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                if agent_write.write_all(&frame).await.is_err() {
                    return;
                }
            }
        }
    };

    // A peer that vanished without a word (a laptop asleep) is noticed and let go.
    let liveness = {
        let outbox = &outbox;
        let heard = heard.clone();
        async move {
            loop {
                tokio::time::sleep(PING_EVERY).await;
                let last = *heard.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() > SILENT_LIMIT {
                    outbox.send(close(GOING_AWAY, "the client stopped answering"));
                    return;
                }
                if !outbox.send(Message::Ping(Vec::new().into())) {
                    return;
                }
            }
        }
    };

    let key_check = {
        let outbox = &outbox;
        let state = state.clone();
        async move {
            let Some(key_hash) = key_hash else {
                return std::future::pending().await;
            };
            loop {
                tokio::time::sleep(KEY_CHECK).await;
                if !super::auth::key_still_names(&state, &key_hash, &tenant).await {
                    outbox.send(close(POLICY, "the API key was revoked"));
                    return;
                }
            }
        }
    };

    let shutdown = {
        let outbox = &outbox;
        let signal = state.service.shutdown_signal();
        async move {
            signal.await;
            outbox.send(close(
                GOING_AWAY,
                "the server is shutting down; reattach shortly",
            ));
        }
    };

    let work = async {
        tokio::select! {
            _ = from_agent => {}
            _ = from_client => {}
            _ = liveness => {}
            _ = key_check => {}
            _ = shutdown => {}
        }
    };
    tokio::pin!(writer);
    tokio::select! {
        _ = &mut writer => return,
        _ = work => {}
    }
    // Whatever ended first queued its close; the writer delivers what is queued, then it.
    drop(outbox);
    let _ = tokio::time::timeout(FAREWELL, writer).await;
}

pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id)?;
    let terminals: Vec<TerminalInfo> = state.service.terminals(&tenant, &id).await?;
    Ok(Json(serde_json::json!({ "terminals": terminals })))
}

pub async fn end(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((id, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    state.service.end_terminal(&tenant, &id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn recording(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let file = state
        .service
        .terminal_recording(&tenant, &id, &name)
        .await?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok(([(header::CONTENT_TYPE, "application/x-asciicast")], body).into_response())
}
