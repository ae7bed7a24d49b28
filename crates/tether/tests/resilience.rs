//! The host ⇄ controller link under trouble: a real controller, the real host agent and
//! simulated VMs running the real guest daemon, with a TCP relay on the agent's way to the
//! controller that the test cuts and restores (a network blip). Nothing is lost or stored
//! twice, a healthy guest is never recovered, a guest that hangs during the blip is
//! recovered exactly once, and the state audit fetches the events the link could not
//! deliver from the agent's journal; and the audit repairs switches changed behind the
//! controller's back on a real agent.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Rig, LONG};
use serde_json::{json, Value};
use tether_controller::{Controller, ControllerConfig};
use tether_proto::CorrectiveAction;
use tether_sim::Fault;
use tether_testkit::{wait_for, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

const TOKEN: &str = "s3cret-token-for-tests";
const HOST: &str = "compute-blip";

/// A TCP relay from a port of its own to `target`; `cut` closes every connection and refuses
/// new ones until `restore`.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    accept: Option<JoinHandle<()>>,
    pipes: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut relay = Relay {
            addr: listener.local_addr().unwrap(),
            target,
            accept: None,
            pipes: Arc::default(),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: TcpListener) {
        let (target, pipes) = (self.target, self.pipes.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let pipe = tokio::spawn(pipe(inbound, target));
                pipes.lock().unwrap().push(pipe.abort_handle());
            }
        }));
    }

    fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    async fn restore(&mut self) {
        // The aborted accept task dropped its listener; the port is free again.
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }
}

async fn pipe(mut inbound: TcpStream, target: SocketAddr) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start_controller(data_dir: &std::path::Path, audit_every: Duration) -> Running {
    let config = ControllerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.to_path_buf(),
        token: TOKEN.to_owned(),
        starlingx_listen: None,
        vim_url: None,
        tls: None,
        webhook_ca: None,
        host_ca: None,
    };
    let mut controller = Controller::open(config)
        .unwrap()
        .with_audit_interval(audit_every);
    let addr = controller.bind().await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        controller.run(shutdown).await.unwrap();
    });
    Running { addr, stop, task }
}

/// One HTTP/1.1 request with `Connection: close`; the status and the JSON body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Links the rig's agent to `url` under [`HOST`], with its API on a loopback port.
async fn link(rig: &mut Rig, url: String) {
    let token_file = rig.dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    rig.stop_agent().await;
    rig.config.controller = Some(url);
    rig.config.controller_token_file = Some(token_file);
    rig.config.host_name = Some(HOST.into());
    rig.config.api_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    rig.config.recovery_wait_secs = 2;
    rig.start_agent();
    rig.wait_all_heartbeating().await;
}

/// The `(seq, event)` of every event the controller stored for [`HOST`].
async fn stored(controller: SocketAddr) -> Vec<(u64, String)> {
    let path = format!("/v1/events?host={HOST}&limit=1000");
    let (_, page) = http(controller, "GET", &path, "").await;
    let events = page["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn journaled(rig: &Rig) -> Vec<(u64, String)> {
    rig.journal()
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_blip_loses_nothing_and_recovers_a_hung_guest_once() {
    let mut rig = Rig::start(2, CorrectiveAction::Reboot, 1).await;
    let every = Duration::from_millis(500);
    let controller = start_controller(&rig.dir.path().join("controller"), every).await;
    let mut relay = Relay::start(controller.addr).await;
    link(&mut rig, format!("http://{}", relay.addr)).await;
    wait_until("the controller holds the journal", LONG, || async {
        let journal = journaled(&rig);
        !journal.is_empty() && stored(controller.addr).await == journal
    })
    .await;

    relay.cut();
    let (hung, healthy) = (rig.vm(0).clone(), rig.vm(1).clone());
    hung.set_fault(Fault::Hang);
    wait_for("the agent recovers the hung guest itself", LONG, || {
        hung.resets() == 1
    })
    .await;
    // The link is cut one way only: the audit fetches what it missed from the journal.
    let started: Vec<Value> = rig
        .journal()
        .into_iter()
        .filter(|e| e["event"] == "recovery_started" && e["instance"] == hung.uuid())
        .collect();
    assert!(
        started[0].get("by").is_none(),
        "the agent acted alone: {started:?}"
    );
    wait_until(
        "the audit fetches the loss from the agent's journal",
        LONG,
        || async {
            let stored = stored(controller.addr).await;
            stored.iter().any(|(_, e)| e == "heartbeat_lost")
        },
    )
    .await;
    relay.restore().await;

    wait_until(
        "the controller catches up with the journal",
        LONG,
        || async { stored(controller.addr).await == journaled(&rig) },
    )
    .await;
    rig.wait_all_heartbeating().await;
    // Give a late order every chance to arrive: none may.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hung.resets(), 1, "recovered exactly once");
    assert_eq!(healthy.resets(), 0, "the healthy guest was never touched");
    let events = rig.events_of(&healthy);
    assert!(
        !events
            .iter()
            .any(|e| e.starts_with("recovery") || e == "heartbeat_lost"),
        "{events:?}"
    );
    let path = format!("/v1/instances/{}", hung.uuid());
    let (_, instance) = http(controller.addr, "GET", &path, "").await;
    assert_eq!(instance["state"], "heartbeating", "{instance}");

    rig.stop_agent().await;
    let _ = controller.stop.send(());
    controller.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_repairs_switches_changed_behind_the_controller_s_back() {
    let mut rig = Rig::start(1, CorrectiveAction::Reboot, 1).await;
    let every = Duration::from_millis(500);
    let controller = start_controller(&rig.dir.path().join("controller"), every).await;
    link(&mut rig, format!("http://{}", controller.addr)).await;
    let (_, host) = http(controller.addr, "GET", &format!("/v1/hosts/{HOST}"), "").await;
    let api: SocketAddr = host["api_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let vm = rig.vm(0).clone();
    let path = format!("/v1/instances/{}", vm.uuid());
    wait_until("the controller knows the guest", LONG, || async {
        http(controller.addr, "GET", &path, "").await.0 == 200
    })
    .await;

    // Behind the controller's back: both switches off on the agent itself.
    let off = json!({"enabled": false}).to_string();
    assert_eq!(http(api, "PUT", "/v1/reporting", &off).await.0, 200);
    let path = format!("/v1/instances/{}/reporting", vm.uuid());
    assert_eq!(http(api, "PUT", &path, &off).await.0, 200);

    let instance_path = format!("/v1/instances/{}", vm.uuid());
    wait_until("the audit turns both back on", LONG, || async {
        let (_, host) = http(api, "GET", "/v1/reporting", "").await;
        let (_, instance) = http(api, "GET", &instance_path, "").await;
        host["enabled"] == true && instance["reporting_enabled"] == true
    })
    .await;
    let (_, audit) = http(controller.addr, "GET", "/v1/audit", "").await;
    let kinds: Vec<&str> = audit["repairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    // A later round may find nothing left to repair; the log keeps what was repaired.
    assert!(
        kinds.is_empty() || kinds.iter().all(|k| *k == "stale_reporting_flag"),
        "{audit}"
    );

    rig.stop_agent().await;
    let _ = controller.stop.send(());
    controller.task.await.unwrap();
}
