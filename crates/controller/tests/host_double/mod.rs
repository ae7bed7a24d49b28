//! A host agent double: a real HTTP server on 127.0.0.1 that answers the host agent API's
//! command routes the way the agent does and records every request it gets. It also serves
//! `GET /v1/instances` and `GET /v1/reporting` from a view the test sets, which the reporting
//! switches it receives update as the agent's would.

// Test helpers: a failed call is a failed test.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The operation id the double hands out.
pub const OP_ID: &str = "00000000000000aa";
/// An instance for which the double answers 409 (an operation already running).
pub const BUSY: &str = "busy0000-0000-0000-0000-000000000000";
/// An instance whose recovery orders the double refuses as stale (it heartbeats again).
pub const BACK: &str = "back0000-0000-0000-0000-000000000000";

/// One request the double received.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Value,
}

/// The running double.
pub struct HostDouble {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    view: View,
    task: tokio::task::JoinHandle<()>,
}

/// What the double serves at `GET /v1/instances` and `GET /v1/reporting`.
#[derive(Debug, Clone)]
pub struct HostView {
    pub instances: Vec<Value>,
    pub enabled: bool,
}

type View = Arc<Mutex<HostView>>;

#[derive(Clone)]
struct Shared {
    seen: Log,
    view: View,
}

impl HostDouble {
    pub async fn start() -> HostDouble {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        HostDouble::serve(listener)
    }

    /// Serves on an address already bound (to come back on the same port).
    pub fn serve(listener: tokio::net::TcpListener) -> HostDouble {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let view = Arc::new(Mutex::new(HostView {
            instances: Vec::new(),
            enabled: true,
        }));
        let shared = Shared {
            seen: seen.clone(),
            view: view.clone(),
        };
        let app = Router::new()
            .route("/v1/instances", get(instances))
            .route("/v1/reporting", put(reporting).get(host_reporting))
            .route("/v1/instances/{uuid}/reporting", put(instance_reporting))
            .route("/v1/instances/{uuid}/actions", post(action))
            .route("/v1/operations/{id}", get(operation))
            .route("/v1/instances/{uuid}/recover", post(recover))
            .layer(axum::middleware::from_fn_with_state(seen.clone(), record))
            .with_state(shared);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        HostDouble {
            addr,
            seen,
            view,
            task,
        }
    }

    /// Sets what the double serves as its instances and host-wide switch.
    pub fn set_view(&self, instances: Vec<Value>, enabled: bool) {
        *self.view.lock().unwrap() = HostView { instances, enabled };
    }

    pub fn view(&self) -> HostView {
        self.view.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Whether a request `method path` with `body` arrived.
    pub fn got(&self, method: &str, path: &str, body: &Value) -> bool {
        self.seen()
            .iter()
            .any(|s| s.method == method && s.path == path && &s.body == body)
    }
}

impl Drop for HostDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn record(State(seen): State<Log>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

async fn instances(State(shared): State<Shared>) -> Json<Value> {
    Json(Value::Array(shared.view.lock().unwrap().instances.clone()))
}

async fn host_reporting(State(shared): State<Shared>) -> Json<Value> {
    Json(json!({"enabled": shared.view.lock().unwrap().enabled}))
}

async fn reporting(State(shared): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    if let Some(enabled) = body["enabled"].as_bool() {
        shared.view.lock().unwrap().enabled = enabled;
    }
    Json(json!({"enabled": body["enabled"]}))
}

async fn instance_reporting(
    State(shared): State<Shared>,
    Path(uuid): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut view = shared.view.lock().unwrap();
    for instance in view.instances.iter_mut().filter(|i| i["uuid"] == uuid) {
        instance["reporting_enabled"] = body["enabled"].clone();
    }
    Json(json!({"uuid": uuid, "reporting_enabled": body["enabled"]}))
}

async fn action(Path(uuid): Path<String>, Json(body): Json<Value>) -> Response {
    if uuid == BUSY {
        let error = json!({"error": {"code": "conflict",
            "message": format!("Operation {OP_ID} is still running on this instance")}});
        return (StatusCode::CONFLICT, Json(error)).into_response();
    }
    if body["action"] == "bogus" {
        let error =
            json!({"error": {"code": "bad_request", "message": "Unknown action \"bogus\""}});
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    (StatusCode::ACCEPTED, Json(json!({"id": OP_ID}))).into_response()
}

async fn operation(Path(id): Path<String>) -> Response {
    if id != OP_ID {
        let error = json!({"error": {"code": "not_found", "message": "No operation"}});
        return (StatusCode::NOT_FOUND, Json(error)).into_response();
    }
    let record = json!({"id": id, "instance": "u1", "action": "reboot", "state": "done",
        "reason": null, "started_at": "2026-01-02T03:04:05.000Z", "steps": []});
    Json(record).into_response()
}

/// `POST /v1/instances/{uuid}/recover` as the agent answers it: 202 started, 200 given up,
/// 409 `stale` for [`BACK`].
async fn recover(Path(uuid): Path<String>, Json(body): Json<Value>) -> Response {
    if uuid == BACK {
        let error = json!({"error": {"code": "stale",
            "message": "Nothing done: the guest heartbeats again"}});
        return (StatusCode::CONFLICT, Json(error)).into_response();
    }
    if body.get("give_up").is_some() {
        return Json(json!({"outcome": "given_up"})).into_response();
    }
    (StatusCode::ACCEPTED, Json(json!({"outcome": "started"}))).into_response()
}
