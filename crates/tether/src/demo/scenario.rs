//! The demo's scripted scenario: hang one guest, make one unhealthy, crash one, and follow
//! each through detection and recovery; then lifecycle operations: a stop the guest vetoes,
//! and a reboot, a pause and an unpause that go through with notice and no false loss; then
//! a summary.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use tether_host::lifecycle::OpState;
use tether_host::operations::{OperationRecord, Operations};
use tether_host::{AgentView, GuestState, InstanceStatus};
use tether_proto::EventType;
use tether_sim::{Fault, Sim, SimVm};
use tokio::time::Instant;

use super::Screen;

/// How long the guests may take to start heartbeating, and the faults to be recovered.
const SETTLE: Duration = Duration::from_secs(60);
const RECOVER: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(50);
/// How long the demo shows a paused guest (several loss times at the default interval).
const HELD: Duration = Duration::from_secs(3);

/// One injected fault and what became of it.
struct Tracked {
    vm: SimVm,
    fault: Fault,
    injected: Instant,
    recoveries_before: u32,
    detected: Option<Duration>,
    recovered: Option<Duration>,
}

/// Runs the scenario to its end; an error if the agent did not recover every fault in time.
pub async fn run(
    sim: &Sim,
    view: &AgentView,
    operations: &Operations,
    screen: &Screen,
    journal: &Path,
) -> anyhow::Result<()> {
    let note = "Waiting for every guest to heartbeat…";
    if !follow(sim, view, screen, journal, SETTLE, note, |_| {
        all_heartbeating(sim, view)
    })
    .await
    {
        bail!(
            "Not every guest was heartbeating within {}s",
            SETTLE.as_secs()
        );
    }

    let mut tracked = inject(sim, view);
    let note = "Injected faults; waiting for the agent to detect and recover them…";
    let done = follow(sim, view, screen, journal, RECOVER, note, |now| {
        update(&mut tracked, view, now);
        tracked.iter().all(|t| t.recovered.is_some()) && all_heartbeating(sim, view)
    })
    .await;

    if !done {
        screen.draw(sim, view, journal, "Scenario finished.");
        print_summary(sim, view, &tracked);
        bail!(
            "The agent did not recover every injected fault within {}s",
            RECOVER.as_secs()
        );
    }
    let stage = Stage {
        sim,
        view,
        operations,
        screen,
        journal,
    };
    let lifecycle = lifecycle(&stage).await;
    screen.draw(sim, view, journal, "Scenario finished.");
    let healthy_recoveries = print_summary(sim, view, &tracked);
    let lines = lifecycle?;
    println!("Lifecycle operations");
    for line in lines {
        println!("  {line}");
    }
    if healthy_recoveries > 0 {
        bail!("{healthy_recoveries} recoveries hit guests that had no fault");
    }
    Ok(())
}

/// What the lifecycle part of the scenario works with.
struct Stage<'a> {
    sim: &'a Sim,
    view: &'a AgentView,
    operations: &'a Operations,
    screen: &'a Screen,
    journal: &'a Path,
}

impl Stage<'_> {
    /// Starts `event` on `vm` and redraws until it has ended.
    async fn operate(&self, vm: &SimVm, event: EventType) -> anyhow::Result<OperationRecord> {
        let id = match self.operations.begin(vm.uuid(), event) {
            Ok(id) => id,
            Err(e) => bail!("Cannot start {event} on {}: {e:?}", vm.name()),
        };
        let note = format!("Operation {event} on {}…", vm.name());
        let (sim, view, journal) = (self.sim, self.view, self.journal);
        follow(sim, view, self.screen, journal, RECOVER, &note, |_| {
            self.operations
                .get(&id)
                .is_some_and(|op| op.state.is_final())
        })
        .await;
        match self.operations.get(&id) {
            Some(op) if op.state.is_final() => Ok(op),
            _ => bail!(
                "{event} on {} did not end within {}s",
                vm.name(),
                RECOVER.as_secs()
            ),
        }
    }

    /// Redraws until `vm` is in `state`; false if `limit` passed first.
    async fn wait_state(&self, vm: &SimVm, state: GuestState, limit: Duration, note: &str) -> bool {
        let (sim, view, journal) = (self.sim, self.view, self.journal);
        follow(sim, view, self.screen, journal, limit, note, |_| {
            status_of(view, vm).is_some_and(|s| s.state == state)
        })
        .await
    }
}

