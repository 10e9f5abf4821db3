//! Errors of the lifecycle service, each with the context a client needs.

use crate::agent::AgentError;
use crate::docker::DockerError;
use crate::images::ImageError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Quota(String),
    /// The tenant may not do this on this server (403): root, an image off the list.
    #[error("{0}")]
    Forbidden(String),
    /// The request cannot be carried out as asked (422).
    #[error("{0}")]
    Unprocessable(String),
    /// A bug: a lifecycle task failed without an answer.
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// A volume's fixed-size filesystem could not be made or removed (503).
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskError),
    #[error("sandbox failed to start: {0}")]
    StartFailed(String),
    /// The archive store could not be used (503, retry).
    #[error("the archive store failed: {0}")]
    Archive(String),
    /// Redis, which this node needs to reach the other nodes, does not answer (503, retry).
    #[error("redis is unavailable: {0}")]
    ClusterDown(String),
    /// The node holding the sandbox has no heartbeat now, or cannot be reached (503, retry).
    #[error("{0}")]
    NodeUnavailable(String),
    /// The archive store refused berth's credentials (503, not worth retrying).
    #[error("the archive store refused berth's credentials: {0}")]
    ArchiveDenied(String),
    /// An upload past its limit.
    #[error("{0}")]
    TooLarge(String),
    /// A concurrency ceiling was reached; the client should retry shortly.
    #[error("{0}; retry shortly")]
    Busy(String),
    /// The sandbox stopped while the request ran (`reason`: idle, timeout, deleted, ...).
    #[error(
        "sandbox {id} was stopped while the request ran (stopped: {reason}); resume it to continue"
    )]
    Stopped { id: String, reason: String },
}
