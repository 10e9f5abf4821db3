//! The agent's errors and their HTTP form (the same `{"error":{code,message}}` shape as
//! the public API, so the supervisor can pass 4xx answers through after bounding them).

use crate::wire::ErrorBody;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub enum AgentError {
    BadRequest(String),
    NotFound(String),
    /// Allowed to nobody in this sandbox (root without `allow_root`).
    Forbidden(String),
    Conflict(String),
    TooLarge(String),
    Unprocessable(String),
    RangeNotSatisfiable(String),
    /// The program could not be started; reported like a shell would (126/127).
    Spawn {
        exit_code: i32,
        message: String,
    },
    Io(String),
}

impl AgentError {
    /// Maps an I/O error on a user path to the fitting 4xx.
    pub fn from_io(path: &std::path::Path, err: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let shown = path.display();
        match err.kind() {
            NotFound => AgentError::NotFound(format!("{shown}: no such file or directory")),
            PermissionDenied => AgentError::Conflict(format!("{shown}: permission denied")),
            AlreadyExists => AgentError::Conflict(format!("{shown}: already exists")),
            IsADirectory => AgentError::BadRequest(format!("{shown}: is a directory")),
            NotADirectory => {
                AgentError::BadRequest(format!("{shown}: a parent is not a directory"))
            }
            DirectoryNotEmpty => {
                AgentError::Conflict(format!("{shown}: directory not empty (use recursive=true)"))
            }
            InvalidInput | InvalidFilename => AgentError::BadRequest(format!("{shown}: {err}")),
            StorageFull | QuotaExceeded | FileTooLarge => {
                AgentError::TooLarge(format!("{shown}: no space left in the sandbox: {err}"))
            }
            ReadOnlyFilesystem => AgentError::Conflict(format!("{shown}: read-only file system")),
            _ => match err.raw_os_error() {
                Some(libc::ELOOP) => {
                    AgentError::BadRequest(format!("{shown}: too many levels of symbolic links"))
                }
                Some(libc::ENAMETOOLONG) => {
                    AgentError::BadRequest(format!("{shown}: name too long"))
                }
                _ => AgentError::Io(format!("{shown}: {err}")),
            },
        }
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            AgentError::BadRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request", m),
            AgentError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            AgentError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            AgentError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            AgentError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            AgentError::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", m),
            AgentError::RangeNotSatisfiable(m) => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "invalid_range", m)
            }
            // Like a shell: 127 the program is not there, 126 it cannot be run.
            AgentError::Spawn {
                exit_code: 127,
                message,
            } => (StatusCode::NOT_FOUND, "not_found", message),
            AgentError::Spawn { message, .. } => (StatusCode::CONFLICT, "conflict", message),
            AgentError::Io(m) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
        };
        (status, Json(ErrorBody::new(code, message))).into_response()
    }
}
