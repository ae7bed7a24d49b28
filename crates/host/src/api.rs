//! The local HTTP API: read-only JSON views of the agent's instances.
//!
//! Served on a UNIX socket (`api_socket`, always) and optionally on TCP (`api_listen`):
//!
//! - `GET /v1/instances`: a JSON array of [`InstanceStatus`], ordered by uuid;
//! - `GET /v1/instances/{uuid}`: one instance, or 404 with
//!   `{"error":{"code":"not_found","message":"…"}}`.
//!
//! Any other path is a 404 of the same shape. The handlers only read the [`AgentView`]; they
//! never touch a supervisor. A stale socket file left by an earlier agent is removed at start
//! (a live one, that still accepts connections, is refused), and the socket is removed again
//! on shutdown.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::status::{AgentView, InstanceStatus};
use crate::HostError;

/// How long shutdown waits for open API connections to finish.
const DRAIN: Duration = Duration::from_secs(2);

/// The running API listeners.
pub(crate) struct ApiServer {
    socket: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<io::Result<()>>>,
}

/// The API's routes over `view`.
pub fn router(view: AgentView) -> Router {
    Router::new()
        .route("/v1/instances", get(list))
        .route("/v1/instances/{uuid}", get(one))
        .fallback(unknown_path)
        .with_state(view)
}

async fn list(State(view): State<AgentView>) -> Json<Vec<InstanceStatus>> {
    Json(view.instances())
}

async fn one(State(view): State<AgentView>, UrlPath(uuid): UrlPath<String>) -> Response {
    match view.instance(&uuid) {
        Some(status) => Json(status).into_response(),
        None => not_found(&format!("No instance with uuid {uuid:?} on this host")),
    }
}

async fn unknown_path() -> Response {
    not_found("No such path; try /v1/instances")
}

fn not_found(message: &str) -> Response {
    let body = json!({"error": {"code": "not_found", "message": message}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

impl ApiServer {
    /// Binds the UNIX socket (and the TCP address, if any) and starts serving.
    pub(crate) async fn start(
        socket: &Path,
        listen: Option<std::net::SocketAddr>,
        view: AgentView,
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
        let (stop, stopped) = watch::channel(false);
        let app = router(view);
        let mut tasks = Vec::new();
        let signal = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let server = axum::serve(unix, app.clone()).with_graceful_shutdown(signal(stopped.clone()));
        tasks.push(tokio::spawn(async move { server.await }));
        if let Some(tcp) = tcp {
            let server = axum::serve(tcp, app).with_graceful_shutdown(signal(stopped));
            tasks.push(tokio::spawn(async move { server.await }));
        }
        Ok(ApiServer {
            socket: socket.to_owned(),
            stop,
            tasks,
        })
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
