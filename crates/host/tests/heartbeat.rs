//! The host agent against scripted guest doubles on real UNIX sockets, on a paused clock:
//! steady state, hangs, unhealthy answers, the recovery limit, exits and agent restarts.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::time::Duration;

use common::{uuid, Harness, Mode};
use tether_host::journal::EventKind;
use tether_hypervisor::Action;
use tether_proto::CorrectiveAction;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn fifty_guests_at_one_second_never_miss() {
    let h = Harness::start(|_| {});
    let early: Vec<_> = (0..25).map(|n| h.guest(n, 1000)).collect();
    tokio::time::sleep(SEC).await;
    let late: Vec<_> = (25..50).map(|n| h.guest(n, 1000)).collect();
    for n in 0..50 {
        h.wait_state(&uuid(n), "heartbeating", 2 * SEC).await;
    }
    tokio::time::sleep(60 * SEC).await;
    for guest in early.iter().chain(&late) {
        let s = h.status(&guest.uuid).unwrap();
        assert_eq!(s.state.to_string(), "heartbeating", "{s:?}");
        assert_eq!((s.misses_total, s.recoveries), (0, 0), "{s:?}");
        assert!(s.challenges >= 60, "{s:?}");
        assert_eq!(s.interval_ms, Some(1000));
        assert!(guest.log().challenges.iter().all(|(_, answered)| *answered));
    }
    assert!(h.hypervisor.calls().is_empty());
    let journal = h.journal();
    let failures = [
        "heartbeat_missed",
        "heartbeat_lost",
        "recovery_started",
        "protocol_error",
    ];
    assert!(journal
        .iter()
        .all(|e| !failures.contains(&e["event"].as_str().unwrap())));
    let started = journal
        .iter()
        .filter(|e| e["event"] == "heartbeat_started")
        .count();
    assert_eq!(started, 50);
}

/// Heartbeats a guest, then hangs it and checks the exact instant of the loss.
async fn loss_after_exactly(threshold: u32) {
    let h = Harness::start(|c| c.miss_threshold = threshold);
    let guest = h.guest(1, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 2 * SEC).await;
    tokio::time::sleep(3 * SEC + 500 * MS).await;
    guest.set_mode(Mode::Frozen);
    common_wait(&guest).await;
    let first_unanswered = guest.log().challenges.iter().find(|(_, a)| !a).unwrap().0;
    let loss_at = first_unanswered + (threshold + 1) * SEC;
    tokio::time::sleep_until(loss_at - MS).await;
    assert!(h.events(&guest.uuid, EventKind::HeartbeatLost).is_empty());
    assert_ne!(h.state(&guest.uuid), "lost");
    assert!(h.hypervisor.calls().is_empty());
    let missed = h.events(&guest.uuid, EventKind::HeartbeatMissed);
    assert_eq!(missed.len() as u32, threshold);
    tokio::time::sleep_until(loss_at + MS).await;
    let lost = h.events(&guest.uuid, EventKind::HeartbeatLost);
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0]["misses"], threshold + 1);
    assert_eq!(lost[0]["action"], "reboot");
    assert_eq!(h.hypervisor.calls_for(&guest.uuid), [Action::Reboot]);
    assert_eq!(h.events(&guest.uuid, EventKind::RecoveryDone).len(), 1);
    // Frozen, the guest never re-inits: no further action however long we wait.
    tokio::time::sleep(120 * SEC).await;
    assert_eq!(h.hypervisor.calls_for(&guest.uuid), [Action::Reboot]);
    assert_eq!(h.status(&guest.uuid).unwrap().recoveries, 1);
}

