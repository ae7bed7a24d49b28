//! Webhooks over real TCP: a controller on a temp directory POSTs to a receiver in this
//! process that records every request and can be told to fail.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{event, registration, request, start_controller, TOKEN};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tether_controller::ControllerError;
use tether_testkit::{wait_for, TempDir};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SECRET: &str = "receiver-secret-0123456789";
const WAIT: Duration = Duration::from_secs(10);
/// Retry delays of the test controllers.
const BASE: Duration = Duration::from_millis(20);
const MAX: Duration = Duration::from_millis(200);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Seen {
    headers: HeaderMap,
    body: Vec<u8>,
    answered: u16,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap().to_str().unwrap()
    }

    fn key(&self) -> &str {
        self.header("idempotency-key")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Log {
    seen: Vec<Seen>,
    /// Requests still to answer with 500.
    fail_next: usize,
}

/// An HTTP server that records what it is sent.
#[derive(Clone, Default)]
struct Receiver {
    log: Arc<Mutex<Log>>,
    url: String,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver {
            url: format!("http://{addr}/hooks/tether"),
            ..Receiver::default()
        };
        let app = axum::Router::new()
            .fallback(record)
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn fail_next(&self, n: usize) {
        self.log.lock().unwrap().fail_next = n;
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().seen.clone()
    }

    /// The requests it answered 2xx.
    fn accepted(&self) -> Vec<Seen> {
        let seen = self.seen().into_iter();
        seen.filter(|s| s.answered < 300).collect()
    }
}

async fn record(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut log = receiver.log.lock().unwrap();
    let status = if log.fail_next > 0 {
        log.fail_next -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    log.seen.push(Seen {
        headers,
        body: body.to_vec(),
        answered: status.as_u16(),
    });
    status
}

/// A controller with fast retries, stoppable and restartable on its data directory.
struct Ctl {
    dir: TempDir,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ControllerError>>>,
}

impl Ctl {
    async fn start() -> Ctl {
        let dir = tether_testkit::temp_dir();
        let (addr, stop, task) = start_on(dir.path()).await;
        Ctl {
            dir,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the controller (if running) and waits for `run` to return.
    async fn stop(&mut self) {
        if let (Some(stop), Some(task)) = (self.stop.take(), self.task.take()) {
            let _ = stop.send(());
            task.await.unwrap().unwrap();
        }
    }

    async fn restart(&mut self) {
        self.stop().await;
        let (addr, stop, task) = start_on(self.dir.path()).await;
        (self.addr, self.stop, self.task) = (addr, Some(stop), Some(task));
    }

    async fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let auth = format!("Bearer {TOKEN}");
        request(self.addr, method, path, Some(&auth), body).await
    }

    /// Subscribes `url` and returns the subscription's id.
    async fn subscribe(&self, url: &str) -> u64 {
        let body = json!({"url": url, "secret": SECRET}).to_string();
        let (code, answer) = self.call("POST", "/v1/webhooks", &body).await;
        assert_eq!(code, 201, "{answer}");
        answer["id"].as_u64().unwrap()
    }

    /// Registers host `c0` and posts events with these sequence numbers.
    async fn ingest(&self, seqs: std::ops::RangeInclusive<u64>) {
        let body = registration("c0", &[("u1", "heartbeating")]).to_string();
        assert_eq!(self.call("POST", "/v1/agents/register", &body).await.0, 200);
        let events: Vec<Value> = seqs
            .map(|seq| event(seq, "u1", "heartbeat_lost", json!({"misses": seq})))
            .collect();
        let body = json!({ "events": events }).to_string();
        let (code, answer) = self.call("POST", "/v1/agents/c0/events", &body).await;
        assert_eq!(code, 200, "{answer}");
    }

    async fn status(&self, id: u64) -> Value {
        let (code, answer) = self.call("GET", &format!("/v1/webhooks/{id}"), "").await;
        assert_eq!(code, 200, "{answer}");
        answer
    }
}

async fn start_on(
    dir: &Path,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<Result<(), ControllerError>>,
) {
    start_controller(dir, |c| c.with_webhook_backoff(BASE, MAX)).await
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The idempotency keys of `seen`, in order.
fn keys(seen: &[Seen]) -> Vec<String> {
    seen.iter().map(|s| s.key().to_owned()).collect()
}

#[tokio::test]
async fn a_subscriber_gets_each_event_signed_with_its_key_in_order() {
    let receiver = Receiver::start().await;
    let ctl = Ctl::start().await;
    let id = ctl.subscribe(&receiver.url).await;
    ctl.ingest(1..=3).await;
    wait_for("three deliveries", WAIT, || receiver.seen().len() >= 3).await;
    let seen = receiver.seen();
    assert_eq!(keys(&seen), ["c0:1", "c0:2", "c0:3"]);
    for (i, request) in seen.iter().enumerate() {
        let body = request.json();
        let expected = format!("sha256={}", hmac_hex(SECRET, &request.body));
        assert_eq!(request.header("x-tether-signature"), expected);
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("x-tether-event-id"), body["id"].to_string());
        assert_eq!(request.header("x-tether-webhook-version"), "1");
        assert_eq!(body["seq"], json!(i + 1));
        assert_eq!(
            (
                &body["host"],
                &body["instance"],
                &body["name"],
                &body["event"]
            ),
            (
                &json!("c0"),
                &json!("u1"),
                &json!("vm-u1"),
                &json!("heartbeat_lost")
            )
        );
        assert_eq!(body["details"], json!({"misses": i + 1}));
        assert!(body["ts"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-02T03:04:0"));
    }
    // A wrong secret does not verify.
    let other = format!(
        "sha256={}",
        hmac_hex("another-secret-0123456", &seen[0].body)
    );
    assert_ne!(seen[0].header("x-tether-signature"), other);
    let status = ctl.status(id).await;
    assert_eq!(
        (&status["pending"], &status["delivered"], &status["failing"]),
        (&json!(0), &json!(3), &json!(0))
    );
    assert_eq!(status["last_error"], Value::Null);
}

#[tokio::test]
async fn failed_attempts_are_retried_with_the_same_key_and_body_until_accepted() {
    let receiver = Receiver::start().await;
    receiver.fail_next(2);
    let ctl = Ctl::start().await;
    let id = ctl.subscribe(&receiver.url).await;
    ctl.ingest(1..=2).await;
    wait_for("both accepted", WAIT, || receiver.accepted().len() >= 2).await;
    let seen = receiver.seen();
    // The first event was refused twice, then accepted; the second waited its turn.
    assert_eq!(keys(&seen), ["c0:1", "c0:1", "c0:1", "c0:2"]);
    assert_eq!(
        seen.iter().map(|s| s.answered).collect::<Vec<_>>(),
        [500, 500, 204, 204]
    );
    assert!(seen[..3].iter().all(|s| s.body == seen[0].body));
    assert!(seen[..3]
        .iter()
        .all(|s| s.header("x-tether-signature") == seen[0].header("x-tether-signature")));
    assert_eq!(keys(&receiver.accepted()), ["c0:1", "c0:2"]);
    let status = ctl.status(id).await;
    assert_eq!(
        (&status["pending"], &status["delivered"]),
        (&json!(0), &json!(2))
    );
    let error = status["last_error"].as_str().unwrap();
    assert!(error.contains("500"), "{error}");
}

#[tokio::test]
async fn pending_deliveries_are_sent_after_a_restart() {
    let receiver = Receiver::start().await;
    receiver.fail_next(usize::MAX);
    let mut ctl = Ctl::start().await;
    let id = ctl.subscribe(&receiver.url).await;
    ctl.ingest(1..=3).await;
    wait_for("two failed attempts", WAIT, || receiver.seen().len() >= 2).await;
    ctl.stop().await;
    assert!(receiver.accepted().is_empty());
    receiver.fail_next(0);
    ctl.restart().await;
    wait_for("all accepted", WAIT, || receiver.accepted().len() >= 3).await;
    assert_eq!(keys(&receiver.accepted()), ["c0:1", "c0:2", "c0:3"]);
    let status = ctl.status(id).await;
    assert_eq!(
        (&status["pending"], &status["delivered"]),
        (&json!(0), &json!(3))
    );
}

#[tokio::test]
async fn a_deleted_subscription_gets_nothing_more() {
    let failing = Receiver::start().await;
    failing.fail_next(usize::MAX);
    let working = Receiver::start().await;
    let ctl = Ctl::start().await;
    let gone = ctl.subscribe(&failing.url).await;
    ctl.subscribe(&working.url).await;
    ctl.ingest(1..=1).await;
    wait_for("a failed attempt", WAIT, || !failing.seen().is_empty()).await;
    let (code, _) = ctl
        .call("DELETE", &format!("/v1/webhooks/{gone}"), "")
        .await;
    assert_eq!(code, 204);
    let before = failing.seen().len();
    let (code, answer) = ctl.call("GET", &format!("/v1/webhooks/{gone}"), "").await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    ctl.ingest(2..=2).await;
    wait_for("the other one gets both", WAIT, || {
        working.accepted().len() >= 2
    })
    .await;
    // Well past the longest retry delay: at most the attempt in flight at deletion came.
    tokio::time::sleep(MAX * 3).await;
    let after = failing.seen();
    assert!(after.len() <= before + 1, "{} then {}", before, after.len());
    assert!(keys(&after).iter().all(|k| k == "c0:1"));
    let (code, _) = ctl
        .call("DELETE", &format!("/v1/webhooks/{gone}"), "")
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn webhook_routes_need_the_token_and_refuse_bad_bodies() {
    let ctl = Ctl::start().await;
    let good = json!({"url": "http://127.0.0.1:9/hook", "secret": SECRET}).to_string();
    for (method, path) in [
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/webhooks"),
        ("GET", "/v1/webhooks/1"),
        ("DELETE", "/v1/webhooks/1"),
    ] {
        for auth in [None, Some("Bearer wrong-token-0123456")] {
            let (code, answer) = request(ctl.addr, method, path, auth, &good).await;
            assert_eq!(code, 401, "{method} {path}: {answer}");
        }
    }
    assert_eq!(ctl.call("GET", "/v1/webhooks", "").await.1, json!([]));
    let cases = [
        ("not json".to_owned(), "The body must be"),
        (json!({"url": "http://a/"}).to_string(), "secret"),
        (
            json!({"url": "https:///no-host", "secret": SECRET}).to_string(),
            "url",
        ),
        (
            json!({"url": "ftp://a/", "secret": SECRET}).to_string(),
            "url",
        ),
        (
            json!({"url": "http://a/", "secret": "short"}).to_string(),
            "secret",
        ),
        (
            json!({"url": "http://a/", "secret": "with spaces inside it"}).to_string(),
            "secret",
        ),
        (
            json!({"url": "http://a/", "secret": SECRET, "x": 1}).to_string(),
            "unknown field",
        ),
    ];
    for (body, says) in cases {
        let (code, answer) = ctl.call("POST", "/v1/webhooks", &body).await;
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert_eq!(
            (code, answer["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{body}"
        );
        assert!(message.contains(says), "{body}: {message}");
    }
    assert_eq!(ctl.call("GET", "/v1/webhooks", "").await.1, json!([]));
    let (code, created) = ctl.call("POST", "/v1/webhooks", &good).await;
    assert_eq!(code, 201);
    let listed = ctl.call("GET", "/v1/webhooks", "").await.1;
    assert_eq!(listed, json!([created.clone()]));
    assert_eq!(
        created.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["created_at", "id", "url"]
    );
    assert!(!ctl.status(1).await.to_string().contains(SECRET));
    assert_eq!(ctl.call("GET", "/v1/webhooks/abc", "").await.0, 404);
}
