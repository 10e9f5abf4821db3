//! The agent's HTTP routes: thin handlers that parse, call the module that owns the
//! work, and shape the answer.

use super::error::AgentError;
use super::{archive, exec, files, json_body, process, search, terminal, AgentState};
use crate::wire::{
    AgentHealth, EditRequest, ExecEvent, ExecRequest, ExecResult, GlobRequest, GrepRequest,
    KillRequest, ProcessList, SandboxEnv, EXEC_DURATION_HEADER, EXEC_TIMED_OUT_HEADER,
    HEADER_UPLOAD_LIMIT,
};
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

type Shared = Arc<AgentState>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/env", axum::routing::put(set_env))
        .route("/usage", get(disk_usage))
        .route("/exec", post(exec_buffered))
        .route("/exec/stream", post(exec_stream))
        .route("/processes", get(list_processes))
        .route("/processes/{pid}/output", get(process_output))
        .route("/processes/{pid}/kill", post(kill_process))
        .route("/files", get(read_file).put(write_file).delete(delete_file))
        .route("/files/list", get(list_files))
        .route("/files/stat", get(stat_file))
        .route("/files/edit", post(edit_file))
        .route("/files/glob", post(glob))
        .route("/files/grep", post(grep))
        .route("/archive", get(get_archive).put(put_archive))
        .route("/terminals", get(list_terminals))
        .route("/terminals/{name}", axum::routing::delete(end_terminal))
        .route("/terminals/{name}/attach", get(attach_terminal))
        // The supervisor bounds every request body; the agent sets no second limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

async fn health(State(state): State<Shared>) -> Json<AgentHealth> {
    Json(AgentHealth {
        version: env!("CARGO_PKG_VERSION").into(),
        workdir: state.workdir.display().to_string(),
    })
}

/// What the workdir takes on disk, counted for at most two seconds.
async fn disk_usage(
    State(state): State<Shared>,
) -> Result<Json<crate::wire::DiskUsage>, AgentError> {
    // One walk at a time, its answer reused for a few seconds: polling a sandbox's view
    // costs the sandbox (almost) nothing.
    static LAST: std::sync::OnceLock<
        tokio::sync::Mutex<Option<(std::time::Instant, crate::wire::DiskUsage)>>,
    > = std::sync::OnceLock::new();
    let mut last = LAST.get_or_init(Default::default).lock().await;
    if let Some((at, usage)) = last.as_ref() {
        if at.elapsed() < std::time::Duration::from_secs(5) {
            return Ok(Json(usage.clone()));
        }
    }
    let root = state.workdir.clone();
    let usage = blocking(move || {
        use std::os::unix::fs::MetadataExt;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let (mut bytes, mut files, mut complete) = (0u64, 0u64, true);
        for entry in walkdir::WalkDir::new(&root)
            .follow_links(false)
            .same_file_system(true)
        {
            if files % 1024 == 0 && std::time::Instant::now() > deadline {
                complete = false;
                break;
            }
            let Ok(entry) = entry else { continue };
            if let Ok(meta) = entry.metadata() {
                bytes += meta.blocks() * 512;
                files += 1;
            }
        }
        Ok(crate::wire::DiskUsage {
            bytes,
            files,
            complete,
        })
    })
    .await?;
    *last = Some((std::time::Instant::now(), usage.clone()));
    Ok(Json(usage))
}

async fn set_env(
    State(state): State<Shared>,
    Json(req): Json<SandboxEnv>,
) -> Result<StatusCode, AgentError> {
    if let Some((k, _)) = req.env.iter().find(|(k, v)| !exec::valid_env(k, v)) {
        return Err(AgentError::BadRequest(format!(
            "invalid env var name or value: {k:?}"
        )));
    }
    *state.sandbox_env.write().unwrap_or_else(|p| p.into_inner()) = req.env.into_iter().collect();
    state
        .allow_root
        .store(req.allow_root, std::sync::atomic::Ordering::Relaxed);
    Ok(StatusCode::NO_CONTENT)
}

/// Runs blocking filesystem work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(move || {
        let _user = super::identity::ActingAsUser::enter();
        work()
    })
    .await
    .map_err(|e| AgentError::Io(format!("worker failed: {e}")))?
}

