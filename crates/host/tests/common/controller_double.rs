//! A controller double: a real HTTP server on loopback that speaks the agent protocol the way
//! the controller must (register → `acked_seq`; events contiguous from `acked_seq + 1`, else
//! 409 `sequence_gap`; 404 `unknown_host`; 401 on a wrong token), keeps a copy of each host's
//! events, and can be stopped, restarted on the same port, made to fail or to forget.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the double knows about one host.
#[derive(Debug, Clone, Default)]
pub struct HostCopy {
    pub acked: u64,
    pub events: Vec<Value>,
    pub registrations: Vec<Value>,
    pub known: bool,
}

/// The double's state; it survives a restart of the double (a controller with a store).
#[derive(Debug, Default)]
pub struct DoubleState {
    pub token: String,
    pub hosts: BTreeMap<String, HostCopy>,
    /// Answer 500 to this many requests from now on.
    pub fail_next: u32,
    /// Every answer given: (path, status).
    pub answers: Vec<(String, u16)>,
    /// Every events request's seqs, in arrival order.
    pub batches: Vec<Vec<u64>>,
}

pub type Shared = Arc<Mutex<DoubleState>>;

pub struct ControllerDouble {
    pub addr: SocketAddr,
    pub state: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A loopback address nothing listens on (yet).
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

impl ControllerDouble {
    /// A double on a new port expecting `token`.
    pub async fn start(token: &str) -> ControllerDouble {
        let state = Shared::default();
        state.lock().unwrap().token = token.to_owned();
        ControllerDouble::start_on(free_addr(), state).await
    }

    /// A double on `addr` with `state` (a restart keeps the state).
    pub async fn start_on(addr: SocketAddr, state: Shared) -> ControllerDouble {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let app = Router::new()
            .route("/v1/agents/register", post(register))
            .route("/v1/agents/{host}/events", post(events))
            .with_state(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        let task = tokio::spawn(async move {
            let _ = server.await;
        });
        ControllerDouble {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and closes every connection.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    pub fn host(&self, host: &str) -> HostCopy {
        let state = self.state.lock().unwrap();
        state.hosts.get(host).cloned().unwrap_or_default()
    }

    /// Makes the double hold only the events up to `acked` of `host`.
    pub fn set_acked(&self, host: &str, acked: u64) {
        let mut state = self.state.lock().unwrap();
        let copy = state.hosts.get_mut(host).unwrap();
        copy.acked = acked;
        copy.events.retain(|e| e["seq"].as_u64().unwrap() <= acked);
    }

    /// Forgets that `host` registered (its events are kept).
    pub fn forget(&self, host: &str) {
        self.state
            .lock()
            .unwrap()
            .hosts
            .get_mut(host)
            .unwrap()
            .known = false;
    }

    pub fn set_token(&self, token: &str) {
        self.state.lock().unwrap().token = token.to_owned();
    }

    pub fn answers(&self, status: u16) -> usize {
        let state = self.state.lock().unwrap();
        state.answers.iter().filter(|(_, s)| *s == status).count()
    }
}

/// Checks the token and the failure switch; logs the answer.
fn gate(state: &mut DoubleState, headers: &HeaderMap, path: &str) -> Option<Response> {
    let expected = format!("Bearer {}", state.token);
    let status = if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&expected) {
        StatusCode::UNAUTHORIZED
    } else if state.fail_next > 0 {
        state.fail_next -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        return None;
    };
    state.answers.push((path.to_owned(), status.as_u16()));
    let body = json!({"error": {"code": "refused", "message": "double"}});
    Some((status, Json(body)).into_response())
}

async fn register(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut state = state.lock().unwrap();
    if let Some(refused) = gate(&mut state, &headers, "register") {
        return refused;
    }
    let body: Value = serde_json::from_slice(&body).unwrap();
    let host = body["host"].as_str().unwrap().to_owned();
    let copy = state.hosts.entry(host).or_default();
    copy.registrations.push(body);
    copy.known = true;
    let acked = copy.acked;
    state.answers.push(("register".into(), 200));
    Json(json!({"acked_seq": acked})).into_response()
}

async fn events(
    State(state): State<Shared>,
    Path(host): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().unwrap();
    if let Some(refused) = gate(&mut state, &headers, "events") {
        return refused;
    }
    let body: Value = serde_json::from_slice(&body).unwrap();
    let events = body["events"].as_array().unwrap().clone();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    state.batches.push(seqs.clone());
    let copy = state.hosts.get(&host).cloned().unwrap_or_default();
    let (status, answer) = if !copy.known {
        let body = json!({"error": {"code": "unknown_host", "message": "register first"}});
        (StatusCode::NOT_FOUND, body)
    } else if seqs.len() > 500 {
        let body = json!({"error": {"code": "too_many", "message": "500 at most"}});
        (StatusCode::PAYLOAD_TOO_LARGE, body)
    } else if seqs
        .iter()
        .enumerate()
        .any(|(i, s)| *s != copy.acked + 1 + i as u64)
    {
        let error = json!({"code": "sequence_gap", "message": "resend"});
        (
            StatusCode::CONFLICT,
            json!({"error": error, "acked_seq": copy.acked}),
        )
    } else {
        let copy = state.hosts.get_mut(&host).unwrap();
        copy.acked += seqs.len() as u64;
        copy.events.extend(events);
        (StatusCode::OK, json!({"acked_seq": copy.acked}))
    };
    state.answers.push(("events".into(), status.as_u16()));
    (status, Json(answer)).into_response()
}
