//! The StarlingX guestAgent listener: the REST API the StarlingX NFV-VIM calls
//! (`/v1/hosts/{uuid}…`, `/v1/instances/{uuid}…`), with its exact bodies, answers and errors,
//! so that the VIM can use tether unchanged while the native API keeps its own shape.
//!
//! It has no authentication, as the reference has none: bind it to loopback (StarlingX uses
//! 127.0.0.1:2410) or a management network only. [`request`] reads a request into a
//! [`request::Command`]; [`handle`] carries it out on the store and the host agents.
//!
//! The VIM knows hosts by uuid, tether by name: the uuid → name map is learnt from the
//! `hostname` of the VIM's host requests and kept in the store, so it survives a restart.

pub mod handle;
pub mod request;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, USER_AGENT};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::ApiState;
use request::Fail;

/// Largest request body read.
const MAX_BODY: usize = 64 << 10;

/// What the listener's handler shares.
#[derive(Clone)]
pub struct StarlingxState {
    api: ApiState,
}

impl StarlingxState {
    /// State over the controller's store and host link.
    pub fn new(api: ApiState) -> StarlingxState {
        StarlingxState { api }
    }
}

/// The listener's routes: every request goes to one handler, which answers as the reference.
pub fn router(state: StarlingxState) -> Router {
    Router::new().fallback(serve_one).with_state(state)
}

/// The running listener; dropping it stops it at once.
pub struct Listener(JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `listener` over the controller's `api` state until `stop` turns true.
pub fn spawn(listener: TcpListener, api: ApiState, mut stop: watch::Receiver<bool>) -> Listener {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "The StarlingX guestAgent listener is listening");
    }
    let shutdown = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let server =
        axum::serve(listener, router(StarlingxState::new(api))).with_graceful_shutdown(shutdown);
    Listener(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "The StarlingX listener failed");
        }
    }))
}

async fn serve_one(State(state): State<StarlingxState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return fail(Fail::INVALID);
    };
    let user_agent = parts.headers.get(USER_AGENT).map(|v| v.as_bytes());
    let command = match request::parse(parts.method.as_str(), parts.uri.path(), user_agent, &body) {
        Ok(command) => command,
        Err(refused) => return fail(refused),
    };
    match handle::run(&state, command).await {
        Ok(answer) => answer.into_response(),
        Err(refused) => fail(refused),
    }
}

/// A success: its status and body (sent with a `\n` after it; none for 204).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: String,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NO_CONTENT {
            return StatusCode::NO_CONTENT.into_response();
        }
        let body = Body::from(format!("{}\n", self.body));
        (self.status, [(CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// `{"status":"fail","reason":"…"}` with the failure's status.
fn fail(refused: Fail) -> Response {
    let status = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = format!("{{\"status\":\"fail\",\"reason\":\"{}\"}}", refused.reason);
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}
