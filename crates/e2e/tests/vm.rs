//! Real Linux guests under QEMU, running `tether-guest`, heartbeated by `tether host`.
//!
//! Every test boots its own VM (at most two run at once, see `tether_e2e::slots`) and prints
//! `SKIP:` and passes when QEMU or the kernel cache is missing (`scripts/install-test-deps`
//! installs both). Guests heartbeat at 1 s; the agent runs with `--miss-threshold 1`, so a
//! loss is declared two intervals after the last answer.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use tether_e2e::{static_guest, Agent, ChannelDouble, GuestImage, Setup, Vm, VmSpec};
use tether_proto::Message;
use tether_testkit::{wait_for, TempDir};

/// QEMU start to the guest's first message: 3-5 s under TCG; allow for a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// The guests' heartbeat interval.
const INTERVAL: Duration = Duration::from_secs(1);
/// Misses tolerated before a loss.
const MISS_THRESHOLD: u32 = 1;
/// Time allowed beyond the protocol's own deadlines (scheduling on a busy 2-core machine).
const SLACK: Duration = Duration::from_secs(1);

/// Journal events that mean the agent acted against a guest.
const RECOVERY_EVENTS: [&str; 5] = [
    "heartbeat_lost",
    "recovery_started",
    "recovery_done",
    "recovery_failed",
    "unrecoverable",
];

/// A test's scratch space (the channel folder the agent watches, work folders) and clock.
struct Scratch {
    test: &'static str,
    started: tokio::time::Instant,
    dir: TempDir,
}

impl Scratch {
    /// The machine's setup and a fresh scratch space, or `None` (after `SKIP:`) to skip.
    fn prepare(test: &'static str) -> Option<(Setup, Scratch)> {
        let setup = tether_e2e::setup_or_skip(test)?;
        let started = tokio::time::Instant::now();
        Some((
            setup,
            Scratch {
                test,
                started,
                dir: tether_testkit::temp_dir(),
            },
        ))
    }

    fn channel_dir(&self) -> PathBuf {
        self.dir.path().join("ch")
    }

    fn agent_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    fn boot(&self, setup: &Setup, image: &GuestImage) -> Vm {
        let guest = static_guest().unwrap_or_else(|e| panic!("static tether-guest: {e}"));
        let initrd = image
            .build(setup, &guest)
            .unwrap_or_else(|e| panic!("image: {e}"));
        let spec = VmSpec {
            setup: setup.clone(),
            initrd,
            name: image.name().to_string(),
            channel_dir: self.channel_dir(),
            work_dir: self.dir.path().join(format!("vm-{}", image.name())),
        };
        Vm::start(&spec).unwrap_or_else(|e| panic!("VM start: {e}"))
    }

    fn start_agent(&self) -> Agent {
        std::fs::create_dir_all(self.agent_dir()).expect("agent dir");
        std::fs::create_dir_all(self.channel_dir()).expect("channel dir");
        let agent = Agent::start(
            &host_binary(),
            &self.channel_dir(),
            &self.agent_dir(),
            MISS_THRESHOLD,
        );
        agent.unwrap_or_else(|e| panic!("tether host: {e}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        eprintln!("{} took {:?}", self.test, self.started.elapsed());
    }
}

/// `tether host`: built if missing, rebuilt if older than the sources (checked once per run).
fn host_binary() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        tether_e2e::setup::rebuild_if_stale("tether", "tether")
            .unwrap_or_else(|e| panic!("building tether: {e}"));
    });
    tether_testkit::binary("tether")
}

/// Waits until the journal holds `event` for `vm` after `mark`.
async fn wait_event(agent: &Agent, vm: &Vm, event: &str, mark: u64, timeout: Duration) {
    let what = format!("the journal records {event} for {}", vm.uuid());
    wait_for(&what, timeout, || {
        agent.events_of(vm.uuid(), mark).iter().any(|e| e == event)
    })
    .await;
}

/// The instance's entry in `GET /v1/instances/{uuid}`.
fn instance(agent: &Agent, vm: &Vm) -> serde_json::Value {
    let (status, body) = agent
        .get(&format!("/v1/instances/{}", vm.uuid()))
        .unwrap_or_else(|e| panic!("GET instance: {e}"));
    assert_eq!(status, 200, "GET /v1/instances/{}: {body}", vm.uuid());
    body
}

fn count(events: &[String], name: &str) -> usize {
    events.iter().filter(|e| *e == name).count()
}

