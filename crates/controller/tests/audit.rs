//! The state audit against a host agent double (a real HTTP server): drift injected while the
//! controller is down is repaired by the first round after it starts, each repair listed at
//! `GET /v1/audit`; no drift changes nothing; an unreachable host is listed and left alone.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;
mod host_double;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{request, served_instance, start_controller, TOKEN};
use host_double::HostDouble;
use serde_json::{json, Value};
use tether_controller::{Controller, ControllerError};
use tether_testkit::{wait_for, TempDir};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const U1: &str = "11111111-1111-1111-1111-111111111111";
const U2: &str = "22222222-2222-2222-2222-222222222222";
const U3: &str = "33333333-3333-3333-3333-333333333333";
const HOST: &str = "compute-0";
const WAIT: Duration = Duration::from_secs(10);

/// A controller on a data directory, auditing every `every` (`None`: the default minute).
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ControllerError>>,
}

impl Running {
    async fn start(dir: &Path, every: Option<Duration>) -> Running {
        let configure = move |c: Controller| match every {
            Some(every) => c.with_audit_interval(every),
            None => c,
        };
        let (addr, stop, task) = start_controller(dir, configure).await;
        Running { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }

    async fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let auth = format!("Bearer {TOKEN}");
        request(self.addr, method, path, Some(&auth), body).await
    }

