//! Hostile guests: each gets a `nack` or a closed channel, while a healthy guest beside them
//! keeps every heartbeat answered and the agent never acts on anyone.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::time::Duration;

use common::{GuestDouble, Harness};
use tether_host::journal::EventKind;

const SEC: Duration = Duration::from_secs(1);

fn header(msg_type: &str, version: i64) -> String {
    format!(r#""version":{version},"revision":1,"msg_type":"{msg_type}","sequence":3"#)
}

/// Starts a healthy guest and a hostile one; returns both once heartbeating.
async fn pair(h: &Harness, hostile_n: u32) -> (GuestDouble, GuestDouble) {
    let healthy = h.guest(100, 1000);
    let hostile = h.guest(hostile_n, 1000);
    h.wait_state(&healthy.uuid, "heartbeating", 2 * SEC).await;
    h.wait_state(&hostile.uuid, "heartbeating", 2 * SEC).await;
    (healthy, hostile)
}

/// The healthy guest answered every challenge and was never acted on.
fn assert_untouched(h: &Harness, healthy: &GuestDouble) {
    let s = h.status(&healthy.uuid).unwrap();
    assert_eq!(s.state.to_string(), "heartbeating");
    assert_eq!(
        (s.misses_total, s.protocol_errors, s.recoveries),
        (0, 0, 0),
        "{s:?}"
    );
    let log = healthy.log();
    assert!(log.challenges.len() >= 30, "{log:?}");
    assert!(log.challenges.iter().all(|(_, answered)| *answered));
    assert!(log.nacks.is_empty());
    assert!(h.hypervisor.calls_for(&healthy.uuid).is_empty());
}

async fn expect_nack(raw: &[u8], nack: &str) {
    let h = Harness::start(|_| {});
    let (healthy, hostile) = pair(&h, 1).await;
    hostile.send_raw(raw);
    let what = format!("nack {nack:?}");
    tether_testkit::wait_for(&what, 2 * SEC, || {
        hostile.log().nacks.iter().any(|n| n == nack)
    })
    .await;
    tokio::time::sleep(30 * SEC).await;
    assert_eq!(
        h.state(&hostile.uuid),
        "heartbeating",
        "a refused message changes nothing"
    );
    let errors = h.events(&hostile.uuid, EventKind::ProtocolError);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["reason"], nack);
    assert_untouched(&h, &healthy);
    assert!(h.hypervisor.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_oversized_line_is_nacked() {
    let mut raw = b"\n{\"version\":3,\"log_msg\":\"".to_vec();
    raw.extend(std::iter::repeat_n(b'x', 3000));
    raw.extend(b"\"}\n");
    expect_nack(&raw, "message longer than 1056 bytes").await;
}

#[tokio::test(start_paused = true)]
async fn invalid_json_is_nacked() {
    expect_nack(b"\n{\"version\":3,,}\n", "failed to parse message").await;
}

#[tokio::test(start_paused = true)]
async fn a_wrong_type_is_nacked() {
    let text = format!(
        "\n{{{},\"heartbeat_response\":\"7\",\"heartbeat_health\":\"healthy\",\
         \"corrective_action\":\"reboot\",\"log_msg\":\"\"}}\n",
        header("challenge_response", 3)
    );
    expect_nack(text.as_bytes(), "failed to parse heartbeat_response").await;
}

#[tokio::test(start_paused = true)]
async fn a_bad_version_is_nacked() {
    let text = format!("\n{{{},\"log_msg\":\"\"}}\n", header("exit", 2));
    expect_nack(text.as_bytes(), "Bad version: 2, expect version: 3").await;
}

#[tokio::test(start_paused = true)]
async fn a_host_message_from_the_guest_is_nacked() {
    let text = format!(
        "\n{{{},\"heartbeat_challenge\":1}}\n",
        header("challenge", 3)
    );
    expect_nack(text.as_bytes(), "unsupported message type: challenge").await;
}

#[tokio::test(start_paused = true)]
async fn an_unknown_type_is_nacked() {
    let text = format!("\n{{{}}}\n", header("hello", 3));
    expect_nack(text.as_bytes(), "unsupported message type: hello").await;
}

#[tokio::test(start_paused = true)]
async fn an_action_response_with_a_foreign_id_is_nacked() {
    let h = Harness::start(|_| {});
    let (healthy, hostile) = pair(&h, 2).await;
    let text = format!(
        "\n{{{},\"invocation_id\":5,\"event_type\":\"stop\",\"notification_type\":\"revocable\",\
         \"vote_result\":\"accept\",\"log_msg\":\"\"}}\n",
        header("action_response", 3)
    );
    hostile.send_raw(text.as_bytes());
    let what = "invocation id nack";
    tether_testkit::wait_for(what, 2 * SEC, || {
        hostile
            .log()
            .nacks
            .iter()
            .any(|n| n.starts_with("Invocation id mismatch. Received: 5 expect: "))
    })
    .await;
    tokio::time::sleep(30 * SEC).await;
    assert_untouched(&h, &healthy);
}

#[tokio::test(start_paused = true)]
async fn binary_garbage_is_nacked_or_closed() {
    let h = Harness::start(|_| {});
    let (healthy, hostile) = pair(&h, 3).await;
    let mut rng = fastrand::Rng::with_seed(42);
    let garbage: Vec<u8> = (0..8192).map(|_| rng.u8(..)).collect();
    hostile.send_raw(garbage);
    tether_testkit::wait_for("a nack or a closed channel", 5 * SEC, || {
        let log = hostile.log();
        !log.nacks.is_empty() || log.disconnects > 0
    })
    .await;
    tokio::time::sleep(30 * SEC).await;
    assert_untouched(&h, &healthy);
    // After the garbage the hostile guest, now well-behaved, heartbeats again.
    h.wait_state(&hostile.uuid, "heartbeating", 120 * SEC).await;
}

#[tokio::test(start_paused = true)]
async fn a_flood_closes_the_channel_and_spares_the_neighbour() {
    let h = Harness::start(|_| {});
    let (healthy, hostile) = pair(&h, 4).await;
    hostile.flood();
    tether_testkit::wait_for("flooder disconnected", 5 * SEC, || {
        hostile.log().disconnects > 0
    })
    .await;
    let closed = h.events(&hostile.uuid, EventKind::ChannelDisconnected);
    assert_eq!(closed.len(), 1);
    assert_eq!(
        closed[0]["reason"],
        "too many refused messages from the guest"
    );
    let errors = h.events(&hostile.uuid, EventKind::ProtocolError);
    assert!(
        !errors.is_empty() && errors.len() <= 5,
        "journal is rate-limited: {}",
        errors.len()
    );
    // Nacks are rate-limited (and those still queued are lost with the closed channel).
    let nacks = hostile.log().nacks.len();
    assert!(nacks <= 10, "nacks are rate-limited: {nacks}");
    tokio::time::sleep(40 * SEC).await;
    assert_untouched(&h, &healthy);
    // The flood was one connection's worth; the guest is reconnected after the back-off.
    h.wait_state(&hostile.uuid, "heartbeating", 120 * SEC).await;
    assert!(hostile.log().connections >= 2);
}

#[tokio::test(start_paused = true)]
async fn a_fast_guest_is_read_more_slowly_not_disconnected() {
    let h = Harness::start(|c| c.guest_msgs_per_sec = 5);
    let (healthy, hostile) = pair(&h, 5).await;
    // 40 valid but useless messages at once (answers to no challenge): 8 s at 5 per second.
    let line = format!(
        "\n{{{},\"heartbeat_response\":1,\"heartbeat_health\":\"healthy\",\
         \"corrective_action\":\"reboot\",\"log_msg\":\"\"}}\n",
        header("challenge_response", 3)
    );
    hostile.send_raw(line.repeat(40).into_bytes());
    tokio::time::sleep(40 * SEC).await;
    assert_eq!(hostile.log().disconnects, 0);
    // Its own answers waited behind its flood: it paid with misses, the neighbour did not.
    assert!(h.status(&hostile.uuid).unwrap().misses_total > 0);
    assert!(h.events(&hostile.uuid, EventKind::ProtocolError).is_empty());
    assert_untouched(&h, &healthy);
}
