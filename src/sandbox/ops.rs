//! Operations on a sandbox's agent — exec, background processes, files, archives. Each
//! holds a share of the concurrency budget and marks the sandbox busy for as long as it
//! runs (streamed answers included); answers are passed through as streams, bounded in
//! bytes and idle time, never buffered whole; a failure says what happened to the sandbox.

use super::activity::BusyGuard;
use super::budget::Permit;
use super::reader::ReaderUse;
use super::{Access, SandboxError, SandboxService};
use crate::agent::{bytes_body, empty_body, query_string, AgentBody, AgentClient, BoundedBody};
use crate::domain::{Sandbox, SandboxId, SandboxState, TenantId};
use berth_runtime::wire::{
    BackgroundStarted, EditRequest, ExecRequest, GlobRequest, GrepRequest, KillRequest,
    EXEC_DURATION_HEADER, EXEC_TIMED_OUT_HEADER, HEADER_UPLOAD_LIMIT,
};
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Method, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Time allowed beyond an exec's own timeout (start-up, kill, reply).
const EXEC_GRACE: Duration = Duration::from_secs(15);
/// Deadline for small agent calls (and for the head of a streamed answer).
const SHORT: Duration = Duration::from_secs(60);
/// A transfer may pause this long between chunks.
const TRANSFER_IDLE: Duration = Duration::from_secs(120);
/// The longest an upload may take in all.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(3600);
/// Largest answer of list, glob, grep, edit and the process list.
const MAX_LISTING_BYTES: u64 = 64 * 1024 * 1024;
/// Deepest listing.
pub const MAX_LIST_DEPTH: usize = 64;
/// Most results one glob or grep may ask for.
pub const MAX_SEARCH_RESULTS: usize = 100_000;

fn check_max_results(max: Option<usize>) -> Result<(), SandboxError> {
    match max {
        Some(n) if n > MAX_SEARCH_RESULTS => Err(SandboxError::Invalid(format!(
            "`max_results` must be at most {MAX_SEARCH_RESULTS}"
        ))),
        _ => Ok(()),
    }
}

/// An agent's answer on its way to the client: status, the headers worth passing on, and
/// the body, which holds the request's budget and busy mark until it is done.
pub struct AgentReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BoundedBody,
}

/// How an exec was answered.
pub enum ExecReply {
    /// A background process started.
    Started(BackgroundStarted),
    /// The result (JSON), with how it ended read from the agent's headers.
    Finished {
        reply: Box<AgentReply>,
        timed_out: bool,
        duration_ms: u64,
    },
}

/// What an agent request holds while it runs.
struct Hold {
    _permit: Permit,
    _busy: Option<BusyGuard>,
    _reader: Option<ReaderUse>,
}

pub(super) struct Call {
    sandbox: Sandbox,
    agent: AgentClient,
    hold: Hold,
}

impl Call {
    /// The sandbox as it was when the call began.
    pub(super) fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
}

/// One request to a sandbox's agent.
struct AgentRequest<'a> {
    method: Method,
    uri: &'a str,
    headers: Vec<(HeaderName, String)>,
    body: AgentBody,
    /// Bounds connecting and receiving the answer's head.
    deadline: Duration,
}

impl<'a> AgentRequest<'a> {
    fn new(method: Method, uri: &'a str) -> Self {
        AgentRequest {
            method,
            uri,
            headers: Vec::new(),
            body: empty_body(),
            deadline: SHORT,
        }
    }

    fn json(mut self, body: Vec<u8>) -> Self {
        self.headers
            .push((header::CONTENT_TYPE, "application/json".to_string()));
        self.body = bytes_body(body);
        self
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((HeaderName::from_static(name), value));
        self
    }

    fn body(mut self, body: AgentBody) -> Self {
        self.body = body;
        self
    }

    fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
}

/// An exec request after checking, with its deadline and reply bound.
struct CheckedExec {
    body: Vec<u8>,
    deadline: Duration,
    max_reply: u64,
}

