//! The HTTP API (`/v1`, operations routes, Modal-compatible routes later): axum routes,
//! authentication, request ids, metrics, and the mapping of errors to HTTP.

mod auth;
mod body_budget;
mod compat;
mod error;
mod events;
mod exec;
mod files;
mod json;
mod metrics;
mod nodes;
pub mod openapi;
mod ops;
mod proxy;
mod request_id;
mod sandboxes;
mod snapshots;
mod terminal;
mod ui;
mod views;
mod volumes;

pub use auth::Tenant;
pub use error::ApiError;
pub use metrics::Metrics;

use crate::domain::SandboxId;
use crate::sandbox::SandboxService;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<SandboxService>,
    pub metrics: Arc<Metrics>,
    keys: Arc<auth::KeyCache>,
    pub(crate) bodies: Arc<body_budget::BodyBudget>,
    ui: Arc<crate::ui::Assets>,
    /// Requests for other nodes' sandboxes go through it (kept-alive connections).
    forwarder: Arc<crate::cluster::forward::Forwarder>,
    /// The node credentials this node has taken (each is taken once).
    hops_taken: Arc<crate::cluster::hop::Replays>,
}

impl AppState {
    pub fn new(service: Arc<SandboxService>) -> Self {
        let limits = &service.config().limits;
        let bodies =
            body_budget::BodyBudget::new(limits.max_json_bytes_in_flight, limits.max_json_bytes);
        AppState {
            service,
            metrics: Arc::new(Metrics::default()),
            keys: Arc::default(),
            bodies: Arc::new(bodies),
            ui: Arc::default(),
            forwarder: Arc::default(),
            hops_taken: Arc::default(),
        }
    }
}

/// A sandbox id from a URL; a malformed one is reported like a missing one.
pub(crate) fn parse_id(raw: &str) -> Result<SandboxId, ApiError> {
    SandboxId::parse(raw).ok_or_else(|| ApiError::not_found(format!("sandbox {raw} not found")))
}

/// Passes a sandbox's answer on to the client as it streams.
pub(crate) fn relay(reply: crate::sandbox::AgentReply) -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::new(reply.body));
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    response
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/sandboxes", post(sandboxes::create).get(sandboxes::list))
        .route(
            "/sandboxes/{id}",
            get(sandboxes::get)
                .delete(sandboxes::delete)
                .patch(sandboxes::patch),
        )
        .route("/sandboxes/{id}/stop", post(sandboxes::stop))
        .route("/sandboxes/{id}/resume", post(sandboxes::resume))
        .route("/sandboxes/{id}/exec", post(exec::exec))
        .route("/sandboxes/{id}/exec/stream", post(exec::exec_stream))
        .route("/sandboxes/{id}/run-tests", post(exec::run_tests))
        .route("/sandboxes/{id}/processes", get(exec::list_processes))
        .route(
            "/sandboxes/{id}/processes/{pid}/output",
            get(exec::process_output),
        )
        .route(
            "/sandboxes/{id}/processes/{pid}/kill",
            post(exec::kill_process),
        )
        .route(
            "/sandboxes/{id}/files",
            get(files::read).put(files::write).delete(files::delete),
        )
        .route("/sandboxes/{id}/files/list", get(files::list))
        .route("/sandboxes/{id}/files/stat", get(files::stat))
        .route("/sandboxes/{id}/files/edit", post(files::edit))
        .route("/sandboxes/{id}/files/glob", post(files::glob))
        .route("/sandboxes/{id}/files/grep", post(files::grep))
        .route(
            "/sandboxes/{id}/archive",
            get(files::get_archive).put(files::put_archive),
        )
        .route("/sandboxes/{id}/terminal", get(terminal::terminal))
        .route("/sandboxes/{id}/terminals", get(terminal::list))
        .route(
            "/sandboxes/{id}/terminals/{name}",
            axum::routing::delete(terminal::end),
        )
        .route(
            "/sandboxes/{id}/terminals/{name}/recording",
            get(terminal::recording),
        )
        .route("/sandboxes/{id}/snapshots", post(snapshots::create))
        .route("/snapshots", get(snapshots::list))
        .route(
            "/snapshots/{id}",
            get(snapshots::get).delete(snapshots::delete),
        )
        .route("/snapshots/{id}/files", get(snapshots::files))
        .route("/volumes", get(volumes::list))
        .route("/volumes/{name}", get(volumes::get).delete(volumes::delete))
        .route("/events", get(events::stream))
        .route("/nodes", get(nodes::list))
        .fallback(ops::not_found);
    let compat = Router::new()
        .route("/execute", post(compat::execute))
        .route("/write_file", post(compat::write_file))
        .route("/read_file", post(compat::read_file))
        .route("/list_files", post(compat::list_files))
        .fallback(ops::not_found);
    Router::new()
        .nest("/v1", v1)
        .nest("/compat/modal", compat)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/ui/terminal/{id}", get(ui::page))
        .route("/ui/terminal.js", get(ui::script))
        .route("/ui/terminal.css", get(ui::style))
        .route("/ui/xterm.js", get(ui::xterm))
        .route("/ui/xterm.css", get(ui::xterm_css))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        // A sandbox another node holds is served there (after the request has its id).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            proxy::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_id::layer,
        ))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}
