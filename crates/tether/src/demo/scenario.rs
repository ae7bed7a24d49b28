//! The demo's scripted scenario: hang one guest, make one unhealthy, crash one, and follow
//! each through detection and recovery; then a summary.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use tether_host::{AgentView, InstanceStatus};
use tether_sim::{Fault, Sim, SimVm};
use tokio::time::Instant;

use super::Screen;

/// How long the guests may take to start heartbeating, and the faults to be recovered.
const SETTLE: Duration = Duration::from_secs(60);
const RECOVER: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(50);

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

    screen.draw(sim, view, journal, "Scenario finished.");
    let healthy_recoveries = print_summary(sim, view, &tracked);
    if !done {
        bail!(
            "The agent did not recover every injected fault within {}s",
            RECOVER.as_secs()
        );
    }
    if healthy_recoveries > 0 {
        bail!("{healthy_recoveries} recoveries hit guests that had no fault");
    }
    Ok(())
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
    let detail = ["action", "reason", "error"]
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
