//! Discovery of channel sockets (created, deleted, re-created), the HTTP API over its UNIX
//! socket, and configuration refusals.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::time::Duration;

use common::{http, test_config, Harness};
use serde_json::Value;
use tether_host::journal::EventKind;
use tether_host::{HostAgent, HostConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn sockets_are_discovered_removed_and_reconnected() {
    let h = Harness::start(|_| {});
    let before = h.guest(1, 1000);
    h.wait_state(&before.uuid, "heartbeating", 2 * SEC).await;
    // Created after the agent started: found through inotify.
    let after = h.guest(2, 1000);
    h.wait_state(&after.uuid, "heartbeating", 2 * SEC).await;
    assert!(h.status(&after.uuid).unwrap().connected);
    assert_eq!(h.events(&after.uuid, EventKind::ChannelConnected).len(), 1);

    // Deleted (the VM's QEMU exited): the instance goes away.
    let uuid = after.uuid.clone();
    after.remove();
    tether_testkit::wait_for("instance removed", 5 * SEC, || h.status(&uuid).is_none()).await;
    assert!(h.hypervisor.calls().is_empty());

    // Re-created while the instance exists (the VM restarted): the agent reconnects.
    let first = h.status(&before.uuid).unwrap();
    let uuid = before.uuid.clone();
    drop(before);
    let again = common::GuestDouble::start(
        &h.channels,
        &uuid,
        1000,
        tether_proto::CorrectiveAction::Reboot,
    );
    tether_testkit::wait_for("reconnected", 5 * SEC, || again.log().acks >= 1).await;
    h.wait_state(&uuid, "heartbeating", 2 * SEC).await;
    assert!(first.connected);
    tokio::time::sleep(10 * SEC).await;
    assert_eq!(h.status(&uuid).unwrap().misses_total, 0);
    assert!(h.hypervisor.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_with_back_off() {
    let h = Harness::start(|_| {});
    // A stale socket file nobody listens on: connect is refused.
    let uuid = common::uuid(7);
    let path = common::guest_double::channel_path(&h.channels, &uuid);
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    h.wait_state(&uuid, "connecting", 2 * SEC).await;
    tokio::time::sleep(10 * SEC).await;
    std::fs::remove_file(&path).unwrap();
    // QEMU comes back and listens again under the same name.
    let guest = common::GuestDouble::start(
        &h.channels,
        &uuid,
        1000,
        tether_proto::CorrectiveAction::Reboot,
    );
    h.wait_state(&uuid, "heartbeating", 2 * SEC).await;
    assert_eq!(guest.log().connections, 1);
}

async fn get(socket: &std::path::Path, path: &str) -> (u16, Value) {
    http(socket, "GET", path, "").await
}

#[tokio::test]
async fn the_api_serves_instances_over_its_unix_socket() {
    let dir = tether_testkit::temp_dir();
    let config = test_config(dir.path());
    std::fs::create_dir_all(&config.channel_dir).unwrap();
    // A stale API socket from an earlier agent is replaced.
    drop(std::os::unix::net::UnixListener::bind(&config.api_socket).unwrap());
    let mut h = Harness::start(|c| *c = config.clone());
    let guest = h.guest(3, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;

    let (code, list) = get(&h.config.api_socket, "/v1/instances").await;
    assert_eq!(code, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["uuid"], guest.uuid.as_str());
    assert_eq!(list[0]["state"], "heartbeating");
    assert_eq!(list[0]["connected"], true);
    assert_eq!(list[0]["interval_ms"], 1000);
    assert_eq!(list[0]["corrective_action"], "reboot");

    let (code, one) = get(
        &h.config.api_socket,
        &format!("/v1/instances/{}", guest.uuid),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(one["name"], "double");
    let (code, missing) = get(&h.config.api_socket, "/v1/instances/nope").await;
    assert_eq!(code, 404);
    assert_eq!(missing["error"]["code"], "not_found");
    assert!(missing["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nope"));

    h.stop_agent().await;
    assert!(!h.config.api_socket.exists());
    let lines = h.journal();
    assert!(lines.iter().any(|e| e["event"] == "heartbeat_started"));
}

#[tokio::test]
async fn the_api_is_also_served_on_tcp_when_asked() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut h = Harness::start(|c| c.api_listen = Some(addr));
    let mut stream = None;
    for _ in 0..100 {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stream = stream.expect("API listens on TCP");
    let request = "GET /v1/instances HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("[]"), "{response}");
    h.stop_agent().await;
}

#[tokio::test]
async fn bad_configuration_is_refused_before_anything_runs() {
    let dir = tether_testkit::temp_dir();
    let config = HostConfig {
        channel_pattern: "no-uuid.sock".into(),
        ..test_config(dir.path())
    };
    let hv = std::sync::Arc::new(common::RecordingHypervisorDouble::default());
    let err = HostAgent::new(config, hv.clone()).unwrap_err().to_string();
    assert!(err.contains("channel_pattern"), "{err}");

    let config = HostConfig {
        channel_dir: dir.path().join("missing"),
        ..test_config(dir.path())
    };
    let agent = HostAgent::new(config, hv).unwrap();
    let err = agent
        .run(std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");

    let path = dir.path().join("host.toml");
    std::fs::write(&path, "channel_dir = \"/x\"\nbogus_key = 1\n").unwrap();
    let err = HostConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("host.toml") && err.contains("bogus_key"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_guest_that_never_heartbeats_is_reconnected_after_the_start_timeout() {
    let h = Harness::start(|c| c.start_timeout_secs = 120);
    let guest = h.guest(8, 1000);
    guest.set_mode(common::Mode::Frozen);
    h.wait_state(&guest.uuid, "waiting_init", 2 * SEC).await;
    tokio::time::sleep(119 * SEC).await;
    assert_eq!(guest.log().connections, 1);
    tokio::time::sleep(3 * SEC).await;
    assert_eq!(
        guest.log().connections,
        2,
        "closed after 120 s and connected again"
    );
    let closed = h.events(&guest.uuid, EventKind::ChannelDisconnected);
    assert_eq!(
        closed[0]["reason"],
        "connected but not heartbeating in time"
    );
    // Once the guest daemon starts, the new connection heartbeats.
    guest.set_mode(common::Mode::Healthy);
    h.wait_state(&guest.uuid, "heartbeating", 10 * SEC).await;
    assert!(h.hypervisor.calls().is_empty());
}