/// A vetoed stop on the first VM, then a reboot, a pause and an unpause on the last one;
/// returns a line for each, or an error if any went otherwise than the table says.
async fn lifecycle(stage: &Stage<'_>) -> anyhow::Result<Vec<String>> {
    let vms = stage.sim.vms();
    let (Some(first), Some(last)) = (vms.first(), vms.last()) else {
        return Ok(Vec::new());
    };
    let mut lines = Vec::new();

    let reason = format!(
        "{}: nightly backup running, try again after 02:00",
        first.name()
    );
    first.set_veto(Some(&reason))?;
    let op = stage.operate(first, EventType::Stop).await?;
    first.set_veto(None)?;
    if op.state != OpState::Rejected || first.qmp_log().iter().any(|c| c == "quit") {
        bail!("The vetoed stop went otherwise: {op:?}");
    }
    lines.push(format!(
        "{:<6} stop    vetoed by the guest: {:?}; the VM was not touched",
        first.name(),
        op.reason.unwrap_or_default()
    ));

    let recoveries = status_of(stage.view, last).map_or(0, |s| s.recoveries);
    let op = stage.operate(last, EventType::Reboot).await?;
    let back = stage
        .wait_state(
            last,
            GuestState::Heartbeating,
            RECOVER,
            "Waiting for the rebooted guest…",
        )
        .await;
    if op.state != OpState::Done || !back {
        bail!("The reboot went otherwise: {op:?}");
    }
    lines.push(format!(
        "{:<6} reboot  {}; heartbeating again",
        last.name(),
        steps(&op)
    ));

    let op = stage.operate(last, EventType::Pause).await?;
    if op.state != OpState::Done {
        bail!("The pause went otherwise: {op:?}");
    }
    lines.push(format!("{:<6} pause   {}", last.name(), steps(&op)));
    let note = "Paused: the heartbeat is held, not lost…";
    let (sim, view, journal) = (stage.sim, stage.view, stage.journal);
    follow(sim, view, stage.screen, journal, HELD, note, |_| false).await;
    if status_of(view, last).map(|s| s.state) != Some(GuestState::Held) {
        bail!("The paused guest is not held: {:?}", status_of(view, last));
    }
    let op = stage.operate(last, EventType::Unpause).await?;
    if op.state != OpState::Done {
        bail!("The unpause went otherwise: {op:?}");
    }
    lines.push(format!("{:<6} unpause {}", last.name(), steps(&op)));
    let acted = status_of(stage.view, last).map_or(0, |s| s.recoveries) - recoveries;
    lines.push(format!(
        "{:<6} the guest was told {}; corrective actions during all this: {acted} (expected 0)",
        last.name(),
        last.notifications().join(", ")
    ));
    if acted > 0 {
        bail!(
            "A planned operation on {} caused {acted} corrective actions",
            last.name()
        );
    }
    Ok(lines)
}

