//! Recovery decisions against a host agent double (a real HTTP server): a failure a host
//! leaves to the controller is ordered once, survives a controller restart without a second
//! order, backs off, ends in a give-up; VIM mode, reporting off, the override and a guest
//! that came back are recorded without an order; an unreachable host is ordered once it
//! answers; bad bodies and unknown names are refused.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;
mod host_double;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{event, request, served_instance, start_controller, TOKEN};
use host_double::{HostDouble, Seen, BACK};
use serde_json::{json, Value};
use tether_controller::recovery::policy::RecoveryPolicy;
use tether_controller::ControllerError;
use tether_testkit::{wait_for, TempDir};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const U1: &str = "11111111-1111-1111-1111-111111111111";
const HOST: &str = "compute-0";
const WAIT: Duration = Duration::from_secs(15);

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ControllerError>>,
    seq: u64,
}

impl Running {
    async fn start(dir: &Path, policy: RecoveryPolicy) -> Running {
        let (addr, stop, task) =
            start_controller(dir, move |c| c.with_recovery_policy(policy)).await;
        Running {
            addr,
            stop,
            task,
            seq: 0,
        }
    }

    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        self.seq
    }

    async fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let auth = format!("Bearer {TOKEN}");
        request(self.addr, method, path, Some(&auth), body).await
    }

    async fn register(&self, api_url: &str, uuid: &str, state: &str) {
        let body = json!({"host": HOST, "api_url": api_url,
            "instances": [served_instance(uuid, state)]});
        let (code, answer) = self
            .call("POST", "/v1/agents/register", &body.to_string())
            .await;
        assert_eq!(code, 200, "{answer}");
    }

    /// Sends the next journal events of `uuid`, each `(name, details)`.
    async fn journal(&mut self, uuid: &str, events: &[(&str, Value)]) {
        let events: Vec<Value> = events
            .iter()
            .map(|(name, extra)| {
                self.seq += 1;
                event(self.seq, uuid, name, extra.clone())
            })
            .collect();
        let body = json!({ "events": events }).to_string();
        let path = format!("/v1/agents/{HOST}/events");
        let (code, answer) = self.call("POST", &path, &body).await;
        assert_eq!(code, 200, "{answer}");
    }

    /// The guest fails and its host leaves the recovery to the controller.
    async fn fail(&mut self, uuid: &str) {
        let lost = json!({"action": "reboot", "misses": 2});
        let deferred = json!({"action": "reboot", "cause": "heartbeat_lost"});
        self.journal(
            uuid,
            &[("heartbeat_lost", lost), ("recovery_deferred", deferred)],
        )
        .await;
    }

    async fn decisions(&self, uuid: &str) -> Vec<Value> {
        let (code, body) = self
            .call("GET", &format!("/v1/instances/{uuid}/recoveries"), "")
            .await;
        assert_eq!(code, 200, "{body}");
        body["recoveries"].as_array().unwrap().clone()
    }

    async fn wait_decisions(&self, uuid: &str, n: usize) -> Vec<Value> {
        let what = format!("{n} decisions for {uuid}");
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            found = self.decisions(uuid).await;
            if found.len() >= n {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{what}: got {found:?}");
    }
}

fn orders(double: &HostDouble, uuid: &str) -> Vec<Seen> {
    let path = format!("/v1/instances/{uuid}/recover");
    double
        .seen()
        .into_iter()
        .filter(|s| s.path == path)
        .collect()
}

fn fast() -> RecoveryPolicy {
    RecoveryPolicy {
        max: 2,
        window: Duration::from_secs(3600),
        backoff: Duration::from_millis(600),
        backoff_max: Duration::from_secs(5),
    }
}

