//! The controller link against a controller double on real loopback sockets, on a paused
//! clock: registration with the full state, in-order delivery with contiguous seqs, back-off
//! while the controller is down, agent and controller restarts, 409/404/401 answers, and a
//! torn journal line at start. In every case the double's copy must equal the journal.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::time::Duration;

use common::controller_double::{free_addr, ControllerDouble};
use common::{link_to, Harness, HOST};
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);
const TOKEN: &str = "s3cret-token";

/// Waits until the double holds exactly the journal's lines, then returns them.
async fn wait_delivered(h: &Harness, double: &ControllerDouble, within: Duration) -> Vec<Value> {
    let journal = || common::read_journal(&h.config.journal);
    tether_testkit::wait_for("the controller holds the journal", within, || {
        let copy = double.host(HOST).events;
        !copy.is_empty() && copy == journal()
    })
    .await;
    journal()
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(start_paused = true)]
async fn the_agent_registers_its_instances_then_sends_its_journal_in_order() {
    let double = ControllerDouble::start(TOKEN).await;
    let mut h = Harness::prepare(|c| link_to(c, &double.url(), TOKEN));
    let guest = h.guest(1, 1000);
    h.restart_agent();
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    let journal = wait_delivered(&h, &double, 10 * SEC).await;
    assert_eq!(
        seqs(&journal),
        (1..=journal.len() as u64).collect::<Vec<_>>()
    );
    assert!(journal.iter().any(|e| e["event"] == "heartbeat_started"));

    let copy = double.host(HOST);
    assert_eq!(copy.registrations.len(), 1);
    let registration = &copy.registrations[0];
    assert_eq!(registration["host"], HOST);
    let api_url = registration["api_url"].as_str().unwrap();
    assert!(api_url.starts_with("http://127.0.0.1:") && !api_url.ends_with(":0"));
    let instances = registration["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{registration}");
    assert_eq!(instances[0]["uuid"], guest.uuid.as_str());
    assert_eq!(double.answers(409) + double.answers(500), 0);

    // New events follow as they are written.
    guest.set_mode(common::Mode::Frozen);
    h.wait_state(&guest.uuid, "lost", 10 * SEC).await;
    let journal = wait_delivered(&h, &double, 10 * SEC).await;
    assert!(journal.iter().any(|e| e["event"] == "heartbeat_lost"));
    h.stop_agent().await;
}

#[tokio::test(start_paused = true)]
async fn everything_is_delivered_once_a_controller_that_was_down_comes_up() {
    let addr = free_addr();
    let mut h = Harness::prepare(|c| link_to(c, &format!("http://{addr}"), TOKEN));
    let guest = h.guest(2, 1000);
    h.restart_agent();
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    tokio::time::sleep(20 * SEC).await; // several failed attempts, with back-off
    let state = Default::default();
    let double = ControllerDouble::start_on(addr, state).await;
    double.set_token(TOKEN);
    let journal = wait_delivered(&h, &double, 60 * SEC).await;
    assert_eq!(double.host(HOST).registrations.len(), 1);
    assert!(!journal.is_empty());
    h.stop_agent().await;
}