/// Largest JSON answer an exec with this cap can legitimately produce: both streams,
/// escaped (worst case 6 bytes a byte) and base64'd, plus slack.
fn reply_bound(cap: u64) -> u64 {
    cap.saturating_mul(2 * (6 + 2)).saturating_add(64 * 1024)
}

impl SandboxService {
    /// Checks an exec request against the configured ceilings and fills in defaults.
    fn check_exec(&self, mut req: ExecRequest) -> Result<CheckedExec, SandboxError> {
        let config = &self.config;
        req.argv().map_err(SandboxError::Invalid)?;
        let timeout_s = req.timeout_s.unwrap_or(config.defaults.exec_timeout_s);
        let max_timeout = config.limits.max_exec_timeout_s;
        if !(timeout_s.is_finite() && timeout_s > 0.0 && timeout_s <= max_timeout) {
            return Err(SandboxError::Invalid(format!(
                "`timeout_s` must be greater than 0 and at most {max_timeout}"
            )));
        }
        let cap = req
            .max_output_bytes
            .unwrap_or(config.defaults.output_cap_bytes);
        if cap > config.limits.max_output_cap_bytes {
            return Err(SandboxError::Invalid(format!(
                "`max_output_bytes` must be at most {}",
                config.limits.max_output_cap_bytes
            )));
        }
        if let Some(encoding) = &req.encoding {
            if encoding != "base64" && encoding != "utf-8" {
                return Err(SandboxError::Invalid(
                    "`encoding` must be \"base64\" or \"utf-8\"".into(),
                ));
            }
        }
        if !req.background {
            req.timeout_s = Some(timeout_s);
        }
        req.max_output_bytes = Some(cap);
        let body = serde_json::to_vec(&req).map_err(|e| SandboxError::Invalid(e.to_string()))?;
        Ok(CheckedExec {
            body,
            deadline: Duration::from_secs_f64(timeout_s) + EXEC_GRACE,
            max_reply: reply_bound(cap),
        })
    }

    /// Takes a place in the budget, then the sandbox's agent (resuming it or starting a
    /// read-only helper as `access` allows).
    pub(super) async fn call(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        access: Access,
    ) -> Result<Call, SandboxError> {
        let permit = self
            .budget
            .try_acquire(tenant, id)
            .map_err(|e| SandboxError::Busy(e.to_string()))?;
        let (sandbox, agent, reader) = self.agent_for(tenant, id, access).await?;
        let busy = (sandbox.state == SandboxState::Running).then(|| self.activity.begin(id));
        Ok(Call {
            sandbox,
            agent,
            hold: Hold {
                _permit: permit,
                _busy: busy,
                _reader: reader,
            },
        })
    }

    /// Sends one request and passes the answer on as a bounded stream: at most
    /// `max_reply` bytes, no pause longer than `idle`.
    async fn relay(
        &self,
        call: Call,
        req: AgentRequest<'_>,
        max_reply: u64,
        idle: Duration,
    ) -> Result<AgentReply, SandboxError> {
        let sent = call
            .agent
            .send(req.method, req.uri, &req.headers, req.body, req.deadline)
            .await;
        match sent {
            Ok(response) => Ok(reply(response, max_reply, idle, call.hold)),
            Err(e) => Err(self.explain_failure(&call.sandbox, e).await),
        }
    }

    /// Runs an exec whose (small, or bounded by `max_bytes`) JSON answer is read whole.
    pub(super) async fn exec_json<T: serde::de::DeserializeOwned>(
        &self,
        call: &Call,
        body: Vec<u8>,
        deadline: Duration,
        max_bytes: usize,
    ) -> Result<T, SandboxError> {
        match call
            .agent
            .json(Method::POST, "/exec", Some(body), deadline, max_bytes)
            .await
        {
            Ok(answer) => Ok(answer),
            Err(e) => Err(self.explain_failure(&call.sandbox, e).await),
        }
    }

