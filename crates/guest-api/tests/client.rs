//! The Rust client against a real daemon: health reaches the host double, and the client
//! registers again by itself when the daemon restarts.

#![allow(clippy::unwrap_used)]

#[path = "../../guest/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{HostConn, HostDouble, Running};
use guest_heartbeat_api::{
    Action, Client, ClientError, Event, Handler, HealthReport, Notify, Registration,
};
use tether_guest::{Daemon, GuestConfig, Options};
use tether_proto::{ChallengeResponse, CorrectiveAction, Health};
use tokio::sync::oneshot;
use tokio::time::{sleep, Instant};

fn start_daemon(host: &HostDouble, api: &Path) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let daemon = Daemon::new(Options {
        device: host.path.clone(),
        name: "vm-rust".into(),
        config: GuestConfig::default(),
        api_socket: Some(api.to_owned()),
    });
    let task = tokio::spawn(daemon.run(async move {
        let _ = stopped.await;
    }));
    Running {
        stop: Some(stop),
        task,
    }
}

struct Sick {
    sick: Arc<AtomicBool>,
    states: std::sync::mpsc::Sender<bool>,
}

impl Handler for Sick {
    fn register_state(&mut self, registered: bool) {
        let _ = self.states.send(registered);
    }
    fn health_check(&mut self) -> HealthReport {
        let sick = self.sick.load(Ordering::SeqCst);
        HealthReport {
            healthy: !sick,
            corrective_action: if sick { Action::Stop } else { Action::None },
            log_msg: if sick {
                "rust app sick".into()
            } else {
                String::new()
            },
        }
    }
    fn action_notify(&mut self, _: u32, _: Event, _: Notify) {}
}

/// Runs a client on its own thread until `stop` is set.
fn run_client(
    api: PathBuf,
    sick: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::sync::mpsc::Receiver<bool> {
    let (states, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut client = Client::new(api);
        let registration = Registration {
            name: "rusty".into(),
            heartbeat_interval_ms: 400,
            vote_secs: 8,
            shutdown_notice_secs: 5,
            suspend_notice_secs: 5,
            resume_notice_secs: 5,
            corrective_action: Action::Reboot,
        };
        let first = client.register(&registration);
        assert!(first.is_ok() || matches!(first, Err(ClientError::TryAgain(_))));
        let mut handler = Sick { sick, states };
        while !stop.load(Ordering::SeqCst) {
            client.run_once(&mut handler, Duration::from_millis(50));
        }
    });
    rx
}

async fn until(conn: &mut HostConn, ok: impl Fn(&ChallengeResponse) -> bool) -> ChallengeResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    for value in 1.. {
        let r = conn.challenge(value).await;
        if ok(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "last {r:?}");
        sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reports_health_and_registers_again_after_a_daemon_restart() {
    let dir = tether_testkit::temp_dir();
    let api = dir.path().join("api.sock");
    let host = HostDouble::bind(dir.path());
    let daemon = start_daemon(&host, &api);
    let mut conn = host.accept().await;
    conn.register().await;
    let sick = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let states = run_client(api.clone(), sick.clone(), stop.clone());
    assert_eq!(states.recv_timeout(Duration::from_secs(20)), Ok(true));
    sick.store(true, Ordering::SeqCst);
    let r = until(&mut conn, |r| r.heartbeat_health == Health::Unhealthy).await;
    assert_eq!(
        (r.corrective_action, r.log_msg.as_str()),
        (CorrectiveAction::Stop, "rust app sick")
    );

    // The daemon restarts: the client hears the loss, then registers again on its own.
    daemon.shutdown().await.unwrap();
    drop(conn);
    assert_eq!(states.recv_timeout(Duration::from_secs(20)), Ok(false));
    let daemon = start_daemon(&host, &api);
    let mut conn = host.accept().await;
    conn.register().await;
    assert_eq!(states.recv_timeout(Duration::from_secs(20)), Ok(true));
    let r = until(&mut conn, |r| r.log_msg == "rust app sick").await;
    assert_eq!(r.heartbeat_health, Health::Unhealthy);
    stop.store(true, Ordering::SeqCst);
    daemon.shutdown().await.unwrap();
}
