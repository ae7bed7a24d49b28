//! The VIM event transmitter over real TCP: a controller on a temp directory sends its events
//! to a VIM double in this process (an HTTP server that plays the StarlingX VIM's plugin API,
//! which cannot run here), which records every request and can be told to fail or refuse.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use common::{event, Harness, TOKEN};
use serde_json::{json, Value};
use tether_controller::{Controller, ControllerConfig, ControllerError};
use tether_testkit::{wait_for, wait_until};

const WAIT: Duration = Duration::from_secs(10);
const UUID: &str = "5c1a3f0e-9b7d-4e2a-8f6c-0123456789ab";
const PATH: &str = "/nfvi-plugins/v1/instances/5c1a3f0e-9b7d-4e2a-8f6c-0123456789ab";

/// One request the VIM double got.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: String,
    answered: u16,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap().to_str().unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Script {
    seen: Vec<Seen>,
    /// Statuses to answer next, in order; then `otherwise`.
    next: VecDeque<u16>,
    otherwise: Option<u16>,
}

/// The VIM double: records what it is sent and answers as scripted (200 by default).
#[derive(Clone)]
struct VimDouble {
    script: Arc<Mutex<Script>>,
    url: String,
}

impl VimDouble {
    async fn start() -> VimDouble {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let vim = VimDouble {
            script: Arc::default(),
            url: format!("http://{addr}"),
        };
        let app = axum::Router::new().fallback(record).with_state(vim.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        vim
    }

    /// Answers these statuses to the next requests.
    fn answer_next(&self, statuses: &[u16]) {
        self.script.lock().unwrap().next.extend(statuses);
    }

    /// Answers `status` to every request after the scripted ones (`None`: 200).
    fn answer_otherwise(&self, status: Option<u16>) {
        self.script.lock().unwrap().otherwise = status;
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }

    /// The bodies it answered 2xx, in order, parsed.
    fn accepted(&self) -> Vec<Value> {
        let seen = self.seen().into_iter().filter(|s| s.answered < 300);
        seen.map(|s| s.json()).collect()
    }

    /// Every body with the status it was answered.
    fn answered(&self) -> Vec<(Value, u16)> {
        let seen = self.seen().into_iter();
        seen.map(|s| (s.json(), s.answered)).collect()
    }

    async fn wait_accepted(&self, n: usize) -> Vec<Value> {
        wait_for(&format!("{n} PATCHes accepted"), WAIT, || {
            self.accepted().len() >= n
        })
        .await;
        self.accepted()
    }
}

async fn record(
    State(vim): State<VimDouble>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut script = vim.script.lock().unwrap();
    let status = script.next.pop_front().or(script.otherwise).unwrap_or(200);
    script.seen.push(Seen {
        method,
        path: uri.to_string(),
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
        answered: status,
    });
    StatusCode::from_u16(status).unwrap()
}

/// A controller on a temp directory sending to `vim_url`, with fast retries.
async fn controller(vim_url: Option<&str>) -> Harness {
    Harness::start_with(vim_at(vim_url), fast).await
}

fn vim_at(url: Option<&str>) -> impl FnOnce(&mut ControllerConfig) {
    let url = url.map(str::to_owned);
    move |config| config.vim_url = url
}

fn fast(controller: Controller) -> Controller {
    controller.with_vim_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// A VIM double answering `answers` first, and a controller sending to it with host
/// `compute-0` and the instance registered.
async fn set_up(answers: &[u16]) -> (VimDouble, Harness) {
    let vim = VimDouble::start().await;
    vim.answer_next(answers);
    let h = controller(Some(&vim.url)).await;
    register(&h).await;
    (vim, h)
}

async fn register(h: &Harness) {
    assert_eq!(h.register("compute-0", &[(UUID, "heartbeating")]).await, 0);
}

/// Posts events `(seq, name, details)` of the instance.
async fn post(h: &Harness, events: &[(u64, &str, Value)]) {
    let events: Vec<Value> = events
        .iter()
        .map(|(seq, name, details)| event(*seq, UUID, name, details.clone()))
        .collect();
    let (code, answer) = h.post_events("compute-0", &events).await;
    assert_eq!(code, 200, "{answer}");
}

/// Waits until the transmitter is done with every stored event; returns `GET /v1/vim`.
async fn caught_up(h: &Harness) -> Value {
    wait_until("the VIM transmitter caught up", WAIT, || async {
        h.get("/v1/vim").await["behind"] == 0
    })
    .await;
    h.get("/v1/vim").await
}

/// A service event's body.
fn service(state: &str, status: &str, restart: &str) -> Value {
    let service = json!({"service": "heartbeat", "state": state, "status": status,
                         "restart-timeout": restart});
    json!({"uuid": UUID, "hostname": "compute-0", "event-type": "service",
           "event-data": {"services": [service]}})
}

/// An alarm event's body.
fn alarm(state: &str, repair: &str) -> Value {
    let service = json!({"service": "heartbeat", "state": state, "repair-action": repair});
    json!({"uuid": UUID, "hostname": "compute-0", "event-type": "alarm",
           "event-data": {"services": [service]}})
}

/// An action event's body.
fn action(event: &str, response: &str, reason: &str) -> Value {
    let data = json!({"action": event, "guest-response": response, "reason": reason});
    json!({"uuid": UUID, "event-type": "action", "event-data": data})
}

fn started(restart: Option<u32>) -> Value {
    let mut details = json!({"action": "reboot", "interval_ms": 1000});
    if let Some(secs) = restart {
        details["restart_secs"] = secs.into();
    }
    details
}

#[tokio::test]
async fn every_mapped_event_reaches_the_vim_with_the_exact_body_and_headers() {
    let (vim, mut h) = set_up(&[]).await;
    let vote = json!({"operation": "1", "action": "stop", "outcome": "rejected",
                      "reason": "busy", "only": "vote", "vote_result": "reject"});
    let notice = json!({"operation": "2", "action": "pause", "outcome": "done",
                        "only": "notify", "vote_result": "complete"});
    let unhealthy = json!({"action": "stop", "reason": "disk"});
    post(
        &h,
        &[
            (1, "heartbeat_started", started(Some(300))),
            (2, "heartbeat_missed", json!({"misses": 1})),
            (3, "guest_unhealthy", unhealthy),
            (
                4,
                "heartbeat_lost",
                json!({"action": "reboot", "misses": 2}),
            ),
            (5, "recovery_started", json!({"action": "reboot"})),
            (6, "heartbeat_started", started(None)),
            (7, "operation_finished", vote),
            (8, "operation_finished", notice),
            (9, "guest_exited", json!({"reason": "Exiting..."})),
        ],
    )
    .await;
    let expected = [
        service("enabled", "enabled", "300"),
        alarm("unhealthy", "stop"),
        service("enabled", "disabled", "0"),
        alarm("failed", "reboot"),
        service("enabled", "enabled", "121"),
        action("stop", "reject", "busy"),
        action("pause", "proceed", ""),
        service("enabled", "disabled", "0"),
    ];
    assert_eq!(vim.wait_accepted(expected.len()).await, expected);
    let first = &vim.seen()[0];
    assert_eq!(
        first.body,
        format!(
            "{{\"uuid\":\"{UUID}\",\"hostname\":\"compute-0\",\"event-type\":\"service\",\
             \"event-data\":{{\"services\":[{{\"service\":\"heartbeat\",\"state\":\"enabled\",\
             \"status\":\"enabled\",\"restart-timeout\":\"300\"}}]}}}}"
        ),
        "the keys in the original's order, nothing else"
    );
    for seen in vim.seen() {
        assert_eq!((&seen.method, seen.path.as_str()), (&Method::PATCH, PATH));
        assert_eq!(seen.header("user-agent"), "guest-agent/1.0");
        assert_eq!(seen.header("content-type"), "application/json");
        assert_eq!(seen.header("connection"), "close");
        let length = seen.body.len().to_string();
        assert_eq!(seen.header("content-length"), length);
    }
    let status = caught_up(&h).await;
    assert_eq!(status["url"], vim.url.as_str());
    assert_eq!(status["last_event_id"], 9, "{status}");
    assert!(status["last_error"].is_null(), "{status}");
    h.stop().await;
}

#[tokio::test]
async fn a_failing_vim_gets_the_same_patch_again_and_nothing_is_skipped() {
    let (vim, mut h) = set_up(&[500, 500]).await;
    post(
        &h,
        &[
            (1, "heartbeat_started", started(Some(60))),
            (2, "heartbeat_lost", json!({"action": "stop"})),
        ],
    )
    .await;
    let expected = [
        service("enabled", "enabled", "60"),
        service("enabled", "disabled", "0"),
        alarm("failed", "stop"),
    ];
    assert_eq!(vim.wait_accepted(3).await, expected);
    let first = expected[0].clone();
    assert_eq!(
        vim.answered()[..3],
        [(first.clone(), 500), (first.clone(), 500), (first, 200)]
    );
    assert_eq!(vim.seen().len(), 5, "each PATCH accepted once");
    let status = h.get("/v1/vim").await;
    let error = "The VIM answered 500 Internal Server Error";
    assert_eq!(status["last_error"], error, "{status}");
    assert!(status["last_error_at"].as_str().unwrap().ends_with('Z'));
    h.stop().await;
}

#[tokio::test]
async fn a_refused_patch_is_skipped_and_the_next_event_still_goes() {
    let (vim, mut h) = set_up(&[400]).await;
    post(
        &h,
        &[
            (1, "heartbeat_started", started(Some(60))),
            (2, "guest_unhealthy", json!({"action": "log"})),
        ],
    )
    .await;
    assert_eq!(vim.wait_accepted(1).await, [alarm("unhealthy", "log")]);
    let refused = (service("enabled", "enabled", "60"), 400);
    let sent = (alarm("unhealthy", "log"), 200);
    assert_eq!(
        vim.answered(),
        [refused, sent],
        "the refused one is not sent again"
    );
    let status = h.get("/v1/vim").await;
    let error = status["last_error"].as_str().unwrap();
    assert!(error.contains("400 Bad Request"), "{status}");
    h.stop().await;
}

#[tokio::test]
async fn a_restarted_controller_resumes_after_its_cursor_and_loses_nothing() {
    let (vim, mut h) = set_up(&[]).await;
    post(&h, &[(1, "heartbeat_started", started(Some(60)))]).await;
    vim.wait_accepted(1).await;

    vim.answer_otherwise(Some(503));
    post(
        &h,
        &[
            (2, "guest_unhealthy", json!({"action": "reboot"})),
            (3, "guest_exited", json!({})),
        ],
    )
    .await;
    wait_for("the VIM failing the second event", WAIT, || {
        vim.seen().iter().any(|s| s.answered == 503)
    })
    .await;
    let status = h.get("/v1/vim").await;
    assert_eq!(
        (&status["last_event_id"], &status["behind"]),
        (&1.into(), &2.into())
    );

    h.stop().await;
    vim.answer_otherwise(None);
    h.restart_with(vim_at(Some(&vim.url)), fast).await;
    let expected = [
        service("enabled", "enabled", "60"),
        alarm("unhealthy", "reboot"),
        service("enabled", "disabled", "0"),
    ];
    assert_eq!(vim.wait_accepted(3).await, expected, "in order, each once");
    assert_eq!(caught_up(&h).await["last_event_id"], 3);
    h.stop().await;
}

#[tokio::test]
async fn a_vim_added_later_is_not_sent_the_history() {
    let vim = VimDouble::start().await;
    let mut h = controller(None).await;
    assert_eq!(h.get("/v1/vim").await, json!({"url": null}));
    register(&h).await;
    post(
        &h,
        &[
            (1, "heartbeat_started", started(Some(60))),
            (2, "guest_unhealthy", json!({"action": "stop"})),
        ],
    )
    .await;
    h.restart_with(vim_at(Some(&format!("{}/", vim.url))), fast)
        .await;
    assert_eq!(
        h.get("/v1/vim").await,
        json!({"url": vim.url, "last_event_id": 2, "behind": 0, "last_error": null,
               "last_error_at": null})
    );
    post(&h, &[(3, "guest_exited", json!({}))]).await;
    assert_eq!(
        vim.wait_accepted(1).await,
        [service("enabled", "disabled", "0")],
        "the stop is told, the history telling that the guest heartbeated"
    );
    assert_eq!(
        vim.seen().len(),
        1,
        "nothing from before the VIM was configured"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_bad_vim_url_is_refused_with_a_clear_error_before_anything_is_created() {
    let dir = tether_testkit::temp_dir();
    for (url, words) in [
        ("ftp://vim:30002", "not an http://host[:port] URL"),
        (
            "http://vim:30002/nfvi-plugins",
            "not an http://host[:port] URL",
        ),
        ("https://vim:30002", "plain HTTP"),
    ] {
        let config = ControllerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            token: TOKEN.into(),
            starlingx_listen: None,
            vim_url: Some(url.into()),
            tls: None,
            webhook_ca: None,
            host_ca: None,
        };
        let error = Controller::open(config).err().unwrap();
        assert!(matches!(error, ControllerError::VimUrl(_)), "{error}");
        let chain = format!("{error}: {}", std::error::Error::source(&error).unwrap());
        assert!(chain.contains(words) && chain.contains(url), "{chain}");
    }
    assert!(!dir.path().join("data").exists());
}