/// The steps of an operation as `vote accept (12 ms), notify complete (8 ms), …`.
fn steps(op: &OperationRecord) -> String {
    op.steps
        .iter()
        .map(|s| format!("{} {} ({} ms)", s.step, s.outcome, s.took_ms))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Redraws until `done(now)` holds or `limit` passes; true if it held.
async fn follow(
    sim: &Sim,
    view: &AgentView,
    screen: &Screen,
    journal: &Path,
    limit: Duration,
    note: &str,
    mut done: impl FnMut(Instant) -> bool,
) -> bool {
    let start = Instant::now();
    let mut last_draw: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if last_draw.is_none_or(|t| now - t >= screen.refresh()) {
            screen.draw(sim, view, journal, note);
            last_draw = Some(now);
        }
        if done(now) {
            return true;
        }
        if now - start >= limit {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn status_of(view: &AgentView, vm: &SimVm) -> Option<InstanceStatus> {
    view.instance(vm.uuid())
}

fn all_heartbeating(sim: &Sim, view: &AgentView) -> bool {
    sim.vms()
        .iter()
        .all(|vm| status_of(view, vm).is_some_and(|s| is_heartbeating(&s)))
}

fn is_heartbeating(s: &InstanceStatus) -> bool {
    s.state.to_string() == "heartbeating"
}

/// Picks the second, third and fourth VM (as many as exist) and injects the three faults.
fn inject(sim: &Sim, view: &AgentView) -> Vec<Tracked> {
    let faults = [
        Fault::Hang,
        Fault::Unhealthy("application check failed: disk almost full".into()),
        Fault::Crash,
    ];
    let vms = sim.vms();
    let first = usize::from(vms.len() > faults.len());
    vms.iter()
        .skip(first)
        .zip(faults)
        .map(|(vm, fault)| {
            let recoveries_before = status_of(view, vm).map_or(0, |s| s.recoveries);
            vm.set_fault(fault.clone());
            Tracked {
                vm: vm.clone(),
                fault,
                injected: Instant::now(),
                recoveries_before,
                detected: None,
                recovered: None,
            }
        })
        .collect()
}

fn update(tracked: &mut [Tracked], view: &AgentView, now: Instant) {
    for t in tracked {
        let Some(s) = status_of(view, &t.vm) else {
            continue;
        };
        let acted = s.recoveries > t.recoveries_before;
        if t.detected.is_none() && (acted || !is_heartbeating(&s)) {
            t.detected = Some(now - t.injected);
        }
        if t.recovered.is_none() && acted && is_heartbeating(&s) {
            t.recovered = Some(now - t.injected);
        }
    }
}

/// Prints what happened to each fault; returns how many recoveries hit fault-free guests.
fn print_summary(sim: &Sim, view: &AgentView, tracked: &[Tracked]) -> u32 {
    println!("\nSummary");
    for t in tracked {
        let detected = t.detected.map_or_else(
            || "not detected".into(),
            |d| format!("detected after {}", secs(d)),
        );
        let recovered = t.recovered.map_or_else(
            || "not recovered".into(),
            |d| format!("healthy again after {}", secs(d)),
        );
        println!(
            "  {:<6} {:<10} {detected}, {recovered}",
            t.vm.name(),
            describe_fault(&t.fault)
        );
    }
    let mut healthy_recoveries = 0;
    for vm in sim.vms() {
        if tracked.iter().any(|t| t.vm.uuid() == vm.uuid()) {
            continue;
        }
        healthy_recoveries += status_of(view, vm).map_or(0, |s| s.recoveries);
    }
    let healthy = sim.vms().len() - tracked.len();
    println!(
        "  {healthy} guests without a fault: {healthy_recoveries} corrective actions (expected 0)"
    );
    healthy_recoveries
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A fault as a short word for the table.
pub fn describe_fault(fault: &Fault) -> String {
    match fault {
        Fault::None => "-".into(),
        Fault::Hang => "hang".into(),
        Fault::Unhealthy(_) => "unhealthy".into(),
        Fault::Crash => "crash".into(),
        Fault::Slow(d) => format!("slow {} ms", d.as_millis()),
    }
}

/// A journal line as a short human line, or None if it is not a journal event.
pub fn describe_event(line: &str) -> Option<String> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    let ts = event["ts"].as_str()?;
    let time = ts.split('T').nth(1).unwrap_or(ts).trim_end_matches('Z');
    let who = event["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .or_else(|| event["instance"].as_str().and_then(|u| u.get(..8)))
        .unwrap_or("?");
    let what = event["event"].as_str()?;
    let detail = ["action", "outcome", "reason", "error"]
        .iter()
        .filter_map(|k| event[*k].as_str().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ");
    Some(
        format!("{time}  {who:<6} {what} {detail}")
            .trim_end()
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_become_short_lines() {
        let line = r#"{"ts":"2026-11-23T10:00:01.250Z","instance":"0123456789ab","event":"heartbeat_lost","name":"vm-2","action":"reboot"}"#;
        assert_eq!(
            describe_event(line).as_deref(),
            Some("10:00:01.250  vm-2   heartbeat_lost action=reboot")
        );
        assert_eq!(describe_event("not json"), None);
    }
}
