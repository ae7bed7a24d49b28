//! The recovery policy: what to do about one failure a host agent left to the controller.
//!
//! A pure function of the failure, the stored instance and host, the recoveries already
//! ordered for the instance within the window, and the time. In order: an instance that is
//! gone or no longer failed needs nothing; reporting off, VIM mode and a `log` action are
//! recorded and not acted on; `max` orders within `window` make the controller give up (the
//! guest becomes `unrecoverable`); otherwise the next order waits `backoff`, doubling with
//! each order in the window up to `backoff_max`, after the previous one.

use std::time::Duration;

use crate::store::{DecisionKind, HostRecord, InstanceRecord, PendingFailure, RecoveryMode, GONE};

/// The limits on ordered recoveries of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// Orders allowed within `window`; the next failure gives up.
    pub max: u32,
    /// The window orders are counted in.
    pub window: Duration,
    /// The least time between the first order and the second; doubles with each further one.
    pub backoff: Duration,
    /// The longest wait between two orders.
    pub backoff_max: Duration,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        RecoveryPolicy {
            max: 3,
            window: Duration::from_secs(3600),
            backoff: Duration::from_secs(30),
            backoff_max: Duration::from_secs(600),
        }
    }
}

/// The states in which a failed guest still needs its recovery.
const FAILED: [&str; 3] = ["lost", "unhealthy", "connecting"];

/// What to do about a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Record this decision; nothing is sent to the host.
    Record(DecisionKind, String),
    /// Order the host to apply the action.
    Order,
    /// Tell the host to record the guest unrecoverable, for this reason.
    GiveUp(String),
    /// Not before this time (ms since the Unix epoch).
    WaitUntil(i64),
}

/// The action to apply for `failure`: the operator's override, else the guest's own.
pub fn action_for(failure: &PendingFailure, instance: Option<&InstanceRecord>) -> String {
    match instance.and_then(|i| i.corrective_override) {
        Some(action) => action.as_str().to_owned(),
        None => failure.action.clone(),
    }
}

/// Judges `failure` at `now_ms`; `ordered_ms` are the instance's orders within the window.
pub fn judge(
    policy: &RecoveryPolicy,
    failure: &PendingFailure,
    instance: Option<&InstanceRecord>,
    host: Option<&HostRecord>,
    ordered_ms: &[i64],
    now_ms: i64,
) -> Verdict {
    let record = |kind, detail: String| Verdict::Record(kind, detail);
    let Some(instance) = instance.filter(|i| i.state != GONE) else {
        return record(
            DecisionKind::Gone,
            "The instance is gone from its host".into(),
        );
    };
    if !FAILED.contains(&instance.state.as_str()) {
        let detail = format!("The instance is {} now", instance.state);
        return record(DecisionKind::Recovered, detail);
    }
    let host_reporting = host.is_none_or(|h| h.reporting_enabled);
    if !instance.reporting_enabled || !host_reporting {
        let detail = "Reporting is disabled for the instance or its host".into();
        return record(DecisionKind::ReportingOff, detail);
    }
    let host_mode = host.map(|h| h.recovery_mode).unwrap_or_default();
    if instance.recovery_mode.unwrap_or(host_mode) == RecoveryMode::Vim {
        return record(
            DecisionKind::LeftToVim,
            "The VIM recovers this instance".into(),
        );
    }
    let action = action_for(failure, Some(instance));
    if action != "reboot" && action != "stop" {
        let detail = format!("The corrective action is {action:?}: nothing to apply");
        return record(DecisionKind::Logged, detail);
    }
    let count = ordered_ms.len();
    if count >= policy.max as usize {
        return Verdict::GiveUp(format!(
            "{} recoveries within {} s already",
            policy.max,
            policy.window.as_secs()
        ));
    }
    if let Some(last) = ordered_ms.last() {
        let earliest = last.saturating_add(wait_ms(policy, count));
        if now_ms < earliest {
            return Verdict::WaitUntil(earliest);
        }
    }
    Verdict::Order
}

/// The least time after the last of `count` orders before the next one.
fn wait_ms(policy: &RecoveryPolicy, count: usize) -> i64 {
    let doublings = u32::try_from(count.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    let wait = policy
        .backoff
        .saturating_mul(1 << doublings)
        .min(policy.backoff_max);
    i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
