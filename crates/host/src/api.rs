//! The local HTTP API: the agent's instances and their lifecycle operations, as JSON.
//!
//! Served on a UNIX socket (`api_socket`, always) and optionally on TCP (`api_listen`), over
//! HTTPS when `api_tls_cert` and `api_tls_key` are given (the socket stays plain):
//!
//! - `GET /v1/instances`: a JSON array of [`InstanceStatus`], ordered by uuid;
//! - `GET /v1/instances/{uuid}`: one instance;
//! - `POST /v1/instances/{uuid}/actions` with `{"action": "<event>"}` (`stop`, `reboot`,
//!   `pause`, `unpause`, `suspend`, `resume`, `resize_begin`, `resize_end`,
//!   `live_migrate_begin`, `live_migrate_end`, `cold_migrate_begin`, `cold_migrate_end`):
//!   starts a lifecycle operation and answers 202 `{"id": "…"}`; 404 for an unknown instance,
//!   409 when one is already running for it, 400 for a bad body. An optional
//!   `"only": "vote" | "notify"` runs just that step (see [`Scope`]);
//! - `GET /v1/operations/{id}`: an [`OperationRecord`];
//! - `POST /v1/instances/{uuid}/recover`: a recovery the controller decided (see
//!   `recover_api.rs`);
//! - `GET /v1/journal?after=N[&limit=M]`: journal events after `seq` N, as the controller's
//!   ingestion takes them (see `journal_api.rs`);
//! - `GET /v1/reporting` and `PUT /v1/reporting` with `{"enabled": bool}`: the host-wide
//!   reporting switch, answered as `{"enabled": bool}`;
//! - `PUT /v1/instances/{uuid}/reporting` with `{"enabled": bool}`: one instance's switch,
//!   answered with the instance (its `reporting_enabled`); 404 for an unknown instance.
//!   While either switch is off for an instance, its failures are journaled but no corrective
//!   action starts. The controller sets them through `api_listen`.
//!
//! Errors are `{"error":{"code":"…","message":"…"}}` with a stable code (`not_found`,
//! `bad_request`, `conflict`); any other path is a `not_found`. Reads never touch a
//! supervisor; an operation is handed to the instance's supervisor, which runs it. A stale socket file left by an earlier agent is removed at start
//! (a live one, that still accepts connections, is refused), and the socket is removed again
//! on shutdown.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tether_proto::EventType;
use tether_tls::ServerConfig;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::lifecycle::{plan, Scope};
use crate::operations::{BeginError, OperationRecord, Operations};
use crate::status::{AgentView, InstanceStatus};
use crate::HostError;

/// Largest request body accepted.
const MAX_BODY: usize = 4096;

/// How long shutdown waits for open API connections to finish.
const DRAIN: Duration = Duration::from_secs(2);

/// The running API listeners.
pub(crate) struct ApiServer {
    socket: PathBuf,
    tcp_addr: Option<std::net::SocketAddr>,
    https: bool,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<io::Result<()>>>,
}

/// What the handlers read and act through.
#[derive(Debug, Clone)]
pub(crate) struct ApiState {
    view: AgentView,
    pub(crate) operations: Operations,
    /// The journal file, when the API serves `GET /v1/journal`.
    pub(crate) journal: Option<PathBuf>,
}

/// The API's routes over `view` and `operations` (without `GET /v1/journal`).
pub fn router(view: AgentView, operations: Operations) -> Router {
    routes(ApiState {
        view,
        operations,
        journal: None,
    })
}

fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v1/instances", get(list))
        .route("/v1/instances/{uuid}", get(one))
        .route("/v1/instances/{uuid}/actions", post(start_action))
        .route(
            "/v1/instances/{uuid}/recover",
            post(crate::recover_api::recover),
        )
        .route("/v1/operations/{id}", get(operation))
        .route("/v1/reporting", get(host_reporting).put(set_host_reporting))
        .route(
            "/v1/instances/{uuid}/reporting",
            put(set_instance_reporting),
        )
        .route("/v1/journal", get(crate::journal_api::journal))
        .fallback(unknown_path)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn list(State(state): State<ApiState>) -> Json<Vec<InstanceStatus>> {
    Json(state.view.instances())
}

async fn one(State(state): State<ApiState>, UrlPath(uuid): UrlPath<String>) -> Response {
    match state.view.instance(&uuid) {
        Some(status) => Json(status).into_response(),
        None => not_found(&format!("No instance with uuid {uuid:?} on this host")),
    }
}

/// The body of `POST /v1/instances/{uuid}/actions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionRequest {
    action: String,
    #[serde(default)]
    only: Option<String>,
}

