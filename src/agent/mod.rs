//! Client for the in-sandbox agent: HTTP/1.1 over the unix socket in the sandbox's host
//! directory. The agent runs inside the sandbox, so it is untrusted: the socket is opened
//! without following anything the sandbox planted, and every answer is bounded in size
//! and time.

mod bounded;

pub use bounded::BoundedBody;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::UnixStream;

/// Request bodies sent to the agent.
pub type AgentBody = UnsyncBoxBody<Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the sandbox agent is unreachable: {0}")]
    Unreachable(String),
    #[error("the sandbox agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the sandbox agent sent a malformed answer: {0}")]
    Protocol(String),
    #[error("the sandbox agent's answer exceeded {0} bytes")]
    TooLarge(usize),
    /// A 4xx/5xx answer of the agent, bounded and passed on.
    #[error("{message}")]
    Rejected {
        status: StatusCode,
        code: String,
        message: String,
        /// `Content-Range` of a 416 (`bytes */SIZE`), checked to be that shape.
        content_range: Option<String>,
    },
}

pub fn empty_body() -> AgentBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn bytes_body(bytes: impl Into<Bytes>) -> AgentBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
}

/// Largest error body read from the agent.
const MAX_ERROR_BYTES: usize = 16 * 1024;
/// Longest error message passed on to a client.
const MAX_ERROR_MESSAGE: usize = 2_000;

impl AgentClient {
    pub fn new(socket_dir: PathBuf) -> Self {
        AgentClient {
            socket: socket_dir.join(berth_runtime::wire::AGENT_SOCKET_NAME),
        }
    }

