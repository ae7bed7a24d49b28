//! Recoveries left to the controller, on a paused clock with a controller double on real
//! loopback sockets: a failure is journaled as `recovery_deferred` and nothing is done until
//! the controller orders it through `POST /v1/instances/{uuid}/recover`; stale orders and
//! give-ups; and an agent cut off from the controller recovers the guest itself.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::time::Duration;

use common::controller_double::ControllerDouble;
use common::{http, link_to, Harness, Mode, HOST};
use tether_host::config::RecoveryMode;
use tether_host::journal::EventKind;
use tether_hypervisor::Action;

const SEC: Duration = Duration::from_secs(1);
const TOKEN: &str = "s3cret-token";

async fn linked(double: &ControllerDouble, mode: RecoveryMode) -> Harness {
    let url = double.url();
    Harness::start(|c| {
        link_to(c, &url, TOKEN);
        c.recovery = mode;
        c.recovery_wait_secs = 3;
    })
}

/// Waits until the double holds the whole journal.
async fn wait_delivered(h: &Harness, double: &ControllerDouble) {
    tether_testkit::wait_for("the controller holds the journal", 10 * SEC, || {
        double.host(HOST).events == h.journal()
    })
    .await;
}

async fn order(h: &Harness, uuid: &str, body: &str) -> (u16, serde_json::Value) {
    let path = format!("/v1/instances/{uuid}/recover");
    http(&h.config.api_socket, "POST", &path, body).await
}

const REBOOT: &str = r#"{"action":"reboot","cause":"heartbeat_lost"}"#;

#[tokio::test(start_paused = true)]
async fn a_loss_waits_for_the_controller_s_order() {
    let double = ControllerDouble::start(TOKEN).await;
    let h = linked(&double, RecoveryMode::Auto).await;
    let guest = h.guest(1, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    wait_delivered(&h, &double).await;

    guest.set_mode(Mode::Frozen);
    h.wait_state(&guest.uuid, "lost", 5 * SEC).await;
    wait_delivered(&h, &double).await;
    let deferred = h.events(&guest.uuid, EventKind::RecoveryDeferred);
    assert_eq!(deferred.len(), 1, "{:?}", h.journal());
    assert_eq!(deferred[0]["action"], "reboot");
    assert_eq!(deferred[0]["cause"], "heartbeat_lost");
    tokio::time::sleep(20 * SEC).await;
    assert!(
        h.hypervisor.calls().is_empty(),
        "the agent acted on its own"
    );
    assert!(h.events(&guest.uuid, EventKind::RecoveryStarted).is_empty());

    let (status, body) = order(&h, &guest.uuid, REBOOT).await;
    assert_eq!(
        (status, &body["outcome"]),
        (202, &"started".into()),
        "{body}"
    );
    tether_testkit::wait_for("the reboot", 5 * SEC, || {
        h.hypervisor.calls_for(&guest.uuid) == [Action::Reboot]
    })
    .await;
    let started = h.events(&guest.uuid, EventKind::RecoveryStarted);
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["by"], "controller");

    let (status, body) = order(&h, "no-such-instance", REBOOT).await;
    assert_eq!((status, &body["error"]["code"]), (404, &"not_found".into()));
    let (status, body) = order(&h, &guest.uuid, r#"{"action":"pause"}"#).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &"bad_request".into())
    );
}

#[tokio::test(start_paused = true)]
async fn orders_that_no_longer_fit_are_refused_and_give_up_is_recorded() {
    let double = ControllerDouble::start(TOKEN).await;
    let h = linked(&double, RecoveryMode::Auto).await;
    let guest = h.guest(2, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    let (status, body) = order(&h, &guest.uuid, REBOOT).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &"stale".into()),
        "{body}"
    );

    guest.set_mode(Mode::Frozen);
    h.wait_state(&guest.uuid, "lost", 5 * SEC).await;
    let give_up =
        r#"{"action":"reboot","cause":"heartbeat_lost","give_up":"3 recoveries within 3600 s"}"#;
    let (status, body) = order(&h, &guest.uuid, give_up).await;
    assert_eq!(
        (status, &body["outcome"]),
        (200, &"given_up".into()),
        "{body}"
    );
    h.wait_state(&guest.uuid, "unrecoverable", 2 * SEC).await;
    let marked = h.events(&guest.uuid, EventKind::Unrecoverable);
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0]["reason"], "3 recoveries within 3600 s");
    assert!(h.hypervisor.calls().is_empty());

    // The guest comes back by itself: it is no longer unrecoverable.
    guest.set_mode(Mode::Healthy);
    h.wait_state(&guest.uuid, "heartbeating", 10 * SEC).await;
}

#[tokio::test(start_paused = true)]
async fn an_agent_cut_off_from_the_controller_recovers_the_guest_itself() {
    let double = ControllerDouble::start(TOKEN).await;
    let h = linked(&double, RecoveryMode::Auto).await;
    let guest = h.guest(3, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    wait_delivered(&h, &double).await;

    // The controller fails just after the first miss reached it: the loss is deferred while
    // the link still works, then taken back when the link cannot deliver it.
    guest.set_mode(Mode::Frozen);
    tether_testkit::wait_for("the miss reaches the controller", 5 * SEC, || {
        let events = double.host(HOST).events;
        events.iter().any(|e| e["event"] == "heartbeat_missed")
    })
    .await;
    double.state.lock().unwrap().fail_next = u32::MAX;
    h.wait_state(&guest.uuid, "lost", 5 * SEC).await;
    assert_eq!(h.events(&guest.uuid, EventKind::RecoveryDeferred).len(), 1);
    tether_testkit::wait_for("the local reboot", 10 * SEC, || {
        h.hypervisor.calls_for(&guest.uuid) == [Action::Reboot]
    })
    .await;
    let started = h.events(&guest.uuid, EventKind::RecoveryStarted);
    assert_eq!(started.len(), 1);
    assert!(started[0].get("by").is_none(), "{:?}", started[0]);

    // A late order for the same failure does nothing.
    let (status, body) = order(&h, &guest.uuid, REBOOT).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &"stale".into()),
        "{body}"
    );
    assert_eq!(h.hypervisor.calls_for(&guest.uuid), [Action::Reboot]);
}

#[tokio::test(start_paused = true)]
async fn local_mode_recovers_at_once_and_controller_mode_never_alone() {
    let mut double = ControllerDouble::start(TOKEN).await;
    let local = linked(&double, RecoveryMode::Local).await;
    let guest = local.guest(4, 1000);
    local.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    guest.set_mode(Mode::Frozen);
    tether_testkit::wait_for("the local reboot", 5 * SEC, || {
        local.hypervisor.calls_for(&guest.uuid) == [Action::Reboot]
    })
    .await;
    assert!(local
        .events(&guest.uuid, EventKind::RecoveryDeferred)
        .is_empty());

    let strict = linked(&double, RecoveryMode::Controller).await;
    let guest = strict.guest(5, 1000);
    strict
        .wait_state(&guest.uuid, "heartbeating", 5 * SEC)
        .await;
    double.stop().await;
    guest.set_mode(Mode::Frozen);
    strict.wait_state(&guest.uuid, "lost", 5 * SEC).await;
    tokio::time::sleep(30 * SEC).await;
    assert!(strict.hypervisor.calls().is_empty());
    assert_eq!(
        strict
            .events(&guest.uuid, EventKind::RecoveryDeferred)
            .len(),
        1
    );
}
