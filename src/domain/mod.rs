//! Domain types every layer shares: ids, the sandbox state machine, limits, the sandbox
//! record and the parsed create request. No I/O here.

pub mod evaluation;
mod ids;
pub mod image_ref;
mod request;
mod sandbox;
mod state;

pub use ids::{ApiKey, SandboxId, TenantId, VolumeName};
pub use request::{CreateSandbox, CreateSandboxRequest, LabelFilter, PatchSandbox, RequestError};
pub use sandbox::{Limits, Network, Sandbox, Usage};
pub use state::{SandboxState, TransitionError};