    /// Opens the socket with `O_PATH|O_NOFOLLOW` and connects through `/proc/self/fd`, so
    /// a symlink the sandbox planted in its socket dir can never redirect the supervisor.
    async fn connect(&self) -> Result<UnixStream, AgentError> {
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.socket)
            .map_err(|e| AgentError::Unreachable(format!("{}: {e}", self.socket.display())))?;
        let kind = handle
            .metadata()
            .map_err(|e| AgentError::Unreachable(e.to_string()))?
            .file_type();
        if !kind.is_socket() {
            return Err(AgentError::Unreachable(format!(
                "{} is not a socket",
                self.socket.display()
            )));
        }
        let via_fd = format!("/proc/self/fd/{}", handle.as_raw_fd());
        let stream = UnixStream::connect(&via_fd)
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        drop(handle);
        Ok(stream)
    }

    /// Sends one request; `deadline` bounds connecting and receiving the response head.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(hyper::header::HeaderName, String)],
        body: AgentBody,
        deadline: Duration,
    ) -> Result<Response<Incoming>, AgentError> {
        let exchange = async {
            let stream = self.connect().await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| AgentError::Unreachable(e.to_string()))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut request = Request::builder()
                .method(method)
                .uri(path_and_query)
                .header("host", "agent");
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let request = request
                .body(body)
                .map_err(|e| AgentError::Protocol(e.to_string()))?;
            sender
                .send_request(request)
                .await
                .map_err(|e| AgentError::Unreachable(e.to_string()))
        };
        let response = tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| AgentError::Timeout(deadline))??;
        if response.status().is_client_error() || response.status().is_server_error() {
            return Err(rejection(response).await);
        }
        Ok(response)
    }

    /// Opens an upgraded connection (`GET path_and_query` with `Upgrade: protocol`): a
    /// byte stream both ways once the agent answers 101. A refusal comes back as
    /// [`AgentError::Rejected`].
    pub async fn upgrade(
        &self,
        path_and_query: &str,
        protocol: &str,
        deadline: Duration,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, AgentError> {
        let exchange = async {
            let stream = self.connect().await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| AgentError::Unreachable(e.to_string()))?;
            tokio::spawn(async move {
                let _ = connection.with_upgrades().await;
            });
            let request = Request::builder()
                .method(Method::GET)
                .uri(path_and_query)
                .header("host", "agent")
                .header(hyper::header::CONNECTION, "upgrade")
                .header(hyper::header::UPGRADE, protocol)
                .body(empty_body())
                .map_err(|e| AgentError::Protocol(e.to_string()))?;
            sender
                .send_request(request)
                .await
                .map_err(|e| AgentError::Unreachable(e.to_string()))
        };
        let response = tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| AgentError::Timeout(deadline))??;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            if response.status().is_client_error() || response.status().is_server_error() {
                return Err(rejection(response).await);
            }
            return Err(AgentError::Protocol(format!(
                "expected 101 Switching Protocols, got {}",
                response.status()
            )));
        }
        let upgraded = tokio::time::timeout(deadline, hyper::upgrade::on(response))
            .await
            .map_err(|_| AgentError::Timeout(deadline))?
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        Ok(TokioIo::new(upgraded))
    }

    /// Sends JSON (or nothing) and reads a JSON answer of at most `max_bytes` within `deadline`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        deadline: Duration,
        max_bytes: usize,
    ) -> Result<T, AgentError> {
        let work = async {
            let (headers, body) = match body {
                Some(json) => (
                    vec![(hyper::header::CONTENT_TYPE, "application/json".to_string())],
                    bytes_body(json),
                ),
                None => (vec![], empty_body()),
            };
            let response = self
                .send(method, path_and_query, &headers, body, deadline)
                .await?;
            let bytes = read_limited(response.into_body(), max_bytes).await?;
            serde_json::from_slice(&bytes).map_err(|e| AgentError::Protocol(e.to_string()))
        };
        tokio::time::timeout(deadline, work)
            .await
            .map_err(|_| AgentError::Timeout(deadline))?
    }

    /// Sends a request whose answer carries no body worth reading (204s).
    pub async fn no_content(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(hyper::header::HeaderName, String)],
        body: AgentBody,
        deadline: Duration,
    ) -> Result<(), AgentError> {
        let response = self
            .send(method, path_and_query, headers, body, deadline)
            .await?;
        read_limited(response.into_body(), MAX_ERROR_BYTES)
            .await
            .map(|_| ())
    }

    /// Waits until the agent answers `/health`, polling the socket until `deadline`.
    pub async fn wait_ready(&self, deadline: Duration) -> Result<(), AgentError> {
        let start = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let attempt: Result<berth_runtime::wire::AgentHealth, _> = self
                .json(Method::GET, "/health", None, Duration::from_secs(2), 4096)
                .await;
            match attempt {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() >= deadline => {
                    return Err(AgentError::Unreachable(format!(
                        "agent not ready after {deadline:?}: {e}"
                    )))
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }
}

/// Reads a body whole, up to `max` bytes.
pub async fn read_limited<B>(body: B, max: usize) -> Result<Bytes, AgentError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(AgentError::TooLarge(max))
        }
        Err(e) => Err(AgentError::Protocol(e.to_string())),
    }
}

/// Turns an agent error answer into [`AgentError::Rejected`], bounded.
async fn rejection(response: Response<Incoming>) -> AgentError {
    let status = response.status();
    let content_range = response
        .headers()
        .get(hyper::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            v.strip_prefix("bytes */").is_some_and(|n| {
                !n.is_empty() && n.len() < 21 && n.bytes().all(|b| b.is_ascii_digit())
            })
        })
        .map(str::to_owned);
    let bytes = match read_limited(response.into_body(), MAX_ERROR_BYTES).await {
        Ok(b) => b,
        Err(e) => return e,
    };
    let parsed: Option<berth_runtime::wire::ErrorBody> = serde_json::from_slice(&bytes).ok();
    let (code, message) = match parsed {
        Some(body) => (body.error.code, body.error.message),
        None => (
            "agent_error".to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ),
    };
    let message: String = message.chars().take(MAX_ERROR_MESSAGE).collect();
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect();
    AgentError::Rejected {
        status,
        code,
        message,
        content_range,
    }
}

/// URL-encodes query pairs for a request to the agent.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}