#[tokio::test(start_paused = true)]
async fn an_agent_restart_continues_the_seqs_with_nothing_lost_or_sent_twice() {
    let mut double = ControllerDouble::start(TOKEN).await;
    let mut h = Harness::prepare(|c| link_to(c, &double.url(), TOKEN));
    let guest = h.guest(3, 1000);
    h.restart_agent();
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    let before = wait_delivered(&h, &double, 10 * SEC).await.len();

    // The controller goes away; the agent restarts and journals while it is away.
    double.stop().await;
    h.stop_agent().await;
    h.restart_agent();
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    assert!(common::read_journal(&h.config.journal).len() > before);
    let double = ControllerDouble::start_on(double.addr, double.state.clone()).await;
    let journal = wait_delivered(&h, &double, 60 * SEC).await;

    assert_eq!(
        seqs(&journal),
        (1..=journal.len() as u64).collect::<Vec<_>>()
    );
    let copy = double.host(HOST);
    assert_eq!(copy.registrations.len(), 2);
    let instances = copy.registrations[1]["instances"].as_array().unwrap();
    assert_eq!(instances[0]["uuid"], guest.uuid.as_str());
    let sent: Vec<u64> = double.state.lock().unwrap().batches.concat();
    assert_eq!(sent, seqs(&journal), "every event sent once, in order");
    h.stop_agent().await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_controller_that_lacks_events_gets_them_replayed() {
    let mut double = ControllerDouble::start(TOKEN).await;
    let mut h = Harness::prepare(|c| link_to(c, &double.url(), TOKEN));
    let guests: Vec<_> = (10..13).map(|n| h.guest(n, 1000)).collect();
    h.restart_agent();
    for guest in &guests {
        h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    }
    let journal = wait_delivered(&h, &double, 10 * SEC).await;
    assert!(journal.len() >= 6, "{journal:?}");

    double.stop().await;
    let mut double = ControllerDouble::start_on(double.addr, double.state.clone()).await;
    double.set_acked(HOST, 3);
    let sent_before = double.state.lock().unwrap().batches.len();
    let late = h.guest(13, 1000); // a new event makes the agent talk to the controller
    h.wait_state(&late.uuid, "heartbeating", 5 * SEC).await;
    let journal = wait_delivered(&h, &double, 60 * SEC).await;
    let batches = double.state.lock().unwrap().batches[sent_before..].concat();
    assert!(batches.contains(&4), "replayed from 4: {batches:?}");
    assert_eq!(seqs(&double.host(HOST).events), seqs(&journal));
    double.stop().await;
    h.stop_agent().await;
}

#[tokio::test(start_paused = true)]
async fn a_gap_is_resent_from_the_acked_seq_and_an_unknown_host_registers_again() {
    let double = ControllerDouble::start(TOKEN).await;
    let mut h = Harness::prepare(|c| link_to(c, &double.url(), TOKEN));
    let guest = h.guest(20, 1000);
    h.restart_agent();
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    wait_delivered(&h, &double, 10 * SEC).await;

    double.set_acked(HOST, 1); // as if the controller had lost the rest without restarting
    let second = h.guest(21, 1000);
    h.wait_state(&second.uuid, "heartbeating", 5 * SEC).await;
    wait_delivered(&h, &double, 10 * SEC).await;
    assert!(double.answers(409) >= 1);
    assert_eq!(
        double.host(HOST).registrations.len(),
        1,
        "a gap needs no registration"
    );

    double.forget(HOST);
    let third = h.guest(22, 1000);
    h.wait_state(&third.uuid, "heartbeating", 5 * SEC).await;
    wait_delivered(&h, &double, 30 * SEC).await;
    assert!(double.answers(404) >= 1);
    let copy = double.host(HOST);
    assert_eq!(copy.registrations.len(), 2);
    assert_eq!(
        copy.registrations[1]["instances"].as_array().unwrap().len(),
        3
    );
    h.stop_agent().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_token_is_retried_slowly_without_stopping_the_agent() {
    let double = ControllerDouble::start("the-right-token").await;
    let mut h = Harness::prepare(|c| link_to(c, &double.url(), TOKEN));
    let guest = h.guest(30, 1000);
    h.restart_agent();
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    tokio::time::sleep(95 * SEC).await;
    let refused = double.answers(401);
    assert!((2..=5).contains(&refused), "retried slowly: {refused}");
    assert!(double.host(HOST).events.is_empty());
    assert_eq!(
        h.state(&guest.uuid),
        "heartbeating",
        "the agent keeps working"
    );

    double.set_token(TOKEN); // the operator fixes the token at the controller
    wait_delivered(&h, &double, 60 * SEC).await;
    h.stop_agent().await;
}

#[tokio::test(start_paused = true)]
async fn a_torn_last_journal_line_is_skipped_and_the_seq_continues() {
    let double = ControllerDouble::start(TOKEN).await;
    let mut h = Harness::prepare(|c| link_to(c, &double.url(), TOKEN));
    let good = |seq: u64| {
        format!(
            "{{\"seq\":{seq},\"ts\":\"2026-01-02T03:04:05.678Z\",\"instance\":\"x\",\
             \"event\":\"guest_exited\"}}\n"
        )
    };
    let text = good(1) + &good(2) + "{\"seq\":3,\"ts\":\"2026-01-02T03:0";
    std::fs::write(&h.config.journal, text).unwrap();
    let guest = h.guest(40, 1000);
    h.restart_agent();
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;

    let lines = || {
        let text = std::fs::read_to_string(&h.config.journal).unwrap();
        let parsed: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        parsed
    };
    tether_testkit::wait_for("delivered", 10 * SEC, || {
        let copy = double.host(HOST).events;
        copy.len() > 2 && copy == lines()
    })
    .await;
    let journal = lines();
    assert_eq!(
        seqs(&journal),
        (1..=journal.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(
        journal[2]["instance"],
        guest.uuid.as_str(),
        "3 is the next event"
    );
    let text = std::fs::read_to_string(&h.config.journal).unwrap();
    assert!(
        text.contains("\"ts\":\"2026-01-02T03:0\n"),
        "the torn line is kept apart"
    );
    h.stop_agent().await;
}