fn decision(d: &Value) -> &str {
    d["decision"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_loss_is_ordered_once_even_across_a_restart() {
    let dir: TempDir = tether_testkit::temp_dir();
    let double = HostDouble::start().await;
    let mut c = Running::start(dir.path(), fast()).await;
    c.register(&double.url(), U1, "heartbeating").await;
    c.fail(U1).await;
    let decided = c.wait_decisions(U1, 1).await;
    assert_eq!(decision(&decided[0]), "ordered", "{decided:?}");
    assert_eq!(decided[0]["action"], "reboot");
    assert_eq!(decided[0]["cause"], "heartbeat_lost");
    let sent = orders(&double, U1);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body,
        json!({"action": "reboot", "cause": "heartbeat_lost"})
    );

    let seq = c.stop().await;
    let mut c = Running::start(dir.path(), fast()).await;
    c.seq = seq;
    // A new event wakes the task; the decided failure is not ordered again.
    c.journal(
        U1,
        &[(
            "recovery_started",
            json!({"action": "reboot", "by": "controller"}),
        )],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(orders(&double, U1).len(), 1);
    assert_eq!(c.decisions(U1).await.len(), 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_back_off_and_the_controller_gives_up_past_the_limit() {
    let dir = tether_testkit::temp_dir();
    let double = HostDouble::start().await;
    let mut c = Running::start(dir.path(), fast()).await;
    c.register(&double.url(), U1, "heartbeating").await;
    c.fail(U1).await;
    c.wait_decisions(U1, 1).await;
    let back = json!({"interval_ms": 1000, "action": "reboot"});
    c.journal(U1, &[("heartbeat_started", back.clone())]).await;
    c.fail(U1).await;
    let decided = c.wait_decisions(U1, 2).await;
    assert_eq!(decision(&decided[1]), "ordered");
    let ms = |d: &Value| {
        let ts = d["decided_at"].as_str().unwrap();
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp_nanos()
            / 1_000_000
    };
    assert!(
        ms(&decided[1]) - ms(&decided[0]) >= 600,
        "the second order backs off"
    );

    c.journal(U1, &[("heartbeat_started", back)]).await;
    c.fail(U1).await;
    let decided = c.wait_decisions(U1, 3).await;
    assert_eq!(decision(&decided[2]), "gave_up", "{decided:?}");
    assert_eq!(decided[2]["detail"], "2 recoveries within 3600 s already");
    let sent = orders(&double, U1);
    assert_eq!(sent.len(), 3);
    assert_eq!(
        sent[2].body["give_up"],
        "2 recoveries within 3600 s already"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vim_mode_reporting_off_the_override_and_a_guest_back_are_respected() {
    let dir = tether_testkit::temp_dir();
    let double = HostDouble::start().await;
    let mut c = Running::start(dir.path(), fast()).await;
    c.register(&double.url(), U1, "heartbeating").await;

    let (code, host) = c
        .call(
            "PUT",
            &format!("/v1/hosts/{HOST}/recovery-mode"),
            r#"{"mode":"vim"}"#,
        )
        .await;
    assert_eq!(
        (code, &host["recovery_mode"]),
        (200, &json!("vim")),
        "{host}"
    );
    c.fail(U1).await;
    let decided = c.wait_decisions(U1, 1).await;
    assert_eq!(decision(&decided[0]), "left_to_vim");

    let path = format!("/v1/instances/{U1}/recovery-mode");
    let (code, instance) = c.call("PUT", &path, r#"{"mode":"builtin"}"#).await;
    assert_eq!((code, &instance["recovery_mode"]), (200, &json!("builtin")));
    let path = format!("/v1/instances/{U1}/corrective-action");
    let (code, _) = c.call("PUT", &path, r#"{"action":"stop"}"#).await;
    assert_eq!(code, 200);
    c.fail(U1).await;
    let decided = c.wait_decisions(U1, 2).await;
    assert_eq!(
        (decision(&decided[1]), &decided[1]["action"]),
        ("ordered", &json!("stop"))
    );
    assert_eq!(orders(&double, U1)[0].body["action"], "stop");

    let (code, _) = c
        .call("POST", &format!("/v1/instances/{U1}/disable"), "")
        .await;
    assert_eq!(code, 200);
    c.fail(U1).await;
    let decided = c.wait_decisions(U1, 3).await;
    assert_eq!(decision(&decided[2]), "reporting_off");
    assert_eq!(orders(&double, U1).len(), 1);

    // The host answers that the guest heartbeats again.
    let builtin = r#"{"mode":"builtin"}"#;
    let (code, _) = c
        .call("PUT", &format!("/v1/hosts/{HOST}/recovery-mode"), builtin)
        .await;
    assert_eq!(code, 200);
    c.register(&double.url(), BACK, "heartbeating").await;
    c.fail(BACK).await;
    let decided = c.wait_decisions(BACK, 1).await;
    assert_eq!(decision(&decided[0]), "recovered", "{decided:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_host_is_ordered_once_it_answers() {
    let dir = tether_testkit::temp_dir();
    let parked = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = parked.local_addr().unwrap();
    drop(parked);
    let mut c = Running::start(dir.path(), fast()).await;
    c.register(&format!("http://{addr}"), U1, "heartbeating")
        .await;
    c.fail(U1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        c.decisions(U1).await.is_empty(),
        "nothing is decided without the host"
    );

    let double = HostDouble::serve(tokio::net::TcpListener::bind(addr).await.unwrap());
    let decided = c.wait_decisions(U1, 1).await;
    assert_eq!(decision(&decided[0]), "ordered");
    wait_for("one order", WAIT, || orders(&double, U1).len() == 1).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_modes_and_unknown_names_are_refused() {
    let dir = tether_testkit::temp_dir();
    let c = Running::start(dir.path(), fast()).await;
    c.register("http://127.0.0.1:9", U1, "heartbeating").await;
    let host_path = format!("/v1/hosts/{HOST}/recovery-mode");
    for body in [r#"{"mode":null}"#, r#"{"mode":"manual"}"#, "{}", "nope"] {
        let (code, answer) = c.call("PUT", &host_path, body).await;
        assert_eq!(
            (code, &answer["error"]["code"]),
            (400, &json!("bad_request")),
            "{body}"
        );
    }
    let (code, _) = c
        .call("PUT", "/v1/hosts/nope/recovery-mode", r#"{"mode":"vim"}"#)
        .await;
    assert_eq!(code, 404);
    let (code, _) = c
        .call(
            "PUT",
            "/v1/instances/nope/recovery-mode",
            r#"{"mode":null}"#,
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = c.call("GET", "/v1/instances/nope/recoveries", "").await;
    assert_eq!(code, 404);
    let (code, answer) = c.call("GET", &format!("/v1/instances/{U1}"), "").await;
    assert_eq!((code, &answer["recovery_mode"]), (200, &Value::Null));
    let (code, _) = request(
        c.addr,
        "GET",
        &format!("/v1/instances/{U1}/recoveries"),
        None,
        "",
    )
    .await;
    assert_eq!(code, 401);
    c.stop().await;
}
