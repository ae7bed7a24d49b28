//! Lifecycle operations end to end: the host agent's operation API against simulated VMs
//! whose real guest daemon runs an event notification script, over real channel sockets
//! and real QMP. The script's behaviour is switched by files in the test's directory:
//! `reject` vetoes every vote with a reason, `slow-vote` and `slow-notice` make it overrun.
//!
//! No timing is asserted; the paused-clock tests of `tether-host` (`lifecycle`) and
//! `tether-guest` pin the exact deadlines.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Rig, INTERVAL_MS, LONG};
use tether_guest::GuestConfig;
use tether_host::operations::OperationRecord;
use tether_host::GuestState;
use tether_proto::{CorrectiveAction, EventType};
use tether_sim::SimVm;
use tether_testkit::wait_for;

/// The event script: records each call, then acts on the switch files beside it.
const SCRIPT: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$1 $2" >> "$dir/calls"
if [ "$1" = revocable ] && [ -e "$dir/reject" ]; then
    echo "maintenance window closed for $2"
    exit 1
fi
if [ "$1" = revocable ] && [ -e "$dir/slow-vote" ]; then sleep 30; fi
if [ "$1" = irrevocable ] && [ -e "$dir/slow-notice" ]; then sleep 30; fi
echo "ready for $2"
exit 0
"#;

/// One VM whose guest runs [`SCRIPT`]; its boot takes long enough (1.5 s) for a reboot to
/// outlast the loss threshold at 400 ms.
async fn rig_with_script(script: bool) -> Rig {
    let guest = GuestConfig {
        heartbeat_interval_ms: INTERVAL_MS,
        corrective_action: CorrectiveAction::Reboot,
        vote_secs: 2,
        shutdown_notice_secs: 2,
        suspend_notice_secs: 2,
        resume_notice_secs: 2,
        restart_secs: 20,
        ..GuestConfig::default()
    };
    let boot = Duration::from_millis(1500);
    let rig = Rig::with_guest(1, 1, boot, |dir| {
        let path = dir.join("event-script");
        std::fs::write(&path, SCRIPT).expect("write the script");
        make_executable(&path);
        GuestConfig {
            event_notification_script: script.then_some(path),
            ..guest
        }
    })
    .await;
    rig.wait_all_heartbeating().await;
    rig
}