/// The guest boots, finds its port and registers: checked with a channel double, no agent.
#[tokio::test]
async fn guest_boots_and_registers_on_the_channel() {
    let Some((setup, scratch)) = Scratch::prepare("guest_boots_and_registers_on_the_channel")
    else {
        return;
    };
    let vm = scratch.boot(&setup, &GuestImage::new("e2e-boot"));
    let mut double = ChannelDouble::connect(vm.channel_socket()).unwrap();
    let message = double
        .next_message(BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let boot_to_init = vm.elapsed();
    let Message::Init(init) = message else {
        panic!("first message is not init: {message:?}")
    };
    assert_eq!(init.name, "e2e-boot");
    assert_eq!(init.heartbeat_interval_ms, 1000);
    assert!(
        double.rejected.is_empty(),
        "undecodable frames: {:?}",
        double.rejected
    );
    let console = vm.console();
    let ready = console
        .find("init: ready at")
        .map_or("", |at| console[at..].lines().next().unwrap_or(""));
    eprintln!("boot to first init: {boot_to_init:?} (guest {ready})");
}

/// The agent finds the channel, the guest registers, and 10 s of heartbeats at 1 s pass
/// without a single miss.
#[tokio::test]
async fn heartbeat_runs_without_misses() {
    let Some((setup, scratch)) = Scratch::prepare("heartbeat_runs_without_misses") else {
        return;
    };
    let agent = scratch.start_agent();
    let vm = scratch.boot(&setup, &GuestImage::new("e2e-steady"));
    wait_event(&agent, &vm, "heartbeat_started", 0, BOOT_TIMEOUT).await;
    eprintln!("boot to heartbeat_started: {:?}", vm.elapsed());

    let before = instance(&agent, &vm);
    tokio::time::sleep(10 * INTERVAL).await;
    let after = instance(&agent, &vm);

    let events = agent.events_of(vm.uuid(), 0);
    assert_eq!(
        &events[..2],
        ["channel_connected", "heartbeat_started"],
        "{events:?}"
    );
    for bad in ["heartbeat_missed", "protocol_error", "channel_disconnected"] {
        assert_eq!(count(&events, bad), 0, "{bad} in {events:?}");
    }
    for bad in RECOVERY_EVENTS {
        assert_eq!(count(&events, bad), 0, "{bad} in {events:?}");
    }
    assert_eq!(after["state"], "heartbeating", "{after}");
    assert_eq!(after["name"], "e2e-steady");
    assert_eq!(after["interval_ms"], 1000);
    assert_eq!(after["misses_total"], 0, "{after}");
    let challenges = |v: &serde_json::Value| v["challenges"].as_u64().unwrap_or(0);
    let sent = challenges(&after) - challenges(&before);
    assert!((9..=11).contains(&sent), "{sent} challenges in 10 s at 1 s");
}

/// Frozen vCPUs (QMP `stop`) stop the answers: the agent declares the heartbeat lost
/// `miss_threshold + 1` intervals after the last answer (the freeze falls up to one interval
/// after it), reboots through QMP (`system_reset`, then `cont` because the VM is paused), and
/// the rebooted guest registers again.
#[tokio::test]
async fn hung_guest_is_rebooted_and_registers_again() {
    let Some((setup, scratch)) = Scratch::prepare("hung_guest_is_rebooted_and_registers_again")
    else {
        return;
    };
    let agent = scratch.start_agent();
    let vm = scratch.boot(&setup, &GuestImage::new("e2e-hang"));
    wait_event(&agent, &vm, "heartbeat_started", 0, BOOT_TIMEOUT).await;

    let mark = agent.journal_mark();
    vm.freeze().unwrap_or_else(|e| panic!("QMP stop: {e}"));
    let frozen = tokio::time::Instant::now();
    assert_eq!(vm.status().unwrap(), "paused");
    let deadline = (MISS_THRESHOLD + 2) * INTERVAL + SLACK;
    wait_event(&agent, &vm, "heartbeat_lost", mark, deadline).await;
    let detected = frozen.elapsed();
    eprintln!("freeze to heartbeat_lost: {detected:?}");
    let earliest = (MISS_THRESHOLD + 1) * INTERVAL - Duration::from_millis(250);
    assert!(
        detected >= earliest,
        "loss declared after {detected:?}, before {earliest:?}"
    );

    wait_event(&agent, &vm, "recovery_done", mark, 10 * INTERVAL).await;
    assert_eq!(
        vm.status().unwrap(),
        "running",
        "the reboot left the VM paused"
    );
    wait_event(&agent, &vm, "heartbeat_started", mark, BOOT_TIMEOUT).await;
    eprintln!(
        "freeze to heartbeat_started after the reboot: {:?}",
        frozen.elapsed()
    );

    let events = agent.events_of(vm.uuid(), mark);
    let started = events.iter().position(|e| e == "recovery_started");
    let lost = events.iter().position(|e| e == "heartbeat_lost");
    assert!(lost < started && started.is_some(), "{events:?}");
    assert_eq!(count(&events, "recovery_failed"), 0, "{events:?}");
    let boots = vm.console().matches("init: ready at").count();
    assert_eq!(
        boots,
        2,
        "the guest booted {boots} times:\n{}",
        vm.console()
    );
    assert_eq!(instance(&agent, &vm)["state"], "heartbeating");
}

/// Healthy for the first 3 s of uptime after its first run, then failing. Counting from its
/// first run rather than from boot keeps the guest healthy until it has registered, however
/// slow the boot.
const HEALTH_SCRIPT: &str = r#"#!/bin/sh
read up rest < /proc/uptime
now=${up%.*}
[ -f /tmp/first-check ] || echo "$now" > /tmp/first-check
read first < /tmp/first-check
if [ $((now - first)) -ge 3 ]; then
  echo "failing since uptime $first + 3 s"
  exit 1
fi
echo fine
"#;

/// A health script that starts failing after a set uptime, with `CORRECTIVE_ACTION=stop`: the
/// agent records the unhealthy guest, stops the VM with QMP `quit`, sees the channel close and
/// forgets the instance.
#[tokio::test]
async fn unhealthy_guest_is_stopped_and_forgotten() {
    let Some((setup, scratch)) = Scratch::prepare("unhealthy_guest_is_stopped_and_forgotten")
    else {
        return;
    };
    let script = HEALTH_SCRIPT;
    let config = "HB_INTERVAL=1000\nCORRECTIVE_ACTION=stop\nHEALTH_CHECK_INTERVAL=1\n\
        HEALTH_CHECK_SCRIPT=/etc/tether/health-check\n";
    let image = GuestImage::new("e2e-sick").config(config).file(
        "/etc/tether/health-check",
        0o755,
        script.as_bytes(),
    );
    let agent = scratch.start_agent();
    let mut vm = scratch.boot(&setup, &image);
    wait_event(&agent, &vm, "heartbeat_started", 0, BOOT_TIMEOUT).await;
    wait_event(&agent, &vm, "guest_unhealthy", 0, 30 * INTERVAL).await;

    wait_for("QEMU exits", 10 * INTERVAL, || vm.exit_status().is_some()).await;
    let status = vm.exit_status();
    assert!(
        status.is_some_and(|s| s.success()),
        "QEMU exited with {status:?}"
    );
    wait_event(&agent, &vm, "channel_disconnected", 0, 5 * INTERVAL).await;
    let socket = vm.channel_socket().to_path_buf();
    wait_for("the channel socket is gone", 5 * INTERVAL, || {
        !socket.exists()
    })
    .await;
    wait_for("the instance is gone from the API", 5 * INTERVAL, || {
        let (_, list) = agent.get("/v1/instances").unwrap_or_else(|e| panic!("{e}"));
        let listed = list.as_array().into_iter().flatten();
        !listed.into_iter().any(|i| i["uuid"] == vm.uuid())
    })
    .await;
    let (status, _) = agent.get(&format!("/v1/instances/{}", vm.uuid())).unwrap();
    assert_eq!(status, 404);

    let events = agent.events_of(vm.uuid(), 0);
    let unhealthy = agent
        .journal()
        .into_iter()
        .find(|e| e.event == "guest_unhealthy");
    let reason = unhealthy
        .map(|e| e.raw["reason"].to_string())
        .unwrap_or_default();
    assert!(reason.contains("failing since uptime"), "reason {reason}");
    assert!(events.iter().any(|e| e == "recovery_started"), "{events:?}");
    assert_eq!(count(&events, "recovery_failed"), 0, "{events:?}");
}

/// SIGTERM to the agent while the VM runs, then a new agent: it reconnects, the guest
/// re-registers, and nothing is treated as a failure.
#[tokio::test]
async fn agent_restart_reconnects_without_recovery() {
    let Some((setup, scratch)) = Scratch::prepare("agent_restart_reconnects_without_recovery")
    else {
        return;
    };
    let mut first = scratch.start_agent();
    let vm = scratch.boot(&setup, &GuestImage::new("e2e-restart"));
    wait_event(&first, &vm, "heartbeat_started", 0, BOOT_TIMEOUT).await;
    tokio::time::sleep(2 * INTERVAL).await;
    let status = first.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "tether host exited with {status:?}"
    );

    let mark = first.journal_mark();
    let second = scratch.start_agent();
    let restarted = tokio::time::Instant::now();
    wait_event(&second, &vm, "channel_connected", mark, 10 * INTERVAL).await;
    wait_event(&second, &vm, "heartbeat_started", mark, 30 * INTERVAL).await;
    eprintln!(
        "agent restart to heartbeat_started: {:?}",
        restarted.elapsed()
    );
    tokio::time::sleep(3 * INTERVAL).await;

    let events = second.events_of(vm.uuid(), 0);
    for bad in RECOVERY_EVENTS
        .iter()
        .chain(&["guest_unhealthy", "heartbeat_missed"])
    {
        assert_eq!(count(&events, bad), 0, "{bad} in {events:?}");
    }
    assert_eq!(instance(&second, &vm)["state"], "heartbeating");
    let boots = vm.console().matches("init: ready at").count();
    assert_eq!(boots, 1, "the guest rebooted:\n{}", vm.console());
}

