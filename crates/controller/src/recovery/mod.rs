//! Recovery decisions: the controller's side of failures host agents leave to it.
//!
//! A host agent reporting to a controller journals a guest's failure as `recovery_deferred`
//! (see the host's `deferral` module) instead of acting. [`RecoveryTask`] finds every such
//! failure not decided yet ([`crate::Store::pending_failures`]), judges it with the
//! [`policy`], and carries the verdict out: it orders the host to apply the corrective action
//! (`POST /v1/instances/{uuid}/recover`), tells it to record the guest unrecoverable when the
//! limit is reached, or records why nothing is done (VIM mode, reporting off, the guest came
//! back, …). Every decision is one row, visible at `GET /v1/instances/{uuid}/recoveries`.
//!
//! The task wakes when a `recovery_deferred` event is stored, when a back-off ends, and every
//! [`TICK`] in any case. A host it cannot reach is tried again every [`RETRY`]; nothing is
//! recorded until the host answered, so a failure is never decided twice nor forgotten, even
//! across a controller restart.

pub mod policy;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::api::ApiState;
use crate::clock::unix_ms;
use crate::hostlink::{RecoverAnswer, RecoverOrder};
use crate::store::{DecisionKind, NewDecision, PendingFailure};
use crate::throttle::Throttle;
use policy::{judge, RecoveryPolicy, Verdict};

/// The longest the task sleeps without looking for pending failures.
pub const TICK: Duration = Duration::from_secs(30);
/// How soon a host that could not be reached is ordered again.
pub const RETRY: Duration = Duration::from_secs(5);
/// At most one warning per host per this period about an unreachable host.
const LOG_PERIOD: Duration = Duration::from_secs(60);

/// The running recovery task; stops when dropped.
pub struct RecoveryTask(tokio::task::JoinHandle<()>);

impl RecoveryTask {
    /// Decides failures with `policy` until dropped.
    pub fn spawn(state: ApiState, policy: RecoveryPolicy) -> RecoveryTask {
        RecoveryTask(tokio::spawn(async move {
            let mut events = state.subscribe();
            let mut warned: HashMap<String, Throttle> = HashMap::new();
            loop {
                let wake = round(&state, &policy, &mut warned).await;
                let sleep = tokio::time::sleep_until(wake.unwrap_or(Instant::now() + TICK));
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        event = events.recv() => match event {
                            Ok(event) if event.event == "recovery_deferred" => break,
                            Ok(_) => {}
                            Err(RecvError::Lagged(_)) => break,
                            Err(RecvError::Closed) => return,
                        },
                    }
                }
            }
        }))
    }
}

impl Drop for RecoveryTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Decides every pending failure it can now; answers when to look again, if sooner than
/// [`TICK`].
pub(crate) async fn round(
    state: &ApiState,
    policy: &RecoveryPolicy,
    warned: &mut HashMap<String, Throttle>,
) -> Option<Instant> {
    let pending = match state.store(|store| store.pending_failures()).await {
        Ok(pending) => pending,
        Err(e) => {
            let error = crate::api::error_chain(&e);
            tracing::error!(%error, "Cannot read the failures to recover");
            return Some(Instant::now() + RETRY);
        }
    };
    let mut wake: Option<Instant> = None;
    for failure in pending {
        if let Some(at) = decide(state, policy, failure, warned).await {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
    }
    wake
}

/// Judges one failure and carries the verdict out; answers when to look at it again.
async fn decide(
    state: &ApiState,
    policy: &RecoveryPolicy,
    failure: PendingFailure,
    warned: &mut HashMap<String, Throttle>,
) -> Option<Instant> {
    let now = SystemTime::now();
    let since_ms = unix_ms(now).saturating_sub(millis(policy.window));
    let (uuid, host_name) = (failure.instance.clone(), failure.host.clone());
    let looked_up = state
        .store(move |store| {
            let instance = store.instance(&uuid)?;
            let host_name = instance.as_ref().map_or(host_name, |i| i.host.clone());
            let host = store.host(&host_name)?;
            let ordered = store.recoveries_ordered_since(&uuid, since_ms)?;
            Ok((instance, host, ordered))
        })
        .await;
    let (instance, host, ordered) = match looked_up {
        Ok(found) => found,
        Err(e) => {
            let error = crate::api::error_chain(&e);
            tracing::error!(%error, instance = %failure.instance, "Cannot judge the failure");
            return Some(Instant::now() + RETRY);
        }
    };
    let action = policy::action_for(&failure, instance.as_ref());
    let verdict = judge(
        policy,
        &failure,
        instance.as_ref(),
        host.as_ref(),
        &ordered,
        unix_ms(now),
    );
    let give_up = match verdict {
        Verdict::Record(kind, detail) => {
            record(state, failure, action, kind, detail).await;
            return None;
        }
        Verdict::WaitUntil(at_ms) => {
            let wait = u64::try_from(at_ms.saturating_sub(unix_ms(now))).unwrap_or(0);
            return Some(Instant::now() + Duration::from_millis(wait));
        }
        Verdict::Order => None,
        Verdict::GiveUp(reason) => Some(reason),
    };
    let Some(host) = host else {
        let detail = "The instance's host is not registered".to_owned();
        record(state, failure, action, DecisionKind::Gone, detail).await;
        return None;
    };
    let order = RecoverOrder {
        action: &action,
        cause: &failure.cause,
        give_up: give_up.as_deref(),
    };
    let answer = state
        .hostlink()
        .recover(&host, &failure.instance, &order)
        .await;
    let (kind, detail) = match answer {
        Ok(RecoverAnswer::Started) => (DecisionKind::Ordered, "The host started it".to_owned()),
        Ok(RecoverAnswer::GivenUp) => (DecisionKind::GaveUp, give_up.unwrap_or_default()),
        Ok(RecoverAnswer::Stale(message)) => (DecisionKind::Recovered, message),
        Ok(RecoverAnswer::ReportingOff(message)) => (DecisionKind::ReportingOff, message),
        Ok(RecoverAnswer::Refused(message)) => (DecisionKind::RefusedByHost, message),
        Err(e) if e.is_unreachable() => {
            warn_unreachable(warned, &host.name, &e);
            return Some(Instant::now() + RETRY);
        }
        Err(e) => (DecisionKind::RefusedByHost, crate::api::error_chain(&e)),
    };
    warned.remove(&host.name);
    record(state, failure, action, kind, detail).await;
    None
}

async fn record(
    state: &ApiState,
    failure: PendingFailure,
    action: String,
    kind: DecisionKind,
    detail: String,
) {
    tracing::info!(instance = %failure.instance, host = %failure.host, %action,
        cause = %failure.cause, decision = kind.as_str(), %detail, "Recovery decided");
    let decision = NewDecision {
        failure,
        action,
        kind,
        detail,
    };
    let stored = state
        .store(move |store| store.record_recovery(&decision, SystemTime::now()))
        .await;
    if let Err(e) = stored {
        let error = crate::api::error_chain(&e);
        tracing::error!(%error, "Cannot record a recovery decision; it will be taken again");
    }
}

fn warn_unreachable(
    warned: &mut HashMap<String, Throttle>,
    host: &str,
    error: &crate::hostlink::HostLinkError,
) {
    let throttle = warned
        .entry(host.to_owned())
        .or_insert_with(|| Throttle::new(LOG_PERIOD));
    if let Some(suppressed) = throttle.allow(Instant::now()) {
        let error = crate::api::error_chain(error);
        tracing::warn!(host, %error, suppressed, retry_s = RETRY.as_secs(),
            "Cannot order a recovery from the host; trying again");
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
