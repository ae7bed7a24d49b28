//! Shared pieces of the controller's integration tests: a controller on a temp directory and
//! a real TCP port, a small HTTP/1.1 client, and the bodies host agents send.

// Test helpers: a failed call is a failed test.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{json, Value};
use tether_controller::{Controller, ControllerConfig, ControllerError};
use tether_testkit::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-token-0123456789";

/// A controller serving on 127.0.0.1 from a temporary data directory.
pub struct Harness {
    pub dir: TempDir,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ControllerError>>>,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(|_| {}, |controller| controller).await
    }

    /// A controller whose configuration `tweak` changed, set up by `configure`.
    pub async fn start_with(
        tweak: impl FnOnce(&mut ControllerConfig),
        configure: impl FnOnce(Controller) -> Controller,
    ) -> Harness {
        let dir = tether_testkit::temp_dir();
        let (addr, stop, task) = start_configured(dir.path(), tweak, configure).await;
        Harness {
            dir,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the controller (if running) and waits for `run` to return.
    pub async fn stop(&mut self) {
        if let (Some(stop), Some(task)) = (self.stop.take(), self.task.take()) {
            let _ = stop.send(());
            task.await.unwrap().unwrap();
        }
    }

    /// Stops the controller and starts a new one on the same data directory.
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}, |controller| controller).await;
    }

    /// [`Harness::restart`] with the new controller made as [`Harness::start_with`] does.
    pub async fn restart_with(
        &mut self,
        tweak: impl FnOnce(&mut ControllerConfig),
        configure: impl FnOnce(Controller) -> Controller,
    ) {
        self.stop().await;
        let (addr, stop, task) = start_configured(self.dir.path(), tweak, configure).await;
        (self.addr, self.stop, self.task) = (addr, Some(stop), Some(task));
    }

    /// A request with the right token.
    pub async fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let auth = format!("Bearer {TOKEN}");
        request(self.addr, method, path, Some(&auth), body).await
    }

    pub async fn get(&self, path: &str) -> Value {
        let (code, body) = self.call("GET", path, "").await;
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// Registers `host` with these instances and returns `acked_seq`.
    pub async fn register(&self, host: &str, instances: &[(&str, &str)]) -> u64 {
        let body = registration(host, instances);
        let (code, answer) = self
            .call("POST", "/v1/agents/register", &body.to_string())
            .await;
        assert_eq!(code, 200, "{answer}");
        answer["acked_seq"].as_u64().unwrap()
    }

    /// Posts events and returns (status, answer).
    pub async fn post_events(&self, host: &str, events: &[Value]) -> (u16, Value) {
        let body = json!({ "events": events }).to_string();
        self.call("POST", &format!("/v1/agents/{host}/events"), &body)
            .await
    }
}

/// Starts a controller on `<dir>/data`, set up by `configure`; returns its address, the
/// sender that stops it and its task.
pub async fn start_controller(
    dir: &Path,
    configure: impl FnOnce(Controller) -> Controller,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<Result<(), ControllerError>>,
) {
    start_configured(dir, |_| {}, configure).await
}

/// [`start_controller`] with the configuration changed by `tweak` first.
pub async fn start_configured(
    dir: &Path,
    tweak: impl FnOnce(&mut ControllerConfig),
    configure: impl FnOnce(Controller) -> Controller,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<Result<(), ControllerError>>,
) {
    let mut config = ControllerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        token: TOKEN.into(),
        starlingx_listen: None,
        vim_url: None,
        tls: None,
        webhook_ca: None,
        host_ca: None,
    };
    tweak(&mut config);
    let mut controller = configure(Controller::open(config).unwrap());
    let addr = controller.bind().await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(controller.run(async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the JSON body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // A server may answer (413) and close before it read a large body: keep what came back.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// An instance object as the host agent's `GET /v1/instances` serves it.
pub fn served_instance(uuid: &str, state: &str) -> Value {
    json!({
        "uuid": uuid, "name": format!("vm-{uuid}"), "connected": true, "state": state,
        "interval_ms": 1000, "last_rtt_us": 150, "misses_total": 0, "consecutive_misses": 0,
        "health": "healthy", "corrective_action": "reboot", "reason": "", "recoveries": 0,
        "challenges": 10, "protocol_errors": 0, "connects": 1
    })
}

pub fn registration(host: &str, instances: &[(&str, &str)]) -> Value {
    let instances: Vec<Value> = instances
        .iter()
        .map(|(uuid, state)| served_instance(uuid, state))
        .collect();
    json!({"host": host, "api_url": "http://127.0.0.1:7001", "instances": instances})
}

/// A journal event with its sequence number; `extra` keys become details.
pub fn event(seq: u64, instance: &str, name: &str, extra: Value) -> Value {
    let mut line = json!({
        "seq": seq, "ts": format!("2026-01-02T03:04:{:02}.000Z", seq % 60),
        "instance": instance, "name": format!("vm-{instance}"), "event": name
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        line[k] = v;
    }
    line
}

/// The `(host, seq)` of each event in a `GET /v1/events` answer.
pub fn seqs(answer: &Value) -> Vec<(String, u64)> {
    answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}
