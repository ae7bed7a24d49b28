//! The StarlingX guestAgent listener, request by request: the routes, bodies, answers and
//! errors of the reference API, through a real listener on 127.0.0.1, with host agents played
//! by the host agent double.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;
mod host_double;

use std::net::SocketAddr;

use common::{request, served_instance, TOKEN};
use host_double::HostDouble;
use serde_json::{json, Value};
use tether_controller::{Controller, ControllerConfig};
use tether_testkit::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HU: &str = "8aee436e-d564-459e-a0d8-26c44792a9df";
const U1: &str = "8d80875b-fa73-4ccb-bce3-1cd4df10449d";
const U2: &str = "2f1e0d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";
const U3: &str = "3a3a3a3a-3a3a-3a3a-3a3a-3a3a3a3a3a3a";
const UA: Option<&str> = Some("vim/1.0");

/// A controller with its StarlingX listener, and a host agent double registered as
/// `compute-0` with U1 heartbeating and U2 lost.
struct Rig {
    _dir: TempDir,
    api: SocketAddr,
    stx: SocketAddr,
    double: HostDouble,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Rig {
    async fn start() -> Rig {
        let dir = tether_testkit::temp_dir();
        let config = ControllerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            token: TOKEN.into(),
            starlingx_listen: Some("127.0.0.1:0".parse().unwrap()),
            vim_url: None,
            tls: None,
            webhook_ca: None,
            host_ca: None,
        };
        let mut controller = Controller::open(config).unwrap();
        let api = controller.bind().await.unwrap();
        let stx = controller.starlingx_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(controller.run(async {
            let _ = stopped.await;
        }));
        let rig = Rig {
            _dir: dir,
            api,
            stx,
            double: HostDouble::start().await,
            _stop: stop,
        };
        let url = rig.double.url();
        rig.register("compute-0", &url, &[(U1, "heartbeating"), (U2, "lost")])
            .await;
        rig
    }

    async fn register(&self, host: &str, api_url: &str, instances: &[(&str, &str)]) {
        let instances: Vec<Value> = instances
            .iter()
            .map(|(u, s)| served_instance(u, s))
            .collect();
        let body = json!({"host": host, "api_url": api_url, "instances": instances});
        let auth = format!("Bearer {TOKEN}");
        let (code, _) = request(
            self.api,
            "POST",
            "/v1/agents/register",
            Some(&auth),
            &body.to_string(),
        )
        .await;
        assert_eq!(code, 200);
    }

    /// One request to the StarlingX listener; the status and the raw body.
    async fn stx(&self, method: &str, path: &str, ua: Option<&str>, body: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(self.stx).await.unwrap();
        let ua = ua
            .map(|u| format!("User-Agent: {u}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{ua}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (
            head.split(' ').nth(1).unwrap().parse().unwrap(),
            body.to_owned(),
        )
    }

    /// A request with the VIM's User-Agent.
    async fn vim(&self, method: &str, path: &str, body: Value) -> (u16, String) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.stx(method, path, UA, &body).await
    }
}

