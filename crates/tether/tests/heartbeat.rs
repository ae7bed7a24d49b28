//! End-to-end heartbeat tests: the real host agent against simulated VMs that run the real
//! guest daemon, over real channel sockets and real QMP, in one process.
//!
//! Timing is never asserted here (the paused-clock tests in `tether-host` and `tether-guest`
//! pin exact instants); these tests check what happens and in which order.

mod common;

use std::path::PathBuf;

use common::{Rig, LONG};
use tether_host::GuestState;
use tether_proto::CorrectiveAction;
use tether_sim::Fault;
use tether_testkit::{temp_dir, wait_for};

fn after<'a>(events: &'a [String], marker: &str) -> &'a [String] {
    let at = events
        .iter()
        .rposition(|e| e == marker)
        .map_or(events.len(), |i| i + 1);
    &events[at..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_guests_in_steady_state_see_no_miss_and_no_action() {
    let rig = Rig::start(24, CorrectiveAction::Reboot, 1).await;
    rig.wait_all_heartbeating().await;
    // Let every guest answer ten more challenges.
    let target: Vec<u64> = rig
        .sim
        .vms()
        .iter()
        .map(|vm| rig.view().instance(vm.uuid()).map_or(0, |s| s.challenges) + 10)
        .collect();
    wait_for("ten more challenges each", LONG, || {
        rig.sim.vms().iter().zip(&target).all(|(vm, t)| {
            rig.view()
                .instance(vm.uuid())
                .is_some_and(|s| s.challenges >= *t)
        })
    })
    .await;
    for vm in rig.sim.vms() {
        let status = rig.view().instance(vm.uuid()).expect("known");
        assert_eq!(status.misses_total, 0, "{} missed", vm.name());
        assert_eq!(status.recoveries, 0, "{} was acted on", vm.name());
        assert_eq!(vm.resets(), 0);
    }
    assert_eq!(rig.count("heartbeat_missed"), 0);
    assert_eq!(rig.count("recovery_started"), 0);
    assert_eq!(rig.count("heartbeat_started"), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_guest_is_lost_after_threshold_plus_one_misses_and_reset_through_qmp() {
    for threshold in [1, 2] {
        let rig = Rig::start(2, CorrectiveAction::Reboot, threshold).await;
        rig.wait_all_heartbeating().await;
        let (hung, healthy) = (rig.vm(0), rig.vm(1));
        hung.set_fault(Fault::Hang);

        wait_for("the hung VM is reset", LONG, || hung.resets() == 1).await;
        assert!(
            hung.qmp_log().iter().any(|c| c.contains("system_reset")),
            "{:?}",
            hung.qmp_log()
        );
        wait_for("the reset guest heartbeats again", LONG, || {
            rig.state(hung) == Some(GuestState::Heartbeating)
        })
        .await;

        let events = rig.events_of(hung);
        let before_loss: Vec<_> = events
            .iter()
            .take_while(|e| *e != "heartbeat_lost")
            .cloned()
            .collect();
        let missed = after(&before_loss, "heartbeat_started")
            .iter()
            .filter(|e| *e == "heartbeat_missed")
            .count();
        assert_eq!(
            missed, threshold as usize,
            "misses before the loss: {events:?}"
        );
        let tail = after(&events, "heartbeat_missed");
        assert_eq!(
            tail,
            [
                "heartbeat_lost",
                "recovery_started",
                "recovery_done",
                "heartbeat_started"
            ],
            "{events:?}"
        );
        assert_eq!(
            rig.events_of(healthy),
            ["channel_connected", "heartbeat_started"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_guest_is_acted_on_once_with_its_reason() {
    // `log` leaves the VM alone, so the guest stays unhealthy and keeps saying so.
    let rig = Rig::start(1, CorrectiveAction::Log, 1).await;
    rig.wait_all_heartbeating().await;
    let vm = rig.vm(0);
    vm.set_fault(Fault::Unhealthy("disk sda is full".into()));

    wait_for("the agent records the unhealthy guest", LONG, || {
        rig.count("guest_unhealthy") == 1
    })
    .await;
    let unhealthy = rig
        .journal()
        .into_iter()
        .find(|e| e["event"] == "guest_unhealthy")
        .unwrap();
    assert_eq!(unhealthy["reason"], "disk sda is full");
    // Let the guest answer several more challenges while still unhealthy.
    let seen = rig.view().instance(vm.uuid()).unwrap().challenges;
    wait_for("five more challenges", LONG, || {
        rig.view()
            .instance(vm.uuid())
            .is_some_and(|s| s.challenges >= seen + 5)
    })
    .await;
    assert_eq!(rig.count("guest_unhealthy"), 1, "{:?}", rig.events_of(vm));
    assert_eq!(rig.count("recovery_started"), 1);
    assert_eq!(vm.resets(), 0, "a log action must not touch the VM");
    let status = rig.view().instance(vm.uuid()).unwrap();
    assert_eq!(status.reason, "disk sda is full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_vm_gets_its_channel_reconnected_and_heartbeats_again() {
    let rig = Rig::start(1, CorrectiveAction::Reboot, 1).await;
    rig.wait_all_heartbeating().await;
    let vm = rig.vm(0);

    vm.quit().await;
    wait_for("the agent sees the channel go", LONG, || {
        rig.events_of(vm)
            .contains(&"channel_disconnected".to_owned())
    })
    .await;
    vm.restart().await.expect("VM restarts");
    wait_for("the guest heartbeats again", LONG, || {
        let events = rig.events_of(vm);
        after(&events, "channel_disconnected").contains(&"heartbeat_started".to_owned())
    })
    .await;
    assert_eq!(rig.count("recovery_started"), 0, "{:?}", rig.events_of(vm));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_agent_takes_no_action_on_healthy_guests() {
    let mut rig = Rig::start(4, CorrectiveAction::Reboot, 1).await;
    rig.wait_all_heartbeating().await;
    rig.stop_agent().await;
    rig.start_agent();
    rig.wait_all_heartbeating().await;
    assert_eq!(rig.count("heartbeat_lost"), 0);
    assert_eq!(rig.count("recovery_started"), 0);
    assert!(rig.sim.vms().iter().all(|vm| vm.resets() == 0));
    // Both agents started each guest's heartbeat.
    assert_eq!(rig.count("heartbeat_started"), 8);
}

#[test]
fn paths_stay_short_enough_for_unix_sockets() {
    let dir = temp_dir();
    let longest: PathBuf = dir.path().join("channels").join(format!(
        "cgcs.heartbeat.{}.sock",
        "00000000-0000-4000-8000-000000000000"
    ));
    assert!(longest.as_os_str().len() < 108, "{}", longest.display());
}