    /// Starts an exec whose output streams as NDJSON events (`ExecEvent` lines), for the
    /// service's own use: at most `max_reply` bytes; the caller bounds the time. Dropping
    /// the body kills the exec's whole tree.
    pub(super) async fn exec_events(
        &self,
        call: Call,
        body: Vec<u8>,
        max_reply: u64,
        idle: Duration,
    ) -> Result<BoundedBody, SandboxError> {
        let reply = self
            .relay(
                call,
                AgentRequest::new(Method::POST, "/exec/stream").json(body),
                max_reply,
                idle,
            )
            .await?;
        Ok(reply.body)
    }

    /// Sends one request whose answer has no body worth passing on (204s).
    async fn command(&self, call: Call, req: AgentRequest<'_>) -> Result<(), SandboxError> {
        match call
            .agent
            .no_content(req.method, req.uri, &req.headers, req.body, req.deadline)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explain_failure(&call.sandbox, e).await),
        }
    }

    pub async fn exec(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        req: ExecRequest,
    ) -> Result<ExecReply, SandboxError> {
        let background = req.background;
        let checked = self.check_exec(req)?;
        let call = self.call(tenant, id, Access::Mutating).await?;
        if background {
            let started = self.exec_json(&call, checked.body, SHORT, 4096).await?;
            return Ok(ExecReply::Started(started));
        }
        let reply = self
            .relay(
                call,
                AgentRequest::new(Method::POST, "/exec")
                    .json(checked.body)
                    .deadline(checked.deadline),
                checked.max_reply,
                TRANSFER_IDLE,
            )
            .await?;
        let header = |name: &str| reply.headers.get(name).and_then(|v| v.to_str().ok());
        let timed_out = header(EXEC_TIMED_OUT_HEADER) == Some("true");
        let duration_ms = header(EXEC_DURATION_HEADER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(ExecReply::Finished {
            reply: Box::new(reply),
            timed_out,
            duration_ms,
        })
    }

    /// An exec whose output streams as NDJSON; a client that goes away kills it.
    pub async fn exec_stream(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        req: ExecRequest,
    ) -> Result<AgentReply, SandboxError> {
        if req.background {
            return Err(SandboxError::Invalid(
                "`background` is not supported on /exec/stream; use /exec".into(),
            ));
        }
        let checked = self.check_exec(req)?;
        let call = self.call(tenant, id, Access::Mutating).await?;
        self.relay(
            call,
            AgentRequest::new(Method::POST, "/exec/stream").json(checked.body),
            checked.max_reply,
            checked.deadline,
        )
        .await
    }

    pub async fn processes(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
    ) -> Result<AgentReply, SandboxError> {
        let call = self.call(tenant, id, Access::ReadOnly).await?;
        self.relay(
            call,
            AgentRequest::new(Method::GET, "/processes"),
            MAX_LISTING_BYTES,
            SHORT,
        )
        .await
    }

    pub async fn process_output(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        pid: u32,
        follow: bool,
    ) -> Result<AgentReply, SandboxError> {
        let call = self.call(tenant, id, Access::ReadOnly).await?;
        // A followed process may be quiet for long; the sandbox lifetime bounds it.
        let idle = Duration::from_secs(call.sandbox.limits.timeout_s.max(60));
        let uri = format!("/processes/{pid}/output?follow={follow}");
        self.relay(call, AgentRequest::new(Method::GET, &uri), u64::MAX, idle)
            .await
    }

    pub async fn kill_process(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        pid: u32,
        request: KillRequest,
    ) -> Result<(), SandboxError> {
        let call = self.call(tenant, id, Access::Mutating).await?;
        let json =
            serde_json::to_vec(&request).map_err(|e| SandboxError::Invalid(e.to_string()))?;
        self.command(
            call,
            AgentRequest::new(Method::POST, &format!("/processes/{pid}/kill")).json(json),
        )
        .await
    }

    /// A file's bytes (or the part a `Range` names).
    pub async fn read_file(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        path: &str,
        range: Option<String>,
    ) -> Result<AgentReply, SandboxError> {
        let call = self.call(tenant, id, Access::ReadOnly).await?;
        let headers: Vec<_> = range.into_iter().map(|r| (header::RANGE, r)).collect();
        let uri = format!("/files?{}", query_string(&[("path", path)]));
        self.relay(
            call,
            AgentRequest {
                headers,
                ..AgentRequest::new(Method::GET, &uri)
            },
            u64::MAX,
            TRANSFER_IDLE,
        )
        .await
    }

    /// Writes a file from an upload of at most `max_upload_bytes`.
    pub async fn write_file(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        path: &str,
        mode: Option<&str>,
        body: AgentBody,
    ) -> Result<(), SandboxError> {
        let mut pairs = vec![("path", path)];
        if let Some(mode) = mode {
            pairs.push(("mode", mode));
        }
        let uri = format!("/files?{}", query_string(&pairs));
        self.upload(tenant, id, &uri, body, "nothing was written")
            .await
    }

    pub async fn delete_file(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        path: &str,
        recursive: bool,
    ) -> Result<(), SandboxError> {
        let recursive = if recursive { "true" } else { "false" };
        let uri = format!(
            "/files?{}",
            query_string(&[("path", path), ("recursive", recursive)])
        );
        let call = self.call(tenant, id, Access::Mutating).await?;
        self.command(call, AgentRequest::new(Method::DELETE, &uri))
            .await
    }

    pub async fn list_files(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        path: &str,
        depth: usize,
    ) -> Result<AgentReply, SandboxError> {
        if depth == 0 || depth > MAX_LIST_DEPTH {
            return Err(SandboxError::Invalid(format!(
                "`depth` must be between 1 and {MAX_LIST_DEPTH}"
            )));
        }
        let uri = format!(
            "/files/list?{}",
            query_string(&[("path", path), ("depth", &depth.to_string())])
        );
        let call = self.call(tenant, id, Access::ReadOnly).await?;
        self.relay(
            call,
            AgentRequest::new(Method::GET, &uri),
            MAX_LISTING_BYTES,
            SHORT,
        )
        .await
    }

    /// One path as it is (a symlink is described, not followed).
    pub async fn stat_file(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        path: &str,
    ) -> Result<AgentReply, SandboxError> {
        let uri = format!("/files/stat?{}", query_string(&[("path", path)]));
        let call = self.call(tenant, id, Access::ReadOnly).await?;
        self.relay(call, AgentRequest::new(Method::GET, &uri), 64 * 1024, SHORT)
            .await
    }

    async fn json_route(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        access: Access,
        uri: &str,
        request: &impl serde::Serialize,
    ) -> Result<AgentReply, SandboxError> {
        let body = serde_json::to_vec(request).map_err(|e| SandboxError::Invalid(e.to_string()))?;
        let call = self.call(tenant, id, access).await?;
        self.relay(
            call,
            AgentRequest::new(Method::POST, uri).json(body),
            MAX_LISTING_BYTES,
            SHORT,
        )
        .await
    }

    pub async fn edit_file(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        req: &EditRequest,
    ) -> Result<AgentReply, SandboxError> {
        if req.old.is_empty() {
            return Err(SandboxError::Invalid("`old` must not be empty".into()));
        }
        self.json_route(tenant, id, Access::Mutating, "/files/edit", req)
            .await
    }

    pub async fn glob(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        req: &GlobRequest,
    ) -> Result<AgentReply, SandboxError> {
        check_max_results(req.max_results)?;
        self.json_route(tenant, id, Access::ReadOnly, "/files/glob", req)
            .await
    }

    pub async fn grep(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        req: &GrepRequest,
    ) -> Result<AgentReply, SandboxError> {
        check_max_results(req.max_results)?;
        self.json_route(tenant, id, Access::ReadOnly, "/files/grep", req)
            .await
    }

    /// A tar of `path` (a directory's content, or one file), streamed.
    pub async fn get_archive(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        path: &str,
    ) -> Result<AgentReply, SandboxError> {
        let uri = format!("/archive?{}", query_string(&[("path", path)]));
        let call = self.call(tenant, id, Access::ReadOnly).await?;
        self.relay(
            call,
            AgentRequest::new(Method::GET, &uri),
            u64::MAX,
            TRANSFER_IDLE,
        )
        .await
    }

    /// Extracts a tar (plain or gzip) at `path`; all or nothing.
    pub async fn put_archive(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        path: &str,
        body: AgentBody,
    ) -> Result<(), SandboxError> {
        let uri = format!("/archive?{}", query_string(&[("path", path)]));
        self.upload(tenant, id, &uri, body, "nothing was extracted")
            .await
    }

    /// Streams an upload to the agent, counting bytes; past the limit the stream ends
    /// there, the agent (told the limit) discards what it staged and answers, and the
    /// answer is 413 only then, so nothing staged is left when the caller hears it.
    async fn upload(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        uri: &str,
        body: AgentBody,
        nothing_done: &str,
    ) -> Result<(), SandboxError> {
        let limit = self.config.limits.max_upload_bytes;
        let call = self.call(tenant, id, Access::Mutating).await?;
        let over = Arc::new(AtomicBool::new(false));
        let result = self
            .command(
                call,
                AgentRequest::new(Method::PUT, uri)
                    .header(HEADER_UPLOAD_LIMIT, limit.to_string())
                    .body(counted(body, limit, over.clone()))
                    .deadline(UPLOAD_DEADLINE),
            )
            .await;
        if over.load(Ordering::SeqCst) {
            return Err(SandboxError::TooLarge(format!(
                "upload larger than the limit of {limit} bytes; {nothing_done}"
            )));
        }
        result
    }

    /// Turns an agent failure into what happened to the sandbox: stopped by berth while
    /// the request ran (waiting for that stop to finish), gone on its own, or neither.
    pub(super) async fn explain_failure(
        &self,
        sandbox: &Sandbox,
        err: crate::agent::AgentError,
    ) -> SandboxError {
        use crate::agent::AgentError as A;
        if !matches!(err, A::Unreachable(_) | A::Protocol(_))
            || sandbox.state != SandboxState::Running
        {
            return SandboxError::Agent(err);
        }
        // A stop in progress holds the lifecycle lock until its record is written.
        drop(self.lock_for(&sandbox.id).lock().await);
        if let Ok(Some(now)) = self.store.get_sandbox(&sandbox.id).await {
            if now.state != SandboxState::Running {
                return SandboxError::Stopped {
                    id: sandbox.id.to_string(),
                    reason: now.reason.unwrap_or_else(|| now.state.to_string()),
                };
            }
        }
        self.on_agent_failure(sandbox, err).await
    }
}

