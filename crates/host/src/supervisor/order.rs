//! Recoveries decided by the controller: failures this supervisor leaves to it, orders it
//! sends back, and the fallback when it cannot take a failure (see [`crate::deferral`]).

use std::sync::Arc;

use tether_hypervisor::{Action, Instance};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Supervisor;
use crate::deferral::Episode;
use crate::fsm::Cause;
use crate::journal::{Details, EventKind};
use crate::recovery::Decision;

/// A recovery ordered by the controller through the agent's API.
#[derive(Debug)]
pub(crate) struct Order {
    /// The action to apply.
    pub action: Action,
    /// What failed.
    pub cause: Cause,
    /// The controller gave up on the guest (its recovery limit): record it unrecoverable
    /// with this reason instead of acting.
    pub give_up: Option<String>,
    /// Where the outcome goes.
    pub answer: oneshot::Sender<OrderOutcome>,
}

/// What became of an [`Order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOutcome {
    /// The action was handed to the hypervisor.
    Started,
    /// The guest is recorded unrecoverable.
    GivenUp,
    /// The order no longer fits the guest (the text says why); nothing was done.
    Stale(String),
    /// A recovery is running already.
    InProgress,
    /// This agent's own recovery limit refused it (the text says which).
    Refused(String),
    /// Reporting is off for the guest or the host.
    ReportingOff,
}

pub(super) fn cause_name(cause: Cause) -> &'static str {
    match cause {
        Cause::Lost => "heartbeat_lost",
        Cause::Unhealthy => "guest_unhealthy",
    }
}

impl Supervisor {
    /// Leaves a failure to the controller, once per failure (an unhealthy guest asks again
    /// with every answer). Answers false when this agent must act itself.
    pub(super) fn defer(&mut self, action: Action, cause: Cause, now: Instant) -> bool {
        if self.episode.is_some() {
            return true;
        }
        if !self.settings.deferral.defers(action) {
            return false;
        }
        let details = Details {
            action: Some(action.as_str()),
            cause: Some(cause_name(cause)),
            ..Details::default()
        };
        self.journal(EventKind::RecoveryDeferred, details);
        tracing::info!(instance = %self.uuid, %action, cause = cause_name(cause),
            "Leaving the corrective action to the controller");
        self.episode = Some(Box::new(Episode::deferred(
            action,
            cause,
            &self.settings.deferral,
            now,
        )));
        true
    }

    /// When the failure in hand must be checked again.
    pub(super) fn episode_deadline(&self) -> Option<Instant> {
        self.episode.as_ref().and_then(|e| e.check_at)
    }

    /// The wait of a deferred failure is over: recover locally if the controller could not
    /// take it.
    pub(super) fn check_episode(&mut self, now: Instant) {
        let verdict = self.settings.deferral.verdict();
        let Some(episode) = self.episode.as_mut() else {
            return;
        };
        if episode.settle(verdict, now) {
            let (action, cause) = (episode.action, episode.cause);
            tracing::warn!(instance = %self.uuid, %action, cause = cause_name(cause),
                "The controller could not take the failure; recovering the guest locally");
            self.start_recovery(action, cause, None, now);
        }
    }

    /// The guest heartbeats healthy again: the failure in hand is over.
    pub(super) fn end_episode(&mut self) {
        self.episode = None;
        self.recovery.revive();
    }

    /// Carries out a recovery ordered by the controller and answers how it went.
    pub(super) fn on_order(&mut self, order: Order, now: Instant) {
        let outcome = self.take_order(&order, now);
        tracing::info!(instance = %self.uuid, action = %order.action,
            cause = cause_name(order.cause), outcome = ?outcome, "Recovery ordered by the controller");
        let _ = order.answer.send(outcome);
    }

    fn take_order(&mut self, order: &Order, now: Instant) -> OrderOutcome {
        if let Some(reason) = &order.give_up {
            return self.give_up(order, reason);
        }
        if self.recovery.is_running() {
            return OrderOutcome::InProgress;
        }
        if self.heartbeats_healthy() {
            return OrderOutcome::Stale("the guest heartbeats again".to_owned());
        }
        if self.episode.as_ref().is_some_and(|e| e.recovered_locally) {
            return OrderOutcome::Stale(
                "this agent recovered the guest itself while cut off from the controller"
                    .to_owned(),
            );
        }
        if !self.settings.reporting.allows_action(&self.uuid) {
            return OrderOutcome::ReportingOff;
        }
        if let Some(episode) = self.episode.as_mut() {
            episode.check_at = None;
        }
        self.recovery.revive();
        match self.start_recovery(order.action, order.cause, Some("controller"), now) {
            Decision::Start => OrderOutcome::Started,
            Decision::InProgress => OrderOutcome::InProgress,
            Decision::Refused { .. } => {
                let limit = self.settings.recovery_limit;
                OrderOutcome::Refused(format!(
                    "this agent's limit of {} recoveries within {} s is reached",
                    limit.max,
                    limit.window.as_secs()
                ))
            }
        }
    }

    fn give_up(&mut self, order: &Order, reason: &str) -> OrderOutcome {
        if self.heartbeats_healthy() {
            return OrderOutcome::Stale("the guest heartbeats again".to_owned());
        }
        self.recovery.give_up();
        if let Some(episode) = self.episode.as_mut() {
            episode.check_at = None;
        }
        let details = Details {
            action: Some(order.action.as_str()),
            cause: Some(cause_name(order.cause)),
            reason: Some(reason.to_owned()),
            by: Some("controller"),
            ..Details::default()
        };
        self.journal(EventKind::Unrecoverable, details);
        tracing::error!(instance = %self.uuid, reason,
            "The controller gave up on the guest; it is unrecoverable");
        OrderOutcome::GivenUp
    }

    pub(super) fn heartbeats_healthy(&self) -> bool {
        self.connected
            && self.fsm.is_heartbeating()
            && self.fsm.health() != Some(tether_proto::Health::Unhealthy)
    }

    /// Starts `action` through the hypervisor unless one runs or the limit is reached;
    /// `by` names who ordered it when not this agent on its own.
    pub(super) fn start_recovery(
        &mut self,
        action: Action,
        cause: Cause,
        by: Option<&'static str>,
        now: Instant,
    ) -> Decision {
        let decision = self.recovery.decide(now);
        match decision {
            Decision::Start => {
                let details = Details {
                    action: Some(action.as_str()),
                    cause: Some(cause_name(cause)),
                    by,
                    ..Details::default()
                };
                self.journal(EventKind::RecoveryStarted, details);
                tracing::warn!(instance = %self.uuid, %action, cause = cause_name(cause), "Starting recovery");
                let name = self.fsm.guest().map(|g| g.name.clone()).unwrap_or_default();
                let instance = Instance {
                    uuid: self.uuid.to_string(),
                    name,
                };
                let hypervisor = Arc::clone(&self.settings.hypervisor);
                self.recovery
                    .start(hypervisor, instance, action, cause, now);
            }
            Decision::InProgress => {
                if let Some(suppressed) = self.throttles.recovery_log.allow(now) {
                    tracing::info!(instance = %self.uuid, %action, suppressed,
                        "A recovery is already in progress; not starting another");
                }
            }
            Decision::Refused { newly } => self.refuse_recovery(action, cause, newly, now),
        }
        decision
    }
}