fn fail(reason: &str) -> String {
    format!(r#"{{"status":"fail","reason":"{reason}"}}"#)
}

fn pass() -> String {
    "{\"status\":\"pass\"}\n".to_owned()
}

fn services(uuid: &str, state: &str, restart: &str, status: &str) -> String {
    format!(
        "{{\"uuid\":\"{uuid}\",\"hostname\":\"compute-0\",\"services\":[{{\"service\":\"heartbeat\",\
         \"state\":\"{state}\",\"restart-timeout\":\"{restart}\",\"status\":\"{status}\"}}]}}\n"
    )
}

fn action(uuid: &str, action: &str, timeout: &str) -> String {
    format!(
        "{{\"uuid\":\"{uuid}\",\"hostname\":\"compute-0\",\"action\":\"{action}\",\"timeout\":\"{timeout}\"}}\n"
    )
}

fn host_body() -> Value {
    json!({"uuid": HU, "hostname": "compute-0"})
}

#[tokio::test]
async fn hosts_are_created_switched_queried_and_deleted() {
    let rig = Rig::start().await;
    let host = format!("/v1/hosts/{HU}");

    // Before the VIM names the host, its uuid is unknown.
    assert_eq!(
        rig.vim("GET", &host, Value::Null).await,
        (404, fail("entity not found"))
    );
    assert_eq!(
        rig.vim("POST", &host, Value::Null).await,
        (404, fail("entity not found"))
    );
    assert_eq!(rig.vim("POST", &host, host_body()).await, (200, pass()));
    assert_eq!(rig.vim("POST", &host, Value::Null).await, (200, pass()));

    let disable = format!("{host}/disable");
    assert_eq!(rig.vim("PUT", &disable, host_body()).await, (200, pass()));
    assert!(rig
        .double
        .got("PUT", "/v1/reporting", &json!({"enabled": false})));
    let state =
        |s: &str| format!("{{\"uuid\":\"{HU}\",\"hostname\":\"compute-0\",\"state\":\"{s}\"}}\n");
    // The VIM queries with the /disable suffix; the suffix is ignored.
    assert_eq!(
        rig.vim("GET", &disable, Value::Null).await,
        (200, state("disabled"))
    );
    let enable = format!("{host}/enable");
    assert_eq!(rig.vim("PUT", &enable, host_body()).await, (200, pass()));
    assert!(rig
        .double
        .got("PUT", "/v1/reporting", &json!({"enabled": true})));
    assert_eq!(
        rig.vim("GET", &host, Value::Null).await,
        (200, state("enabled"))
    );

    assert_eq!(
        rig.vim("DELETE", &host, Value::Null).await,
        (204, String::new())
    );

    // Errors: an unregistered host name, a body without hostname, an empty body, PATCH.
    let stranger = json!({"uuid": HU, "hostname": "compute-9"});
    assert_eq!(
        rig.vim("PUT", &enable, stranger).await,
        (404, fail("entity not found"))
    );
    let nameless = json!({"uuid": HU});
    assert_eq!(
        rig.vim("PUT", &enable, nameless).await,
        (400, fail("command parse error"))
    );
    assert_eq!(rig.vim("PUT", &enable, Value::Null).await.0, 411);
    assert_eq!(
        rig.vim("PATCH", &host, host_body()).await,
        (400, fail("unsupported http command"))
    );
}

#[tokio::test]
async fn instances_are_added_switched_queried_and_deleted() {
    let rig = Rig::start().await;
    let u1 = format!("/v1/instances/{U1}");
    let add = json!({"uuid": U1, "hostname": "compute-0", "services": ["heartbeat"]});
    assert_eq!(rig.vim("POST", &u1, add).await, (200, pass()));
    let elsewhere = json!({"uuid": U1, "hostname": "compute-9", "services": ["heartbeat"]});
    assert_eq!(
        rig.vim("POST", &u1, elsewhere).await,
        (400, fail("invalid data"))
    );

    let patch = |state: &str| {
        json!({"uuid": U1, "hostname": "compute-0",
               "services": [{"service": "heartbeat", "state": state}]})
    };
    assert_eq!(
        rig.vim("PATCH", &u1, patch("disabled")).await,
        (200, services(U1, "disabled", "121", "enabled"))
    );
    let on_host = format!("/v1/instances/{U1}/reporting");
    assert!(rig.double.got("PUT", &on_host, &json!({"enabled": false})));
    assert_eq!(
        rig.vim("GET", &u1, Value::Null).await,
        (200, services(U1, "disabled", "121", "enabled"))
    );
    assert_eq!(
        rig.vim("PATCH", &u1, patch("enabled")).await,
        (200, services(U1, "enabled", "121", "enabled"))
    );
    assert!(rig.double.got("PUT", &on_host, &json!({"enabled": true})));

    // Not heartbeating: restart timeout 0, status disabled.
    let u2 = format!("/v1/instances/{U2}");
    assert_eq!(
        rig.vim("GET", &u2, Value::Null).await,
        (200, services(U2, "enabled", "0", "disabled"))
    );

    // Errors.
    let u3 = format!("/v1/instances/{U3}");
    assert_eq!(
        rig.vim("GET", &u3, Value::Null).await,
        (404, fail("entity not found"))
    );
    let unknown = json!({"uuid": U3, "hostname": "compute-0",
        "services": [{"service": "heartbeat", "state": "enabled"}]});
    assert_eq!(
        rig.vim("PATCH", &u3, unknown).await,
        (404, fail("entity not found"))
    );
    let other = json!({"uuid": U1, "hostname": "compute-0",
        "services": [{"service": "other", "state": "enabled"}]});
    assert_eq!(
        rig.vim("PATCH", &u1, other).await,
        (400, fail("invalid data"))
    );
    assert_eq!(
        rig.vim("PATCH", &u1, patch("on")).await,
        (400, fail("bad state"))
    );
    let no_services = json!({"uuid": U1, "hostname": "compute-0"});
    assert_eq!(
        rig.vim("PATCH", &u1, no_services).await,
        (400, fail("command parse error"))
    );
    assert_eq!(rig.vim("PATCH", &u1, Value::Null).await.0, 411);
    assert_eq!(
        rig.stx("PATCH", &u1, UA, "not json").await,
        (400, fail("command parse error"))
    );

    assert_eq!(
        rig.vim("DELETE", &u1, Value::Null).await,
        (204, String::new())
    );
    assert_eq!(
        rig.vim("DELETE", &u3, Value::Null).await,
        (404, fail("entity not found"))
    );
}

#[tokio::test]
async fn votes_and_notifications_go_to_the_host_as_one_step() {
    let rig = Rig::start().await;
    let ask = |uuid: &str, what: &str, event: &str| {
        let body = json!({"uuid": uuid, "hostname": "compute-0", "action": event});
        (format!("/v1/instances/{uuid}/{what}"), body)
    };
    let (path, body) = ask(U1, "vote", "stop");
    assert_eq!(
        rig.vim("POST", &path, body).await,
        (200, action(U1, "stop", "11"))
    );
    let actions = format!("/v1/instances/{U1}/actions");
    assert!(rig
        .double
        .got("POST", &actions, &json!({"action": "stop", "only": "vote"})));

    for (event, timeout) in [
        ("reboot", "11"),
        ("pause", "11"),
        ("live_migrate_begin", "11"),
        ("resume", "11"),
        ("cold_migrate_end", "11"),
        ("resize_begin", "0"),
        ("resize_end", "0"),
        ("bogus", "0"),
    ] {
        let (path, body) = ask(U1, "notify", event);
        assert_eq!(
            rig.vim("POST", &path, body).await,
            (200, action(U1, event, timeout)),
            "{event}"
        );
    }
    let notified = json!({"action": "reboot", "only": "notify"});
    assert!(rig.double.got("POST", &actions, &notified));

    // A guest that does not heartbeat is not asked, and the VIM is told not to wait.
    let before = rig.double.seen().len();
    let (path, body) = ask(U2, "vote", "stop");
    assert_eq!(
        rig.vim("POST", &path, body).await,
        (200, action(U2, "stop", "0"))
    );
    let (path, body) = ask(U2, "notify", "stop");
    assert_eq!(
        rig.vim("POST", &path, body).await,
        (200, action(U2, "stop", "0"))
    );
    assert_eq!(rig.double.seen().len(), before);

    // Errors: unknown instance, missing action, empty body.
    let (path, body) = ask(U3, "vote", "stop");
    assert_eq!(
        rig.vim("POST", &path, body).await,
        (404, fail("entity not found"))
    );
    let (path, _) = ask(U1, "vote", "stop");
    let actionless = json!({"uuid": U1, "hostname": "compute-0"});
    assert_eq!(
        rig.vim("POST", &path, actionless).await,
        (400, fail("command parse error"))
    );
    assert_eq!(rig.vim("POST", &path, Value::Null).await.0, 411);
}

#[tokio::test]
async fn the_guest_s_own_times_are_answered_once_its_host_reported_them() {
    let rig = Rig::start().await;
    let times = json!({"vote_secs": 31, "shutdown_secs": 32, "suspend_secs": 33,
        "resume_secs": 34, "restart_secs": 301});
    let started = common::event(1, U1, "heartbeat_started", times);
    let body = json!({ "events": [started] }).to_string();
    let auth = format!("Bearer {TOKEN}");
    let path = "/v1/agents/compute-0/events";
    assert_eq!(
        request(rig.api, "POST", path, Some(&auth), &body).await.0,
        200
    );

    for (what, event, timeout) in [
        ("vote", "stop", "31"),
        ("notify", "reboot", "32"),
        ("notify", "suspend", "33"),
        ("notify", "unpause", "34"),
        ("notify", "resize_end", "0"),
    ] {
        let body = json!({"uuid": U1, "hostname": "compute-0", "action": event});
        let answer = rig
            .vim("POST", &format!("/v1/instances/{U1}/{what}"), body)
            .await;
        assert_eq!(answer, (200, action(U1, event, timeout)), "{what} {event}");
    }
    assert_eq!(
        rig.vim("GET", &format!("/v1/instances/{U1}"), Value::Null)
            .await,
        (200, services(U1, "enabled", "301", "enabled"))
    );
}

#[tokio::test]
async fn a_host_that_cannot_be_reached_gets_timeout_zero() {
    let rig = Rig::start().await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    rig.register("compute-1", &url, &[(U3, "heartbeating")])
        .await;
    let body = json!({"uuid": U3, "hostname": "compute-1", "action": "stop"});
    let (code, answer) = rig
        .vim("POST", &format!("/v1/instances/{U3}/vote"), body)
        .await;
    assert_eq!(code, 200);
    assert!(answer.contains("\"timeout\":\"0\""), "{answer}");
}

#[tokio::test]
async fn the_user_agent_and_the_url_are_checked() {
    let rig = Rig::start().await;
    let u1 = format!("/v1/instances/{U1}");
    assert_eq!(
        rig.stx("GET", &u1, None, "").await.0,
        200,
        "no User-Agent is accepted"
    );
    let (code, body) = rig.stx("GET", &u1, Some("curl/8.0"), "").await;
    assert_eq!((code, body), (403, fail("no buffer")));
    for path in [
        "/v1/instances/8d80875b".to_owned(),
        "/v1/instances/".to_owned(),
        format!("/v2/instances/{U1}"),
        format!("/v1/instances/{U1}extra"),
        "/".to_owned(),
    ] {
        assert_eq!(rig.stx("GET", &path, UA, "").await.0, 403, "{path}");
    }
    let (code, body) = rig.stx("PUT", &format!("/v1/things/{U1}"), UA, "{}").await;
    assert_eq!((code, body), (403, fail("no buffer")));
    assert_eq!(rig.stx("OPTIONS", &u1, UA, "").await.0, 405);
}
