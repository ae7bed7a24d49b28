//! Corrective actions for one guest: the rate limit and the action in flight.
//!
//! At most one action runs per guest: while one is in flight, further requests are dropped
//! (the guest's own de-duplication should prevent them anyway). Each started action is
//! remembered in a [`RecoveryHistory`]; when `max_recoveries` have started within the window,
//! the next request is refused and the guest is marked unrecoverable until the window has room
//! again. The history outlives a supervisor (the registry hands it to the next supervisor of
//! the same uuid), so a VM that restarts with a new channel socket cannot dodge the limit.
//! The action itself is a boxed future polled by the supervisor beside its heartbeat I/O.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tether_hypervisor::{Action, Hypervisor, HypervisorError, Instance};
use tokio::time::Instant;

use crate::fsm::Cause;

/// At most `max` recoveries per guest within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryLimit {
    /// Recoveries allowed per window.
    pub max: u32,
    /// The window.
    pub window: Duration,
}

/// When the recent recoveries of one guest started.
#[derive(Debug, Clone, Default)]
pub struct RecoveryHistory {
    started: VecDeque<Instant>,
}

impl RecoveryHistory {
    /// Forgets recoveries that left the window.
    pub fn prune(&mut self, limit: RecoveryLimit, now: Instant) {
        while let Some(first) = self.started.front() {
            if now.saturating_duration_since(*first) >= limit.window {
                self.started.pop_front();
            } else {
                break;
            }
        }
    }

    /// Whether another recovery may start now.
    pub fn allows(&mut self, limit: RecoveryLimit, now: Instant) -> bool {
        self.prune(limit, now);
        self.started.len() < limit.max as usize
    }

    /// Whether no recovery is remembered.
    pub fn is_empty(&self) -> bool {
        self.started.is_empty()
    }

    fn record(&mut self, now: Instant) {
        self.started.push_back(now);
    }
}

/// What to do with a recovery request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it.
    Start,
    /// One is already running for this guest; drop the request.
    InProgress,
    /// Over the limit. `newly` is true the first time, when the guest becomes unrecoverable.
    Refused {
        /// The guest just became unrecoverable.
        newly: bool,
    },
}

type ApplyFuture = Pin<Box<dyn Future<Output = Result<(), HypervisorError>> + Send>>;

struct InFlight {
    action: Action,
    cause: Cause,
    future: ApplyFuture,
}

/// The recovery state of one guest.
pub struct Recovery {
    limit: RecoveryLimit,
    history: RecoveryHistory,
    in_flight: Option<InFlight>,
    unrecoverable: bool,
    given_up: bool,
    started_total: u32,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("history", &self.history)
            .field("running", &self.in_flight.as_ref().map(|r| r.action))
            .field("unrecoverable", &self.unrecoverable)
            .finish()
    }
}

impl Recovery {
    /// Recovery state continuing from an earlier `history` of the same guest.
    pub fn new(limit: RecoveryLimit, history: RecoveryHistory) -> Recovery {
        Recovery {
            limit,
            history,
            in_flight: None,
            unrecoverable: false,
            given_up: false,
            started_total: 0,
        }
    }

    /// Decides about a request at `now`; [`Decision::Start`] must be followed by [`start`].
    ///
    /// [`start`]: Recovery::start
    pub fn decide(&mut self, now: Instant) -> Decision {
        if self.in_flight.is_some() {
            return Decision::InProgress;
        }
        if self.history.allows(self.limit, now) {
            self.unrecoverable = false;
            return Decision::Start;
        }
        let newly = !self.unrecoverable;
        self.unrecoverable = true;
        Decision::Refused { newly }
    }

    /// Starts `action` on `instance` through `hypervisor`.
    pub fn start(
        &mut self,
        hypervisor: Arc<dyn Hypervisor>,
        instance: Instance,
        action: Action,
        cause: Cause,
        now: Instant,
    ) {
        self.history.record(now);
        self.started_total = self.started_total.saturating_add(1);
        let future = Box::pin(async move { hypervisor.apply(&instance, action).await });
        self.in_flight = Some(InFlight {
            action,
            cause,
            future,
        });
    }

