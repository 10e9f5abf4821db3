//! berth's in-sandbox side: the wire types the supervisor and CLI share with the agent,
//! and (feature `agent`) `berth-agent` itself, PID 1 of every sandbox container.

pub mod harness;
pub mod term;
pub mod wire;

#[cfg(feature = "agent")]
pub mod agent;