/// The event script of the planned-reboot image: accepts, and says so on the console.
const EVENT_SCRIPT: &str = r#"#!/bin/sh
echo "event script: $1 $2" > /dev/console
echo "ready for $2"
exit 0
"#;

/// A reboot ordered through the agent's operation API: the guest votes, is told, the VM is
/// reset through QMP, the guest comes back, and the loss of heartbeat during the reboot is
/// no failure.
#[tokio::test]
async fn planned_reboot_is_voted_noticed_and_not_a_loss() {
    let Some((setup, scratch)) = Scratch::prepare("planned_reboot_is_voted_noticed_and_not_a_loss")
    else {
        return;
    };
    let config = "HB_INTERVAL=1000\nVOTE=3\nSHUTDOWN_NOTICE=3\nRESTART=60\n\
        EVENT_NOTIFICATION_SCRIPT=/etc/tether/event\n";
    let image = GuestImage::new("e2e-planned").config(config).file(
        "/etc/tether/event",
        0o755,
        EVENT_SCRIPT.as_bytes(),
    );
    let agent = scratch.start_agent();
    let vm = scratch.boot(&setup, &image);
    wait_event(&agent, &vm, "heartbeat_started", 0, BOOT_TIMEOUT).await;
    let mark = agent.journal_mark();

    let path = format!("/v1/instances/{}/actions", vm.uuid());
    let (status, started) = agent
        .post(&path, r#"{"action": "reboot"}"#)
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    let operation = format!("/v1/operations/{id}");
    let mut op = serde_json::Value::Null;
    wait_for("the reboot operation ends", 30 * INTERVAL, || {
        op = agent
            .get(&operation)
            .map(|(_, body)| body)
            .unwrap_or_default();
        ["done", "rejected", "failed"].contains(&op["state"].as_str().unwrap_or(""))
    })
    .await;
    assert_eq!(op["state"], "done", "{op}");
    let steps: Vec<(String, String)> = op["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["step"].to_string(), s["outcome"].to_string()))
        .collect();
    let expected: Vec<(String, String)> =
        [("vote", "accept"), ("notify", "complete"), ("act", "done")]
            .iter()
            .map(|(a, b)| (format!("{a:?}"), format!("{b:?}")))
            .collect();
    assert_eq!(steps, expected, "{op}");

    let what = "the guest registers again after the reboot";
    wait_for(what, BOOT_TIMEOUT, || {
        count(&agent.events_of(vm.uuid(), mark), "heartbeat_started") >= 1
    })
    .await;
    let console = vm.console();
    assert!(
        console.contains("event script: revocable reboot"),
        "{console}"
    );
    assert!(
        console.contains("event script: irrevocable reboot"),
        "{console}"
    );
    assert_eq!(console.matches("init: ready at").count(), 2, "{console}");
    let events = agent.events_of(vm.uuid(), mark);
    for event in RECOVERY_EVENTS {
        assert_eq!(count(&events, event), 0, "{event} in {events:?}");
    }
    eprintln!("planned reboot: {op}");
}