/// Whether the VM's monitor was sent `command`.
fn ran(vm: &SimVm, command: &str) -> bool {
    vm.qmp_log().iter().any(|c| c == command)
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn switch(rig: &Rig, name: &str) {
    std::fs::write(rig.dir.path().join(name), b"").expect("switch file");
}

fn calls(rig: &Rig) -> Vec<String> {
    std::fs::read_to_string(rig.dir.path().join("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Starts `event` on the rig's VM and waits until the operation has ended.
async fn operate(rig: &Rig, event: EventType) -> OperationRecord {
    let vm = rig.vm(0);
    let id = rig
        .operations()
        .begin(vm.uuid(), event)
        .expect("the operation starts");
    wait_for("the operation ends", LONG, || {
        rig.operations()
            .get(&id)
            .is_some_and(|op| op.state.is_final())
    })
    .await;
    rig.operations().get(&id).expect("still remembered")
}

fn steps(op: &OperationRecord) -> Vec<(&'static str, &'static str)> {
    op.steps.iter().map(|s| (s.step, s.outcome)).collect()
}

fn state_name(op: &OperationRecord) -> &'static str {
    op.state.as_str()
}

fn no_corrective_action(rig: &Rig, vm: &SimVm) {
    let events = rig.events_of(vm);
    assert!(
        !events
            .iter()
            .any(|e| e == "heartbeat_lost" || e == "recovery_started"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vetoed_reboot_leaves_the_vm_alone_and_says_why() {
    let rig = rig_with_script(true).await;
    switch(&rig, "reject");
    let op = operate(&rig, EventType::Reboot).await;
    assert_eq!(state_name(&op), "rejected");
    assert_eq!(
        op.reason.as_deref(),
        Some("maintenance window closed for reboot")
    );
    assert_eq!(steps(&op), [("vote", "reject")]);
    assert_eq!(rig.vm(0).resets(), 0);
    assert!(!ran(rig.vm(0), "system_reset"));
    assert_eq!(calls(&rig), ["revocable reboot"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_goes_through_with_notice_and_no_false_loss() {
    let rig = rig_with_script(true).await;
    let vm = rig.vm(0);
    let op = operate(&rig, EventType::Reboot).await;
    assert_eq!(state_name(&op), "done", "{op:?}");
    assert_eq!(
        steps(&op),
        [("vote", "accept"), ("notify", "complete"), ("act", "done")]
    );
    assert_eq!(vm.resets(), 1);
    assert_eq!(calls(&rig), ["revocable reboot", "irrevocable reboot"]);
    // The reboot outlasts two intervals: the loss is held, then the guest comes back.
    wait_for("the rebooted guest heartbeats again", LONG, || {
        rig.state(vm) == Some(GuestState::Heartbeating)
            && rig
                .events_of(vm)
                .iter()
                .filter(|e| *e == "heartbeat_started")
                .count()
                >= 2
    })
    .await;
    no_corrective_action(&rig, vm);
    assert_eq!(vm.resets(), 1, "no second reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_heartbeat_and_unpause_post_notifies() {
    let rig = rig_with_script(true).await;
    let vm = rig.vm(0);
    let op = operate(&rig, EventType::Pause).await;
    assert_eq!(state_name(&op), "done", "{op:?}");
    assert!(ran(vm, "stop"));
    assert_eq!(rig.state(vm), Some(GuestState::Held));
    // Well past the loss time: still held, nothing done to the VM.
    tokio::time::sleep(Duration::from_millis(u64::from(INTERVAL_MS) * 5)).await;
    assert_eq!(rig.state(vm), Some(GuestState::Held));
    no_corrective_action(&rig, vm);

    let op = operate(&rig, EventType::Unpause).await;
    assert_eq!(state_name(&op), "done", "{op:?}");
    assert_eq!(
        steps(&op),
        [
            ("act", "done"),
            ("wait_guest", "done"),
            ("post_notify", "complete")
        ]
    );
    assert_eq!(
        calls(&rig),
        [
            "revocable pause",
            "irrevocable pause",
            "irrevocable unpause"
        ]
    );
    assert_eq!(rig.state(vm), Some(GuestState::Heartbeating));
    no_corrective_action(&rig, vm);
    assert_eq!(vm.resets(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrunning_voters_and_notice_handlers_do_not_hold_an_operation_back() {
    let rig = rig_with_script(true).await;
    switch(&rig, "slow-vote");
    switch(&rig, "slow-notice");
    let op = operate(&rig, EventType::Suspend).await;
    assert_eq!(state_name(&op), "done", "{op:?}");
    let outcomes: Vec<&str> = op.steps.iter().map(|s| s.outcome).collect();
    assert_eq!(outcomes.len(), 3, "{op:?}");
    assert!(["timeout", "accept"].contains(&outcomes[0]), "{op:?}");
    assert!(["timeout", "complete"].contains(&outcomes[1]), "{op:?}");
    assert_eq!(outcomes[2], "done");
    assert!(ran(rig.vm(0), "stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_with_nothing_registered_completes_at_once() {
    let rig = rig_with_script(false).await;
    let op = operate(&rig, EventType::Stop).await;
    assert_eq!(state_name(&op), "done", "{op:?}");
    assert_eq!(
        steps(&op),
        [
            ("vote", "complete"),
            ("notify", "complete"),
            ("act", "done")
        ]
    );
    for step in &op.steps[..2] {
        assert!(step.took_ms < 1000, "answered at once: {op:?}");
    }
    assert!(ran(rig.vm(0), "quit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_is_voted_noticed_and_post_noticed_with_nothing_acted() {
    let rig = rig_with_script(true).await;
    let op = operate(&rig, EventType::LiveMigrateBegin).await;
    assert_eq!(steps(&op), [("vote", "accept"), ("notify", "complete")]);
    let op = operate(&rig, EventType::LiveMigrateEnd).await;
    assert_eq!(steps(&op), [("post_notify", "complete")], "{op:?}");
    assert_eq!(
        calls(&rig),
        [
            "revocable live_migrate_begin",
            "irrevocable live_migrate_begin",
            "irrevocable live_migrate_end"
        ]
    );
    for command in ["stop", "cont", "system_reset", "quit"] {
        assert!(!ran(rig.vm(0), command), "{:?}", rig.vm(0).qmp_log());
    }
}

/// Each row of the event table, in an order one VM can go through: what the guest's script
/// is told, and whether the host acts.
const TABLE: [(EventType, &[&str], bool); 12] = [
    (
        EventType::Reboot,
        &["revocable reboot", "irrevocable reboot"],
        true,
    ),
    (
        EventType::Pause,
        &["revocable pause", "irrevocable pause"],
        true,
    ),
    (EventType::Unpause, &["irrevocable unpause"], true),
    (
        EventType::Suspend,
        &["revocable suspend", "irrevocable suspend"],
        true,
    ),
    (EventType::Resume, &["irrevocable resume"], true),
    (
        EventType::ResizeBegin,
        &["revocable resize_begin", "irrevocable resize_begin"],
        false,
    ),
    (EventType::ResizeEnd, &["irrevocable resize_end"], false),
    (
        EventType::LiveMigrateBegin,
        &[
            "revocable live_migrate_begin",
            "irrevocable live_migrate_begin",
        ],
        false,
    ),
    (
        EventType::LiveMigrateEnd,
        &["irrevocable live_migrate_end"],
        false,
    ),
    (
        EventType::ColdMigrateBegin,
        &[
            "revocable cold_migrate_begin",
            "irrevocable cold_migrate_begin",
        ],
        false,
    ),
    (
        EventType::ColdMigrateEnd,
        &["irrevocable cold_migrate_end"],
        false,
    ),
    (
        EventType::Stop,
        &["revocable stop", "irrevocable stop"],
        true,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_the_table_runs_as_written_without_a_corrective_action() {
    let rig = rig_with_script(true).await;
    let vm = rig.vm(0);
    let mut told = 0;
    for (event, calls_expected, acts) in TABLE {
        if ![EventType::Unpause, EventType::Resume].contains(&event) {
            wait_for("the guest heartbeats", LONG, || {
                rig.state(vm) == Some(GuestState::Heartbeating)
            })
            .await;
        }
        let op = operate(&rig, event).await;
        assert_eq!(state_name(&op), "done", "{event}: {op:?}");
        let seen = calls(&rig);
        assert_eq!(&seen[told..], calls_expected, "{event}: {op:?}");
        told = seen.len();
        let acted = op.steps.iter().any(|s| s.step == "act");
        assert_eq!(acted, acts, "{event}: {op:?}");
        for step in &op.steps {
            let expected = match step.step {
                "vote" => "accept",
                "notify" | "post_notify" => "complete",
                _ => "done",
            };
            assert_eq!(step.outcome, expected, "{event}: {op:?}");
        }
    }
    no_corrective_action(&rig, vm);
    assert_eq!(vm.resets(), 1);
    for command in ["system_reset", "stop", "cont", "quit"] {
        assert!(ran(vm, command), "{command}: {:?}", vm.qmp_log());
    }
}

/// An application inside a VM, on the guest daemon's API socket: votes no to a stop, with a
/// reason, and accepts everything else; runs on its own thread until told to stop.
struct VetoingApp {
    registered: std::sync::Arc<std::sync::atomic::AtomicBool>,
    told: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct AppHandler {
    registered: bool,
    pending: Vec<(u32, api::Event, api::Notify)>,
}

use guest_heartbeat_api as api;

impl api::Handler for AppHandler {
    fn register_state(&mut self, registered: bool) {
        self.registered = registered;
    }

    fn health_check(&mut self) -> api::HealthReport {
        api::HealthReport {
            healthy: true,
            corrective_action: api::Action::None,
            log_msg: String::new(),
        }
    }

    fn action_notify(&mut self, invocation_id: u32, event: api::Event, notify: api::Notify) {
        self.pending.push((invocation_id, event, notify));
    }
}

impl VetoingApp {
    fn start(socket: std::path::PathBuf) -> VetoingApp {
        use std::sync::atomic::Ordering;
        let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let registered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (told2, stop2, registered2) = (told.clone(), stop.clone(), registered.clone());
        let thread = std::thread::spawn(move || {
            let mut client = api::Client::new(socket);
            let registration = api::Registration {
                name: "ledger".into(),
                heartbeat_interval_ms: 1000,
                vote_secs: 2,
                shutdown_notice_secs: 2,
                suspend_notice_secs: 2,
                resume_notice_secs: 2,
                corrective_action: api::Action::Log,
            };
            let _ = client.register(&registration);
            let mut handler = AppHandler {
                registered: false,
                pending: Vec::new(),
            };
            while !stop2.load(Ordering::Relaxed) {
                client.run_once(&mut handler, Duration::from_millis(50));
                registered2.store(handler.registered, Ordering::Relaxed);
                for (id, event, notify) in std::mem::take(&mut handler.pending) {
                    told2
                        .lock()
                        .expect("not poisoned")
                        .push(format!("{notify} {event}"));
                    let (vote, why) = match (notify, event) {
                        (api::Notify::Revocable, api::Event::Stop) => {
                            (api::Vote::Reject, "ledger: 3 transactions in flight")
                        }
                        (api::Notify::Revocable, _) => (api::Vote::Accept, ""),
                        _ => (api::Vote::Complete, ""),
                    };
                    let _ = client.send_action_response(id, event, notify, vote, why);
                }
            }
            let _ = client.deregister("test over");
        });
        VetoingApp {
            registered,
            told,
            stop,
            thread: Some(thread),
        }
    }

    fn told(&self) -> Vec<String> {
        self.told.lock().expect("not poisoned").clone()
    }
}

impl Drop for VetoingApp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_inside_the_vm_vetoes_a_stop_and_accepts_a_reboot() {
    let rig = rig_with_script(true).await;
    let vm = rig.vm(0);
    let app = VetoingApp::start(vm.api_socket());
    wait_for("the application is registered", LONG, || {
        app.registered.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;

    let op = operate(&rig, EventType::Stop).await;
    assert_eq!(state_name(&op), "rejected", "{op:?}");
    assert!(
        op.reason
            .as_deref()
            .is_some_and(|r| r.contains("ledger: 3 transactions in flight")),
        "{op:?}"
    );
    assert!(!ran(vm, "quit"));
    assert_eq!(app.told(), ["revocable stop"]);
    // The script was asked too, in parallel, and accepted.
    assert_eq!(calls(&rig), ["revocable stop"]);

    let op = operate(&rig, EventType::Pause).await;
    assert_eq!(state_name(&op), "done", "{op:?}");
    assert_eq!(
        steps(&op),
        [("vote", "accept"), ("notify", "complete"), ("act", "done")]
    );
    assert_eq!(
        app.told(),
        ["revocable stop", "revocable pause", "irrevocable pause"]
    );
    no_corrective_action(&rig, vm);
}
