//! berth: a self-hosted sandbox runtime. One Docker container per session on its own
//! named volume, with limits, and exec, file, terminal and test APIs.

pub mod agent;
pub mod api;
pub mod archive;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod crash;
pub mod disk;
pub mod docker;
pub mod domain;
pub mod firewall;
pub mod images;
pub mod sandbox;
pub mod startup;
pub mod store;
pub mod ui;

pub use berth_runtime::wire;
