//! The reporting switches of the host API: with reporting off for the host or for one
//! instance, a lost heartbeat is journaled but no corrective action starts; with both on, a
//! loss is acted on. Paused clock, real UNIX sockets, the guest double.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::time::Duration;

use common::{http, Harness, Mode};
use tether_host::journal::EventKind;
use tether_hypervisor::Action;

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn with_reporting_off_a_loss_is_journaled_but_not_acted_on() {
    let h = Harness::start(|_| {});
    let socket = &h.config.api_socket;
    let host_off = h.guest(1, 1000);
    let instance_off = h.guest(2, 1000);
    h.wait_state(&host_off.uuid, "heartbeating", 5 * SEC).await;
    h.wait_state(&instance_off.uuid, "heartbeating", 5 * SEC)
        .await;

    let (code, answer) = http(socket, "GET", "/v1/reporting", "").await;
    assert_eq!((code, &answer["enabled"]), (200, &true.into()));
    let (code, answer) = http(socket, "PUT", "/v1/reporting", r#"{"enabled": false}"#).await;
    assert_eq!((code, &answer["enabled"]), (200, &false.into()));
    host_off.set_mode(Mode::Frozen);
    h.wait_state(&host_off.uuid, "lost", 10 * SEC).await;
    tokio::time::sleep(5 * SEC).await;
    assert_eq!(h.events(&host_off.uuid, EventKind::HeartbeatLost).len(), 1);
    assert!(h
        .events(&host_off.uuid, EventKind::RecoveryStarted)
        .is_empty());
    assert!(h.hypervisor.calls().is_empty());

    http(socket, "PUT", "/v1/reporting", r#"{"enabled": true}"#).await;
    let path = format!("/v1/instances/{}/reporting", instance_off.uuid);
    let (code, status) = http(socket, "PUT", &path, r#"{"enabled": false}"#).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["reporting_enabled"], false);
    instance_off.set_mode(Mode::Frozen);
    h.wait_state(&instance_off.uuid, "lost", 10 * SEC).await;
    tokio::time::sleep(5 * SEC).await;
    assert_eq!(
        h.events(&instance_off.uuid, EventKind::HeartbeatLost).len(),
        1
    );
    assert!(h
        .events(&instance_off.uuid, EventKind::RecoveryStarted)
        .is_empty());
    assert!(h.hypervisor.calls().is_empty());

    // Switched back on, a loss is acted on again.
    let (_, status) = http(socket, "PUT", &path, r#"{"enabled": true}"#).await;
    assert_eq!(status["reporting_enabled"], true);
    let control = h.guest(3, 1000);
    h.wait_state(&control.uuid, "heartbeating", 5 * SEC).await;
    control.set_mode(Mode::Frozen);
    h.wait_state(&control.uuid, "lost", 10 * SEC).await;
    tokio::time::sleep(SEC).await;
    assert_eq!(h.hypervisor.calls_for(&control.uuid), [Action::Reboot]);
    assert_eq!(h.hypervisor.calls().len(), 1);
}

#[tokio::test]
async fn reporting_requests_are_checked() {
    let h = Harness::start(|_| {});
    let socket = &h.config.api_socket;
    tether_testkit::wait_for("the API socket", 5 * SEC, || socket.exists()).await;
    for body in [
        "",
        "{}",
        r#"{"enabled": "no"}"#,
        r#"{"enabled": true, "x": 1}"#,
    ] {
        let (code, answer) = http(socket, "PUT", "/v1/reporting", body).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
    }
    let (code, answer) = http(
        socket,
        "PUT",
        "/v1/instances/nope/reporting",
        r#"{"enabled": false}"#,
    )
    .await;
    assert_eq!(code, 404, "{answer}");
    let (_, answer) = http(socket, "GET", "/v1/reporting", "").await;
    assert_eq!(answer["enabled"], true, "a refused request changes nothing");
}