    async fn get(&self, path: &str) -> Value {
        let (code, body) = self.call("GET", path, "").await;
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// Waits for an audit round that checked `hosts` hosts, and answers its report.
    async fn audited(&self, hosts: u64) -> Value {
        self.audit_until("an audit round ends", |r| {
            !r["last_run"].is_null() && r["hosts_checked"] == hosts
        })
        .await
    }

    /// Waits for the audit round after the current one ends, and answers its report.
    async fn next_round(&self) -> Value {
        let before = self.get("/v1/audit").await["last_run"].clone();
        self.audit_until("the next audit round ends", |r| r["last_run"] != before)
            .await
    }

    /// Polls `GET /v1/audit` until `done` holds for its answer.
    async fn audit_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let report = self.get("/v1/audit").await;
            if done(&report) {
                return report;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An instance as the host serves it, with its reporting switch.
fn on_host(uuid: &str, state: &str, reporting: bool) -> Value {
    let mut instance = served_instance(uuid, state);
    instance["reporting_enabled"] = json!(reporting);
    instance
}

/// Registers `HOST` at `api_url` with `instances` (as the host serves them).
async fn register(c: &Running, api_url: &str, instances: &[Value]) {
    let body = json!({"host": HOST, "api_url": api_url, "instances": instances});
    let (code, answer) = c
        .call("POST", "/v1/agents/register", &body.to_string())
        .await;
    assert_eq!(code, 200, "{answer}");
}

/// The stored state of every instance, by uuid.
async fn states(c: &Running) -> Vec<(String, String)> {
    let list = c.get("/v1/instances").await;
    let list = list.as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|i| {
            (
                i["uuid"].as_str().unwrap().to_owned(),
                i["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Puts U1 and U2 on `HOST` at `double` with U1's reporting off, through a controller that
/// does not audit within the test; returns once the host got the registration's push.
async fn set_up(dir: &TempDir, double: &HostDouble) {
    let c = Running::start(dir.path(), None).await;
    let view = vec![
        on_host(U1, "heartbeating", true),
        on_host(U2, "heartbeating", true),
    ];
    double.set_view(view.clone(), true);
    register(&c, &double.url(), &view).await;
    let pushed = json!({"enabled": true});
    wait_for("the registration's push", WAIT, || {
        double.got("PUT", "/v1/reporting", &pushed)
    })
    .await;
    let (code, answer) = c
        .call("POST", &format!("/v1/instances/{U1}/disable"), "")
        .await;
    assert_eq!(
        (code, answer["applied"].clone()),
        (200, json!(true)),
        "{answer}"
    );
    c.stop().await;
}

fn puts(double: &HostDouble) -> usize {
    double.seen().iter().filter(|s| s.method == "PUT").count()
}

#[tokio::test]
async fn injected_drift_is_repaired_in_one_round() {
    let dir = tether_testkit::temp_dir();
    let double = HostDouble::start().await;
    set_up(&dir, &double).await;
    // The host lost U2, gained U3, sees U1 lost with its reporting on, and its own switch off.
    double.set_view(
        vec![on_host(U1, "lost", true), on_host(U3, "heartbeating", true)],
        false,
    );
    let c = Running::start(dir.path(), Some(Duration::from_millis(200))).await;
    let report = c.audited(1).await;

    assert_eq!(report["unreachable"], json!([]));
    let mut repairs: Vec<(String, Value)> = report["repairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["instance"].clone(),
            )
        })
        .collect();
    repairs.sort_by(|a, b| (&a.0, a.1.to_string()).cmp(&(&b.0, b.1.to_string())));
    assert_eq!(
        repairs,
        [
            ("stale_reporting_flag".to_owned(), json!(U1)),
            ("stale_reporting_flag".to_owned(), Value::Null),
            ("stale_state".to_owned(), json!(U1)),
            ("unknown_instance".to_owned(), json!(U3)),
            ("vanished_instance".to_owned(), json!(U2)),
        ],
        "{report}"
    );
    assert!(report["repairs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["host"] == HOST));

    let expected = [(U1, "lost"), (U2, "gone"), (U3, "heartbeating")];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(u, s)| (u.to_string(), s.to_string()))
        .collect();
    assert_eq!(states(&c).await, expected);
    assert_eq!(c.get(&format!("/v1/instances/{U3}")).await["host"], HOST);
    assert_eq!(
        c.get(&format!("/v1/instances/{U1}")).await["reporting_enabled"],
        false
    );
    let view = double.view();
    assert!(view.enabled, "the stored host switch was pushed");
    assert_eq!(
        view.instances[0]["reporting_enabled"], false,
        "U1's switch was pushed"
    );

    let again = c.next_round().await;
    assert_eq!(
        again["repairs"],
        json!([]),
        "repaired drift stays repaired: {again}"
    );
    c.stop().await;
}

#[tokio::test]
async fn no_drift_no_repair() {
    let dir = tether_testkit::temp_dir();
    let double = HostDouble::start().await;
    set_up(&dir, &double).await;
    let before = puts(&double);
    let c = Running::start(dir.path(), Some(Duration::from_millis(200))).await;
    let (code, _) = request(c.addr, "GET", "/v1/audit", None, "").await;
    assert_eq!(code, 401);

    let first = c.audited(1).await;
    let second = c.next_round().await;
    for report in [&first, &second] {
        assert_eq!(report["repairs"], json!([]), "{report}");
        assert_eq!(report["unreachable"], json!([]), "{report}");
    }
    assert_eq!(
        puts(&double),
        before,
        "nothing was pushed: {:?}",
        double.seen()
    );
    let expected = [(U1, "heartbeating"), (U2, "heartbeating")];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(u, s)| (u.to_string(), s.to_string()))
        .collect();
    assert_eq!(states(&c).await, expected);
    c.stop().await;
}

#[tokio::test]
async fn an_unreachable_host_is_listed_and_left_alone() {
    let dir = tether_testkit::temp_dir();
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let c = Running::start(dir.path(), Some(Duration::from_millis(200))).await;
    register(&c, &closed, &[on_host(U1, "heartbeating", true)]).await;
    let stored = c.get(&format!("/v1/instances/{U1}")).await;

    let report = c.audited(1).await;
    let report = if report["unreachable"] == json!([]) {
        c.next_round().await
    } else {
        report
    };
    assert_eq!(report["unreachable"], json!([HOST]), "{report}");
    assert_eq!(report["repairs"], json!([]), "{report}");
    assert_eq!(c.get(&format!("/v1/instances/{U1}")).await, stored);
    c.stop().await;
}