/// Headers of an agent answer that a client may see.
const PASSED_HEADERS: [&str; 6] = [
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    EXEC_TIMED_OUT_HEADER,
    EXEC_DURATION_HEADER,
];

fn reply(
    response: hyper::Response<Incoming>,
    max_reply: u64,
    idle: Duration,
    hold: Hold,
) -> AgentReply {
    let status = response.status();
    let mut headers = HeaderMap::new();
    for name in PASSED_HEADERS {
        if let Some(value) = response.headers().get(name) {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    let body = BoundedBody::new(response.into_body(), max_reply, idle).holding(hold);
    AgentReply {
        status,
        headers,
        body,
    }
}

/// Counts an upload's bytes; past `limit` the stream fails and `over` is set.
fn counted(body: AgentBody, limit: u64, over: Arc<AtomicBool>) -> AgentBody {
    let mut seen: u64 = 0;
    let stream = futures_util::StreamExt::take_while(body.into_data_stream(), move |chunk| {
        // The chunk that crosses the limit still goes, so the agent sees it crossed.
        let more = !over.load(Ordering::SeqCst);
        if let Ok(chunk) = chunk {
            seen += chunk.len() as u64;
            if seen > limit {
                over.store(true, Ordering::SeqCst);
            }
        }
        std::future::ready(more)
    })
    .map_ok(Frame::data);
    StreamBody::new(stream).boxed_unsync()
}