async fn exec_buffered(
    State(state): State<Shared>,
    Json(req): Json<ExecRequest>,
) -> Result<Response, AgentError> {
    let prepared = exec::prepare(&state, &req)?;
    if req.background {
        let pid = process::start_background(&state, prepared)?;
        return Ok(Json(crate::wire::BackgroundStarted { pid }).into_response());
    }
    match exec::start(&state, prepared) {
        Ok(running) => Ok(exec_reply(
            exec::run_buffered(running, req.wants_base64()).await,
        )),
        Err(AgentError::Spawn { exit_code, message }) => Ok(exec_reply(ExecResult {
            exit_code: Some(exit_code),
            stderr_b64: req
                .wants_base64()
                .then(|| base64_encode(message.as_bytes())),
            stdout_b64: req.wants_base64().then(String::new),
            stderr: message,
            ..Default::default()
        })),
        Err(e) => Err(e),
    }
}

/// An exec result: how it ended in headers (for the supervisor's metrics, without reading
/// the body), the result itself serialized as it is sent.
fn exec_reply(result: ExecResult) -> Response {
    let timed_out = if result.timed_out { "true" } else { "false" };
    let duration = header::HeaderValue::from(result.duration_ms);
    let size = result.stdout.len()
        + result.stderr.len()
        + result.stdout_b64.as_ref().map_or(0, String::len)
        + result.stderr_b64.as_ref().map_or(0, String::len);
    let mut response = Response::new(json_body::json(result, size));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        EXEC_TIMED_OUT_HEADER,
        header::HeaderValue::from_static(timed_out),
    );
    h.insert(EXEC_DURATION_HEADER, duration);
    response
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An NDJSON response fed by a channel of events.
fn ndjson(mut rx: mpsc::Receiver<ExecEvent>) -> Response {
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn exec_stream(
    State(state): State<Shared>,
    Json(req): Json<ExecRequest>,
) -> Result<Response, AgentError> {
    if req.background {
        return Err(AgentError::BadRequest(
            "`background` is not supported on /exec/stream".into(),
        ));
    }
    let prepared = exec::prepare(&state, &req)?;
    let (tx, rx) = mpsc::channel(32);
    match exec::start(&state, prepared) {
        Ok(running) => {
            tokio::spawn(exec::run_streaming(running, tx));
        }
        Err(AgentError::Spawn { exit_code, message }) => {
            let _ = tx.try_send(ExecEvent::Stderr { data: message });
            let _ = tx.try_send(ExecEvent::Exit {
                exit_code: Some(exit_code),
                timed_out: false,
                oom_killed: false,
                duration_ms: 0,
                signal: None,
            });
        }
        Err(e) => return Err(e),
    }
    Ok(ndjson(rx))
}

async fn list_processes(State(state): State<Shared>) -> Json<ProcessList> {
    Json(ProcessList {
        processes: process::list(&state),
    })
}

#[derive(Deserialize)]
struct FollowQuery {
    #[serde(default)]
    follow: bool,
}

async fn process_output(
    State(state): State<Shared>,
    UrlPath(pid): UrlPath<u32>,
    Query(q): Query<FollowQuery>,
) -> Result<Response, AgentError> {
    let proc = process::get(&state, pid)?;
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(proc.follow(q.follow, tx));
    Ok(ndjson(rx))
}

async fn kill_process(
    State(state): State<Shared>,
    UrlPath(pid): UrlPath<u32>,
    body: Option<Json<KillRequest>>,
) -> Result<StatusCode, AgentError> {
    let signal = body.and_then(|Json(b)| b.signal);
    process::kill(&state, pid, signal.as_deref())?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct PathQuery {
    path: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    depth: Option<usize>,
}

async fn read_file(
    State(state): State<Shared>,
    Query(q): Query<PathQuery>,
    headers: HeaderMap,
) -> Result<Response, AgentError> {
    let path = state.resolve(&q.path)?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (file, size, range) = blocking(move || {
        let (mut file, size) = files::open_for_read(&path)?;
        let range = range.map(|r| files::parse_range(&r, size)).transpose();
        if let Ok(Some(r)) = range {
            files::seek(&mut file, r.start)?;
        }
        Ok((file, size, range))
    })
    .await?;
    let range = match range {
        Ok(range) => range,
        Err(e) => return Ok(unsatisfiable(e, size)),
    };
    let length = range.map_or(size, |r| r.end_inclusive - r.start + 1);
    let reader = tokio::fs::File::from_std(file).take(length);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        reader,
        64 * 1024,
    ));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().expect("static"),
    );
    h.insert(header::CONTENT_LENGTH, length.into());
    h.insert(header::ACCEPT_RANGES, "bytes".parse().expect("static"));
    if let Some(r) = range {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!("bytes {}-{}/{size}", r.start, r.end_inclusive);
        response
            .headers_mut()
            .insert(header::CONTENT_RANGE, value.parse().expect("ascii"));
    }
    Ok(response)
}