    /// Resolves when the running action finishes; never resolves when none runs.
    /// Cancel-safe: dropping this future leaves the action running.
    pub async fn finished(&mut self) -> (Action, Cause, Result<(), HypervisorError>) {
        let Some(running) = self.in_flight.as_mut() else {
            return std::future::pending().await;
        };
        let result = running.future.as_mut().await;
        let (action, cause) = (running.action, running.cause);
        self.in_flight = None;
        (action, cause, result)
    }

    /// Whether an action is running.
    pub fn is_running(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether the guest is over its limit (cleared once the window has room again) or the
    /// controller gave up on it (cleared by [`Recovery::revive`]).
    pub fn is_unrecoverable(&mut self, now: Instant) -> bool {
        if self.unrecoverable && self.history.allows(self.limit, now) {
            self.unrecoverable = false;
        }
        self.unrecoverable || self.given_up
    }

    /// The controller's policy gave up on the guest: it stays unrecoverable until it
    /// heartbeats again or is recovered on order.
    pub fn give_up(&mut self) {
        self.given_up = true;
    }

    /// The guest heartbeats again, or a recovery was ordered: the controller's verdict of
    /// [`Recovery::give_up`] no longer holds.
    pub fn revive(&mut self) {
        self.given_up = false;
    }

    /// Recoveries started by this supervisor.
    pub fn started_total(&self) -> u32 {
        self.started_total
    }

    /// Hands the history on to the next supervisor of the same guest.
    pub fn into_history(self) -> RecoveryHistory {
        self.history
    }
}

/// An error and its sources, joined with `: `.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_hypervisor::BoxFuture;

    struct InstantDouble;

    impl Hypervisor for InstantDouble {
        fn name(&self) -> &'static str {
            "instant-double"
        }

        fn apply<'a>(
            &'a self,
            _: &'a Instance,
            _: Action,
        ) -> BoxFuture<'a, Result<(), HypervisorError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn instance() -> Instance {
        Instance {
            uuid: "u".into(),
            name: "n".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_at_a_time_and_at_most_max_per_window() {
        let limit = RecoveryLimit {
            max: 2,
            window: Duration::from_secs(100),
        };
        let mut r = Recovery::new(limit, RecoveryHistory::default());
        let hv: Arc<dyn Hypervisor> = Arc::new(InstantDouble);
        let t0 = Instant::now();
        assert_eq!(r.decide(t0), Decision::Start);
        r.start(hv.clone(), instance(), Action::Reboot, Cause::Lost, t0);
        assert_eq!(r.decide(t0), Decision::InProgress);
        let (action, cause, result) = r.finished().await;
        assert_eq!((action, cause), (Action::Reboot, Cause::Lost));
        assert!(result.is_ok());
        assert_eq!(r.decide(t0), Decision::Start);
        r.start(hv, instance(), Action::Stop, Cause::Unhealthy, t0);
        r.finished().await.2.unwrap();
        assert_eq!(r.decide(t0), Decision::Refused { newly: true });
        assert_eq!(r.decide(t0), Decision::Refused { newly: false });
        assert!(r.is_unrecoverable(t0 + Duration::from_secs(99)));
        assert!(!r.is_unrecoverable(t0 + Duration::from_secs(100)));
        assert_eq!(r.started_total(), 2);
        let mut history = r.into_history();
        assert!(history.allows(limit, t0 + Duration::from_secs(100)));
        assert!(history.is_empty());
    }

    #[test]
    fn the_error_chain_names_every_cause() {
        let e = HypervisorError::Io {
            target: "/run/x.qmp".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(
            error_chain(&e),
            "Cannot reach the hypervisor for /run/x.qmp: gone"
        );
    }
}