async fn common_wait(guest: &common::GuestDouble) {
    tether_testkit::wait_for("a challenge goes unanswered", 3 * SEC, || {
        guest.log().challenges.iter().any(|(_, answered)| !answered)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn hang_is_lost_after_two_intervals_with_threshold_one() {
    loss_after_exactly(1).await;
}

#[tokio::test(start_paused = true)]
async fn hang_is_lost_after_four_intervals_with_threshold_three() {
    loss_after_exactly(3).await;
}

#[tokio::test(start_paused = true)]
async fn unhealthy_guest_is_recovered_once_despite_repeated_reports() {
    let h = Harness::start(|_| {});
    let guest = h.guest(2, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 2 * SEC).await;
    let reason = "application check failed: disk almost full".to_owned();
    guest.set_mode(Mode::Unhealthy {
        action: CorrectiveAction::Stop,
        reason: reason.clone(),
    });
    h.wait_state(&guest.uuid, "unhealthy", 3 * SEC).await;
    tokio::time::sleep(30 * SEC).await;
    let reports = h.events(&guest.uuid, EventKind::GuestUnhealthy);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["reason"], reason.as_str());
    assert_eq!(reports[0]["action"], "stop");
    assert_eq!(h.hypervisor.calls_for(&guest.uuid), [Action::Stop]);
    let s = h.status(&guest.uuid).unwrap();
    assert_eq!(
        (s.reason.as_str(), s.recoveries, s.misses_total),
        (reason.as_str(), 1, 0)
    );
    assert_eq!(s.health.as_deref(), Some("unhealthy"));
    guest.set_mode(Mode::Healthy);
    h.wait_state(&guest.uuid, "heartbeating", 3 * SEC).await;
}

#[tokio::test(start_paused = true)]
async fn no_second_recovery_while_one_is_in_progress() {
    let h = Harness::start(|_| {});
    h.hypervisor.set_delay(30 * SEC);
    let guest = h.guest(3, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 2 * SEC).await;
    let reason = "broken".to_owned();
    guest.set_mode(Mode::UnhealthyEveryTime {
        action: CorrectiveAction::Reboot,
        reason,
    });
    h.wait_state(&guest.uuid, "recovering", 3 * SEC).await;
    tokio::time::sleep(20 * SEC).await;
    assert_eq!(h.hypervisor.calls_for(&guest.uuid), [Action::Reboot]);
    assert!(h.events(&guest.uuid, EventKind::RecoveryDone).is_empty());
    assert_eq!(
        h.status(&guest.uuid).unwrap().misses_total,
        0,
        "heartbeat went on"
    );
    tokio::time::sleep(11 * SEC).await;
    assert_eq!(h.events(&guest.uuid, EventKind::RecoveryDone).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn recoveries_past_the_limit_mark_the_guest_unrecoverable() {
    let h = Harness::start(|c| {
        c.max_recoveries = 2;
        c.recovery_window_secs = 3600;
    });
    h.hypervisor.set_fail(true);
    let guest = h.guest(4, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 2 * SEC).await;
    // Hung but still re-initialising: every cycle is acked, challenged and lost again.
    guest.set_mode(Mode::Hang);
    let what = "four losses";
    tether_testkit::wait_for(what, 120 * SEC, || {
        h.events(&guest.uuid, EventKind::HeartbeatLost).len() >= 4
    })
    .await;
    assert_eq!(
        h.hypervisor.calls_for(&guest.uuid),
        [Action::Reboot, Action::Reboot]
    );
    let failed = h.events(&guest.uuid, EventKind::RecoveryFailed);
    assert_eq!(failed.len(), 2);
    assert!(failed[0]["error"]
        .as_str()
        .unwrap()
        .contains("double told to fail"));
    let unrecoverable = h.events(&guest.uuid, EventKind::Unrecoverable);
    assert_eq!(unrecoverable.len(), 1, "journaled once");
    assert_eq!(h.state(&guest.uuid), "unrecoverable");
}

#[tokio::test(start_paused = true)]
async fn exit_is_not_a_failure() {
    let h = Harness::start(|_| {});
    let guest = h.guest(5, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 2 * SEC).await;
    guest.exit();
    h.wait_state(&guest.uuid, "exited", 2 * SEC).await;
    tokio::time::sleep(60 * SEC).await;
    assert_eq!(h.state(&guest.uuid), "exited");
    let exited = h.events(&guest.uuid, EventKind::GuestExited);
    assert_eq!(exited.len(), 1);
    assert_eq!(exited[0]["reason"], "Exiting...");
    assert!(h.events(&guest.uuid, EventKind::HeartbeatLost).is_empty());
    assert!(h.hypervisor.calls().is_empty());
    guest.restart_daemon();
    h.wait_state(&guest.uuid, "heartbeating", 2 * SEC).await;
}

#[tokio::test(start_paused = true)]
async fn an_agent_restart_causes_no_corrective_action() {
    let mut h = Harness::start(|_| {});
    let guests: Vec<_> = (10..13).map(|n| h.guest(n, 1000)).collect();
    for g in &guests {
        h.wait_state(&g.uuid, "heartbeating", 2 * SEC).await;
    }
    tokio::time::sleep(10 * SEC + 300 * MS).await;
    h.stop_agent().await;
    assert!(
        !h.config.api_socket.exists(),
        "API socket removed on shutdown"
    );
    tokio::time::sleep(2 * SEC).await;
    h.restart_agent();
    for g in &guests {
        h.wait_state(&g.uuid, "heartbeating", 10 * SEC).await;
    }
    tokio::time::sleep(60 * SEC).await;
    assert!(h.hypervisor.calls().is_empty());
    for g in &guests {
        assert!(h.events(&g.uuid, EventKind::HeartbeatLost).is_empty());
        assert_eq!(h.status(&g.uuid).unwrap().misses_total, 0);
        assert!(
            g.log().acks >= 2,
            "the guest re-initialised with the new agent"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_answer_with_none_only_records() {
    let h = Harness::start(|_| {});
    let guest = h.guest(6, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 2 * SEC).await;
    let reason = "degraded".to_owned();
    guest.set_mode(Mode::UnhealthyEveryTime {
        action: CorrectiveAction::None,
        reason,
    });
    h.wait_state(&guest.uuid, "unhealthy", 3 * SEC).await;
    tokio::time::sleep(10 * SEC).await;
    assert!(h.events(&guest.uuid, EventKind::GuestUnhealthy).is_empty());
    assert!(h.hypervisor.calls().is_empty());
    assert_eq!(h.status(&guest.uuid).unwrap().reason, "degraded");
    let _ = Instant::now();
}