/// A 416 answer naming the file's size (`Content-Range: bytes */N`, RFC 9110 14.4).
fn unsatisfiable(error: AgentError, size: u64) -> Response {
    let mut response = error.into_response();
    if response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        let value = format!("bytes */{size}");
        response
            .headers_mut()
            .insert(header::CONTENT_RANGE, value.parse().expect("ascii"));
    }
    response
}

/// The most bytes an upload may carry, from its [`HEADER_UPLOAD_LIMIT`] (none: no bound).
fn upload_limit(headers: &HeaderMap) -> u64 {
    headers
        .get(HEADER_UPLOAD_LIMIT)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(u64::MAX)
}

/// An upload's body, held to `limit`: past it the stream fails and `over` is set.
fn limited_body(
    limit: u64,
    body: Body,
    over: Arc<std::sync::atomic::AtomicBool>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    let mut seen: u64 = 0;
    body.into_data_stream().map(move |chunk| {
        let bytes = chunk.map_err(std::io::Error::other)?;
        seen = seen.saturating_add(bytes.len() as u64);
        if seen > limit {
            over.store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(std::io::Error::other("upload over the limit"));
        }
        Ok(bytes)
    })
}

fn over_limit(limit: u64) -> AgentError {
    AgentError::TooLarge(format!("upload larger than the limit of {limit} bytes"))
}

