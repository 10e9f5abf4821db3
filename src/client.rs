//! The Rust client of berth's HTTP API, used by the CLI and the integration tests.

use berth_runtime::wire::{
    EditRequest, EditResult, ExecEvent, ExecRequest, ExecResult, FileEntry, FileList, GlobRequest,
    GlobResult, GrepRequest, GrepResult,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the berth server: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{status} {code}: {message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A sandbox as the API shows it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SandboxInfo {
    pub id: String,
    pub state: String,
    pub image: String,
    pub volume: String,
    pub workdir: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub limits: Value,
    pub network: String,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub expires_at: Option<String>,
    pub stopped_at: Option<String>,
    pub last_activity_at: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub usage: Option<Value>,
    /// The cluster node that holds it.
    #[serde(default)]
    pub node: Option<String>,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    pub fn new(base: impl Into<String>, key: Option<String>) -> Self {
        Client {
            http: reqwest::Client::new(),
            base: base.into().trim_end_matches('/').to_string(),
            key,
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The API key this client sends, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// A request to `path` (starting with `/`) with the API key attached.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{}", self.base, path));
        match &self.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    async fn checked(response: Response) -> Result<Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        let message = body["error"]["message"].as_str().unwrap_or("").to_string();
        Err(ClientError::Api {
            status,
            code,
            message,
        })
    }

    async fn json<T: DeserializeOwned>(&self, builder: RequestBuilder) -> Result<T, ClientError> {
        let response = Self::checked(builder.send().await?).await?;
        let bytes = response.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn empty(&self, builder: RequestBuilder) -> Result<(), ClientError> {
        Self::checked(builder.send().await?).await.map(|_| ())
    }

    pub async fn create_sandbox(&self, body: &Value) -> Result<SandboxInfo, ClientError> {
        self.json(self.request(Method::POST, "/v1/sandboxes").json(body))
            .await
    }

    pub async fn get_sandbox(&self, id: &str) -> Result<SandboxInfo, ClientError> {
        self.json(self.request(Method::GET, &format!("/v1/sandboxes/{id}")))
            .await
    }

    /// `query` like `state=running&label=session=abc`.
    pub async fn list_sandboxes(&self, query: &str) -> Result<Vec<SandboxInfo>, ClientError> {
        #[derive(Deserialize)]
        struct List {
            sandboxes: Vec<SandboxInfo>,
        }
        let path = if query.is_empty() {
            "/v1/sandboxes".to_string()
        } else {
            format!("/v1/sandboxes?{query}")
        };
        let list: List = self.json(self.request(Method::GET, &path)).await?;
        Ok(list.sandboxes)
    }

    pub async fn stop(&self, id: &str) -> Result<SandboxInfo, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/sandboxes/{id}/stop")))
            .await
    }

    pub async fn resume(&self, id: &str) -> Result<SandboxInfo, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/sandboxes/{id}/resume")))
            .await
    }

    pub async fn delete(&self, id: &str, keep_volume: bool) -> Result<SandboxInfo, ClientError> {
        let path = format!("/v1/sandboxes/{id}?keep_volume={keep_volume}");
        self.json(self.request(Method::DELETE, &path)).await
    }

    pub async fn patch(&self, id: &str, body: &Value) -> Result<SandboxInfo, ClientError> {
        self.json(
            self.request(Method::PATCH, &format!("/v1/sandboxes/{id}"))
                .json(body),
        )
        .await
    }

    pub async fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecResult, ClientError> {
        self.json(
            self.request(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(request),
        )
        .await
    }

    /// Runs `sh -c command` with default limits.
    pub async fn sh(&self, id: &str, command: &str) -> Result<ExecResult, ClientError> {
        self.exec(
            id,
            &ExecRequest {
                command: Some(command.into()),
                ..Default::default()
            },
        )
        .await
    }

    /// Streams exec events as they come.
    pub async fn exec_stream(
        &self,
        id: &str,
        request: &ExecRequest,
    ) -> Result<impl Stream<Item = Result<ExecEvent, ClientError>>, ClientError> {
        let builder = self
            .request(Method::POST, &format!("/v1/sandboxes/{id}/exec/stream"))
            .json(request);
        let response = Self::checked(builder.send().await?).await?;
        Ok(ndjson_events(response.bytes_stream()))
    }

    pub async fn read_file(&self, id: &str, path: &str) -> Result<Bytes, ClientError> {
        let builder = self
            .request(Method::GET, &format!("/v1/sandboxes/{id}/files"))
            .query(&[("path", path)]);
        Ok(Self::checked(builder.send().await?).await?.bytes().await?)
    }

    pub async fn write_file(
        &self,
        id: &str,
        path: &str,
        content: impl Into<reqwest::Body>,
    ) -> Result<(), ClientError> {
        let builder = self
            .request(Method::PUT, &format!("/v1/sandboxes/{id}/files"))
            .query(&[("path", path)])
            .body(content);
        self.empty(builder).await
    }

    pub async fn delete_file(
        &self,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ClientError> {
        let recursive = recursive.to_string();
        let builder = self
            .request(Method::DELETE, &format!("/v1/sandboxes/{id}/files"))
            .query(&[("path", path), ("recursive", recursive.as_str())]);
        self.empty(builder).await
    }

    pub async fn list_files(
        &self,
        id: &str,
        path: &str,
        depth: usize,
    ) -> Result<FileList, ClientError> {
        let depth = depth.to_string();
        let builder = self
            .request(Method::GET, &format!("/v1/sandboxes/{id}/files/list"))
            .query(&[("path", path), ("depth", depth.as_str())]);
        self.json(builder).await
    }

    /// One path as it is, or `None` when nothing is there.
    pub async fn stat(&self, id: &str, path: &str) -> Result<Option<FileEntry>, ClientError> {
        let builder = self
            .request(Method::GET, &format!("/v1/sandboxes/{id}/files/stat"))
            .query(&[("path", path)]);
        match self.json(builder).await {
            Ok(entry) => Ok(Some(entry)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn edit(&self, id: &str, request: &EditRequest) -> Result<EditResult, ClientError> {
        self.json(
            self.request(Method::POST, &format!("/v1/sandboxes/{id}/files/edit"))
                .json(request),
        )
        .await
    }

    pub async fn glob(&self, id: &str, request: &GlobRequest) -> Result<GlobResult, ClientError> {
        self.json(
            self.request(Method::POST, &format!("/v1/sandboxes/{id}/files/glob"))
                .json(request),
        )
        .await
    }

    pub async fn grep(&self, id: &str, request: &GrepRequest) -> Result<GrepResult, ClientError> {
        self.json(
            self.request(Method::POST, &format!("/v1/sandboxes/{id}/files/grep"))
                .json(request),
        )
        .await
    }

    pub async fn get_archive(&self, id: &str, path: &str) -> Result<Bytes, ClientError> {
        let builder = self
            .request(Method::GET, &format!("/v1/sandboxes/{id}/archive"))
            .query(&[("path", path)]);
        Ok(Self::checked(builder.send().await?).await?.bytes().await?)
    }

    pub async fn put_archive(
        &self,
        id: &str,
        path: &str,
        tar: impl Into<reqwest::Body>,
    ) -> Result<(), ClientError> {
        let builder = self
            .request(Method::PUT, &format!("/v1/sandboxes/{id}/archive"))
            .query(&[("path", path)])
            .body(tar);
        self.empty(builder).await
    }
}

/// Splits an NDJSON byte stream into exec events.
fn ndjson_events(
    bytes: impl Stream<Item = reqwest::Result<Bytes>> + Unpin,
) -> impl Stream<Item = Result<ExecEvent, ClientError>> {
    futures_util::stream::unfold(
        (bytes, Vec::<u8>::new(), false),
        |(mut bytes, mut buf, done)| async move {
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let event = serde_json::from_slice::<ExecEvent>(&line)
                        .map_err(|e| ClientError::Decode(e.to_string()));
                    return Some((event, (bytes, buf, done)));
                }
                if done {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(ClientError::Http(e)), (bytes, buf, true))),
                    None => {
                        if buf.is_empty() {
                            return None;
                        }
                        buf.push(b'\n');
                        return Some((
                            serde_json::from_slice::<ExecEvent>(&buf)
                                .map_err(|e| ClientError::Decode(e.to_string())),
                            (bytes, Vec::new(), true),
                        ));
                    }
                }
            }
        },
    )
}
