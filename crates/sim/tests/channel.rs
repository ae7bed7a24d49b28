//! The channel relay with the real guest daemon inside, seen from a test double of the host
//! agent on the channel socket: the handshake, every fault, pause and the hung-up port.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{start, Heard, HostDouble, Qmp};
use tether_proto::{ActionNotify, EventType, Health, Message, NotificationType, VoteResult};
use tether_sim::Fault;
use tokio::time::Instant;

const QUIET: Duration = Duration::from_millis(1200);

#[tokio::test]
async fn the_guest_registers_and_answers_challenges() {
    let (_dir, sim) = start(2).await;
    for vm in sim.vms() {
        let mut host = HostDouble::connect(&vm.channel_path()).await;
        let init = host.expect_init().await;
        assert_eq!(init.name, vm.name());
        host.accept(&init, 4242).await;
        let response = host.expect_response(4242).await;
        assert_eq!(response.heartbeat_health, Health::Healthy);
        host.challenge(99).await;
        host.expect_response(99).await;
    }
}

#[tokio::test]
async fn hang_silences_the_vm_until_healed() {
    let (_dir, sim) = start(1).await;
    let vm = &sim.vms()[0];
    let (mut host, _) = HostDouble::handshake(&vm.channel_path()).await;

    vm.set_fault(Fault::Hang);
    host.challenge(2).await;
    assert_eq!(host.hear(QUIET).await, Heard::Silence);

    vm.set_fault(Fault::None);
    host.expect_response(2).await; // the held challenge is delivered and answered
}

#[tokio::test]
async fn unhealthy_reports_the_reason() {
    let (_dir, sim) = start(1).await;
    let vm = &sim.vms()[0];
    let (mut host, _) = HostDouble::handshake(&vm.channel_path()).await;

    vm.set_fault(Fault::Unhealthy("disk full".into()));
    let deadline = Instant::now() + common::PATIENCE;
    let mut challenge = 10;
    let response = loop {
        assert!(Instant::now() < deadline, "no unhealthy response");
        host.challenge(challenge).await;
        let response = host.expect_response(challenge).await;
        if response.heartbeat_health == Health::Unhealthy {
            break response;
        }
        challenge += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(response.log_msg.trim(), "disk full");
    assert_eq!(vm.fault(), Fault::Unhealthy("disk full".into()));
}

#[tokio::test]
async fn crash_leaves_the_channel_open_and_idle() {
    let (_dir, sim) = start(1).await;
    let vm = &sim.vms()[0];
    let (mut host, init) = HostDouble::handshake(&vm.channel_path()).await;

    vm.set_fault(Fault::Crash);
    host.challenge(2).await;
    assert_eq!(
        host.hear(QUIET).await,
        Heard::Silence,
        "no answer and no EOF"
    );

    // A vote request written while the guest is gone waits for the next guest.
    let notify = ActionNotify {
        invocation_id: init.invocation_id,
        event_type: EventType::Stop,
        notification_type: NotificationType::Irrevocable,
        timeout_ms: 5000,
    };
    host.send(&Message::ActionNotify(notify)).await;
    vm.set_fault(Fault::None);
    let answer = host
        .expect("action_response", |m| match m {
            Message::ActionResponse(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(answer.event_type, EventType::Stop);
    assert_eq!(answer.vote_result, VoteResult::Complete);
    host.expect_init().await;
}

#[tokio::test]
async fn slow_delays_every_answer() {
    let (_dir, sim) = start(1).await;
    let vm = &sim.vms()[0];
    let (mut host, _) = HostDouble::handshake(&vm.channel_path()).await;

    let delay = Duration::from_millis(600);
    vm.set_fault(Fault::Slow(delay));
    for challenge in [2, 3] {
        let sent = Instant::now();
        host.challenge(challenge).await;
        host.expect_response(challenge).await;
        assert!(
            sent.elapsed() >= delay,
            "answered after {:?}",
            sent.elapsed()
        );
    }
    vm.set_fault(Fault::None);
    let sent = Instant::now();
    host.challenge(4).await;
    host.expect_response(4).await;
    assert!(sent.elapsed() < delay, "still slow: {:?}", sent.elapsed());
}

#[tokio::test]
async fn a_paused_vm_relays_nothing_until_cont() {
    let (_dir, sim) = start(1).await;
    let vm = &sim.vms()[0];
    let (mut host, _) = HostDouble::handshake(&vm.channel_path()).await;
    let mut qmp = Qmp::ready(&vm.qmp_path()).await;

    qmp.call("stop").await;
    host.challenge(2).await;
    assert_eq!(host.hear(QUIET).await, Heard::Silence);
    qmp.call("cont").await;
    host.expect_response(2).await;
}

#[tokio::test]
async fn a_second_host_waits_until_the_first_leaves() {
    let (_dir, sim) = start(1).await;
    let path = sim.vms()[0].channel_path();
    let (first, _) = HostDouble::handshake(&path).await;
    let mut second = HostDouble::connect(&path).await;
    assert_eq!(second.hear(QUIET).await, Heard::Silence);

    drop(first);
    // The guest read EOF, backs off, reconnects and registers with the new host.
    let init = second.expect_init().await;
    second.accept(&init, 5).await;
    second.expect_response(5).await;
}

#[tokio::test]
async fn a_reset_clears_the_fault_and_boots_a_fresh_guest() {
    let (_dir, sim) = start(1).await;
    let vm = &sim.vms()[0];
    let (mut host, first) = HostDouble::handshake(&vm.channel_path()).await;

    vm.set_fault(Fault::Hang);
    vm.reset().unwrap();
    assert_eq!(vm.fault(), Fault::None);
    let init = host.expect_init().await;
    assert_ne!(init.invocation_id, first.invocation_id);
    host.accept(&init, 3).await;
    host.expect_response(3).await;
    assert_eq!(vm.resets(), 1);
}