async fn write_file(
    State(state): State<Shared>,
    Query(q): Query<PathQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, AgentError> {
    let target = state.resolve(&q.path)?;
    let mode = q.mode.as_deref().map(files::parse_mode).transpose()?;
    let (writer, file) = blocking(move || files::AtomicWrite::begin(target)).await?;
    let mut file = tokio::fs::File::from_std(file);
    let limit = upload_limit(&headers);
    let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = limited_body(limit, body, over.clone());
    let mut stream = std::pin::pin!(stream);
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        let result = match chunk {
            Ok(bytes) => file
                .write_all(&bytes)
                .await
                .map_err(|e| AgentError::from_io(&writer.target, e)),
            Err(_) if over.load(std::sync::atomic::Ordering::SeqCst) => Err(over_limit(limit)),
            Err(e) => Err(AgentError::BadRequest(format!("upload interrupted: {e}"))),
        };
        if let Err(e) = result {
            failure = Some(e);
            break;
        }
    }
    if failure.is_none() {
        if let Err(e) = file.flush().await {
            failure = Some(AgentError::from_io(&writer.target, e));
        }
    }
    drop(file);
    match failure {
        Some(e) => {
            writer.abort();
            Err(e)
        }
        None => {
            blocking(move || writer.commit(mode)).await?;
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

async fn delete_file(
    State(state): State<Shared>,
    Query(q): Query<PathQuery>,
) -> Result<StatusCode, AgentError> {
    let path = state.resolve(&q.path)?;
    let workdir = state.workdir.clone();
    blocking(move || files::delete(&path, &workdir, q.recursive)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stat_file(
    State(state): State<Shared>,
    Query(q): Query<PathQuery>,
) -> Result<Response, AgentError> {
    let path = state.resolve(&q.path)?;
    let entry = blocking(move || files::stat(&path, &q.path)).await?;
    Ok(Json(entry).into_response())
}

async fn list_files(
    State(state): State<Shared>,
    Query(q): Query<PathQuery>,
) -> Result<Response, AgentError> {
    let path = state.resolve(&q.path)?;
    let depth = q.depth.unwrap_or(1).min(64);
    let list = blocking(move || files::list(&path, &q.path, depth)).await?;
    Ok(Json(list).into_response())
}

async fn edit_file(
    State(state): State<Shared>,
    Json(req): Json<EditRequest>,
) -> Result<Response, AgentError> {
    let result = blocking(move || files::edit(&state, &req)).await?;
    Ok(Json(result).into_response())
}

async fn glob(
    State(state): State<Shared>,
    Json(req): Json<GlobRequest>,
) -> Result<Response, AgentError> {
    Ok(Json(blocking(move || search::glob(&state, &req)).await?).into_response())
}

async fn grep(
    State(state): State<Shared>,
    Json(req): Json<GrepRequest>,
) -> Result<Response, AgentError> {
    Ok(Json(blocking(move || search::grep(&state, &req)).await?).into_response())
}

#[derive(Deserialize)]
struct ArchiveQuery {
    #[serde(default = "dot")]
    path: String,
}

fn dot() -> String {
    ".".into()
}

async fn get_archive(
    State(state): State<Shared>,
    Query(q): Query<ArchiveQuery>,
) -> Result<Response, AgentError> {
    let root = state.resolve(&q.path)?;
    let mut rx = archive::create(root)?;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn put_archive(
    State(state): State<Shared>,
    Query(q): Query<ArchiveQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, AgentError> {
    let dest = state.resolve(&q.path)?;
    let limit = upload_limit(&headers);
    let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = Box::pin(limited_body(limit, body, over.clone()));
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    match blocking(move || archive::extract(reader, &dest)).await {
        Err(_) if over.load(std::sync::atomic::Ordering::SeqCst) => Err(over_limit(limit)),
        other => other.map(|_| StatusCode::NO_CONTENT),
    }
}

async fn list_terminals(State(state): State<Shared>) -> Json<Vec<crate::term::TerminalInfo>> {
    Json(state.terminals.list())
}

async fn end_terminal(
    State(state): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, AgentError> {
    state.terminals.kill(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct AttachQuery {
    #[serde(default)]
    cols: Option<u16>,
    #[serde(default)]
    rows: Option<u16>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    incarnation: Option<String>,
    #[serde(default)]
    cmd: Option<String>,
    #[serde(default)]
    ephemeral: bool,
    #[serde(default)]
    recorder: bool,
}

/// Attaches to (or starts) a terminal and upgrades the connection to a stream of
/// terminal frames (`crate::term`). Refusals come before the upgrade, as HTTP errors.
async fn attach_terminal(
    State(state): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<AttachQuery>,
    mut request: axum::extract::Request,
) -> Result<Response, AgentError> {
    let on_upgrade = hyper::upgrade::on(&mut request);
    let subscription = terminal::attach(
        &state,
        &name,
        terminal::AttachSpec {
            cols: q.cols,
            rows: q.rows,
            offset: q.offset,
            incarnation: q.incarnation,
            cmd: q.cmd,
            ephemeral: q.ephemeral,
            recorder: q.recorder,
        },
    )?;
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            serve_terminal(hyper_util::rt::TokioIo::new(upgraded), subscription).await;
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static(crate::term::UPGRADE_PROTOCOL),
    );
    Ok(response)
}

/// Carries one attached client: its subscription out as frames, its frames (input,
/// resizes) in. Ends when either side does; dropping the subscription detaches it.
async fn serve_terminal<S>(stream: S, mut subscription: terminal::Subscription)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use crate::term::{encode_control, header, Frame, FrameReader, TermControl, DATA};
    let (read, mut write) = tokio::io::split(stream);
    let terminal = subscription.terminal.clone();
    let viewer = subscription.viewer;
    let queued = subscription.queued.clone();
    let outgoing = async {
        // Output waiting in the queue leaves as one frame (up to half the largest frame;
        // one more chunk of the PTY's never takes it past that).
        let mut pending: Option<terminal::Out> = None;
        loop {
            let out = match pending.take() {
                Some(out) => out,
                None => match subscription.rx.recv().await {
                    Some(out) => out,
                    None => return,
                },
            };
            match out {
                terminal::Out::Data(first) => {
                    let mut data = first.to_vec();
                    while data.len() < crate::term::MAX_FRAME / 2 {
                        match subscription.rx.try_recv() {
                            Ok(terminal::Out::Data(more)) => data.extend_from_slice(&more),
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let sent = write.write_all(&header(DATA, data.len())).await.is_ok()
                        && write.write_all(&data).await.is_ok();
                    queued.fetch_sub(data.len(), std::sync::atomic::Ordering::Relaxed);
                    if !sent {
                        return;
                    }
                }
                terminal::Out::Control(control) => {
                    let last = matches!(
                        control,
                        TermControl::Exit { .. } | TermControl::Evicted { .. }
                    );
                    if write.write_all(&encode_control(&control)).await.is_err() || last {
                        let _ = write.shutdown().await;
                        return;
                    }
                }
            }
        }
    };
    let incoming = async {
        let mut frames = FrameReader::new(read);
        loop {
            match frames.next().await {
                Ok(Some(Frame::Data(input))) if viewer => {
                    if terminal.write_input(&input).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Frame::Control(TermControl::Resize { cols, rows }))) if viewer => {
                    terminal.resize(cols, rows);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    };
    tokio::select! {
        _ = outgoing => {}
        _ = incoming => {}
    }
}

#[cfg(test)]
mod file_route_tests {
    use super::*;

    #[test]
    fn an_unsatisfiable_range_names_the_file_size() {
        let error = files::parse_range("bytes=500-", 42).unwrap_err();
        let response = unsatisfiable(error, 42);
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(
            response.headers().get(header::CONTENT_RANGE).unwrap(),
            "bytes */42"
        );
    }
}
