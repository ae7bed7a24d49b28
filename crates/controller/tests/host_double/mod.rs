//! A host agent double: a real HTTP server on 127.0.0.1 that answers the host agent API's
//! command routes the way the agent does and records every request it gets.

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
    task: tokio::task::JoinHandle<()>,
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
        let app = Router::new()
            .route("/v1/reporting", put(reporting))
            .route("/v1/instances/{uuid}/reporting", put(instance_reporting))
            .route("/v1/instances/{uuid}/actions", post(action))
            .route("/v1/operations/{id}", get(operation))
            .layer(axum::middleware::from_fn_with_state(seen.clone(), record))
            .with_state(seen.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        HostDouble { addr, seen, task }
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

async fn reporting(Json(body): Json<Value>) -> Json<Value> {
    Json(json!({"enabled": body["enabled"]}))
}

async fn instance_reporting(Path(uuid): Path<String>, Json(body): Json<Value>) -> Json<Value> {
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