async fn start_action(
    State(state): State<ApiState>,
    UrlPath(uuid): UrlPath<String>,
    body: Bytes,
) -> Response {
    let request: ActionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!(
                    "The body must be {{\"action\": \"<event>\"[, \"only\": \"vote\" | \"notify\"]}}: {e}"
                ),
            )
        }
    };
    let event = match request.action.parse::<EventType>() {
        Ok(event) if plan(event).is_some() => event,
        _ => {
            let known: Vec<&str> = EventType::ALL
                .iter()
                .filter(|e| plan(**e).is_some())
                .map(|e| e.as_str())
                .collect();
            let message = format!(
                "Unknown action {:?}; one of: {}",
                request.action,
                known.join(", ")
            );
            return error(StatusCode::BAD_REQUEST, "bad_request", &message);
        }
    };
    let scope = match request.only.as_deref() {
        None => Scope::Full,
        Some(only) => match Scope::from_only(only) {
            Some(scope) => scope,
            None => {
                let message = format!("Unknown only {only:?}; one of: vote, notify");
                return error(StatusCode::BAD_REQUEST, "bad_request", &message);
            }
        },
    };
    match state.operations.begin_scoped(&uuid, event, scope) {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({"id": id}))).into_response(),
        Err(BeginError::UnknownInstance) => {
            not_found(&format!("No instance with uuid {uuid:?} on this host"))
        }
        Err(BeginError::Busy(id)) if id.is_empty() => error(
            StatusCode::CONFLICT,
            "conflict",
            "The instance's supervisor cannot take an operation now; try again",
        ),
        Err(BeginError::Busy(id)) => error(
            StatusCode::CONFLICT,
            "conflict",
            &format!("Operation {id} is still running on this instance"),
        ),
    }
}

async fn operation(State(state): State<ApiState>, UrlPath(id): UrlPath<String>) -> Response {
    match state.operations.get(&id) {
        Some(record) => Json::<OperationRecord>(record).into_response(),
        None => not_found(&format!("No operation with id {id:?} on this host")),
    }
}

/// The body of the reporting switches' `PUT`s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportingRequest {
    enabled: bool,
}

fn reporting_request(body: &[u8]) -> Result<bool, String> {
    serde_json::from_slice::<ReportingRequest>(body)
        .map(|request| request.enabled)
        .map_err(|e| format!("The body must be {{\"enabled\": true|false}}: {e}"))
}

async fn host_reporting(State(state): State<ApiState>) -> Response {
    let enabled = state.view.reporting().host_enabled();
    Json(json!({"enabled": enabled})).into_response()
}

async fn set_host_reporting(State(state): State<ApiState>, body: Bytes) -> Response {
    let enabled = match reporting_request(&body) {
        Ok(enabled) => enabled,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", &message),
    };
    state.view.reporting().set_host(enabled);
    tracing::info!(enabled, "Host reporting switched");
    Json(json!({"enabled": enabled})).into_response()
}

async fn set_instance_reporting(
    State(state): State<ApiState>,
    UrlPath(uuid): UrlPath<String>,
    body: Bytes,
) -> Response {
    let enabled = match reporting_request(&body) {
        Ok(enabled) => enabled,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", &message),
    };
    if !state.view.set_instance_reporting(&uuid, enabled) {
        return not_found(&format!("No instance with uuid {uuid:?} on this host"));
    }
    tracing::info!(instance = %uuid, enabled, "Instance reporting switched");
    match state.view.instance(&uuid) {
        Some(status) => Json(status).into_response(),
        None => not_found(&format!("No instance with uuid {uuid:?} on this host")),
    }
}

async fn unknown_path() -> Response {
    not_found("No such path; try /v1/instances")
}

pub(crate) fn not_found(message: &str) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", message)
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}

impl ApiServer {
    /// Binds the UNIX socket (and the TCP address, if any) and starts serving.
    /// The TCP API is served over HTTPS when `tls` is given.
    pub(crate) async fn start(
        socket: &Path,
        listen: Option<std::net::SocketAddr>,
        tls: Option<Arc<ServerConfig>>,
        view: AgentView,
        operations: Operations,
        journal: PathBuf,
    ) -> Result<ApiServer, HostError> {
        let unix = bind_unix(socket)?;
        let tcp = match listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| HostError::ApiListen { addr, source })?,
            ),
            None => None,
        };
        let tcp_addr = match &tcp {
            Some(tcp) => Some(tcp.local_addr().map_err(|source| HostError::ApiListen {
                addr: listen.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
                source,
            })?),
            None => None,
        };
        let (stop, stopped) = watch::channel(false);
        let app = routes(ApiState {
            view,
            operations,
            journal: Some(journal),
        });
        let mut tasks = Vec::new();
        let signal = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let server = axum::serve(unix, app.clone()).with_graceful_shutdown(signal(stopped.clone()));
        tasks.push(tokio::spawn(async move { server.await }));
        let https = tls.is_some();
        if let (Some(tcp), Some(addr)) = (tcp, tcp_addr) {
            let served = tether_tls::serve(tcp, tls, app, signal(stopped));
            tasks.push(served.map_err(|source| HostError::ApiListen { addr, source })?);
        }
        Ok(ApiServer {
            socket: socket.to_owned(),
            tcp_addr,
            https,
            stop,
            tasks,
        })
    }

    /// The URL of the TCP API (`http://` or `https://`) at the address actually bound (the
    /// port is known even when 0 was asked for), if it is served.
    pub(crate) fn url(&self) -> Option<String> {
        let scheme = if self.https { "https" } else { "http" };
        self.tcp_addr.map(|addr| format!("{scheme}://{addr}"))
    }

    /// Stops accepting, lets open requests finish briefly, and removes the socket.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout(DRAIN, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "The HTTP API failed"),
                Ok(Err(_)) => {}
                Err(_) => abort.abort(),
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Binds the API socket, replacing a stale socket file but never a live one.
fn bind_unix(path: &Path) -> Result<UnixListener, HostError> {
    let error = |source| HostError::ApiSocket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            let other = io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            );
            return Err(error(other));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            let busy = io::Error::new(io::ErrorKind::AddrInUse, "another process serves it");
            return Err(error(busy));
        }
        std::fs::remove_file(path).map_err(error)?;
    }
    UnixListener::bind(path).map_err(error)
}
