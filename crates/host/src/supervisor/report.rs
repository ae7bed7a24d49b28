//! What a supervisor records: journal events, logs, the shared status, and recoveries.
//!
//! Events the guest can provoke at will (connects, starts, misses, unhealthy answers, exits,
//! refused messages) pass through per-guest throttles and carry the count of events held back;
//! failures and recoveries are always written, and are bounded by the protocol's timing and
//! the recovery limit.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tether_hypervisor::{Action, HypervisorError};
use tokio::time::Instant;

use super::order::cause_name;
use super::Supervisor;
use crate::fsm::{Cause, Output, Phase, Stopped};
use crate::journal::{Details, Event, EventKind};
use crate::limits::{Throttle, TokenBucket};
use crate::recovery::error_chain;
use crate::status::{set_text, GuestState};

/// The per-guest throttles of logs, journal events and nacks.
pub(super) struct Throttles {
    pub chatter: Throttle,
    pub protocol_journal: Throttle,
    pub protocol_log: Throttle,
    pub mismatch_log: Throttle,
    pub recovery_log: Throttle,
    pub connect_log: Throttle,
    pub nacks: TokenBucket,
}

impl Throttles {
    pub(super) fn new() -> Throttles {
        let minute = Duration::from_secs(60);
        Throttles {
            chatter: Throttle::new(30, minute),
            protocol_journal: Throttle::new(5, minute),
            protocol_log: Throttle::new(1, Duration::from_secs(10)),
            mismatch_log: Throttle::new(1, minute),
            recovery_log: Throttle::new(1, minute),
            connect_log: Throttle::new(1, minute),
            nacks: TokenBucket::new(5, 10, Instant::now()),
        }
    }
}

impl Supervisor {
    /// Writes a journal event.
    pub(super) fn journal(&self, kind: EventKind, details: Details) {
        let name = self.fsm.guest().map(|g| g.name.clone()).unwrap_or_default();
        self.settings.journal.record(Event {
            at: SystemTime::now(),
            instance: self.uuid.clone(),
            name,
            kind,
            details,
        });
    }

    /// Writes a journal event the guest can provoke at will, throttled.
    pub(super) fn chatter(&mut self, kind: EventKind, mut details: Details) {
        if let Some(suppressed) = self.throttles.chatter.allow(Instant::now()) {
            details.suppressed = (suppressed > 0).then_some(suppressed);
            self.journal(kind, details);
        }
    }

    /// Records a state machine event that is neither a message nor a recovery.
    pub(super) fn report(&mut self, output: Output, now: Instant) {
        let uuid = Arc::clone(&self.uuid);
        match output {
            Output::Started { rtt_us } => {
                self.backoff.reset();
                self.end_episode();
                let guest = self.fsm.guest();
                let notices = guest.map(|g| g.notices);
                let details = Details {
                    rtt_us: Some(rtt_us),
                    interval_ms: guest.map(|g| g.interval.as_millis() as u64),
                    action: guest.map(|g| g.corrective_action.as_str()),
                    restart_secs: notices.map(|n| n.restart_secs),
                    vote_secs: notices.map(|n| n.vote_secs),
                    shutdown_secs: notices.map(|n| n.shutdown_secs),
                    suspend_secs: notices.map(|n| n.suspend_secs),
                    resume_secs: notices.map(|n| n.resume_secs),
                    ..Details::default()
                };
                self.chatter(EventKind::HeartbeatStarted, details);
                tracing::info!(instance = %uuid, rtt_us, "Heartbeat started");
            }
            Output::Missed { consecutive } => {
                let details = Details {
                    misses: Some(consecutive),
                    ..Details::default()
                };
                self.chatter(EventKind::HeartbeatMissed, details);
            }
            Output::Lost { misses, action } => {
                let action = action.as_str();
                let details = Details {
                    misses: Some(misses),
                    action: Some(action),
                    ..Details::default()
                };
                self.journal(EventKind::HeartbeatLost, details);
                tracing::warn!(instance = %uuid, misses, action, "Heartbeat lost");
            }
            Output::Unhealthy { action, reason } => {
                let action = action.as_str();
                tracing::warn!(instance = %uuid, action, reason, "Guest reports itself unhealthy");
                let details = Details {
                    action: Some(action),
                    reason: Some(reason),
                    ..Details::default()
                };
                self.chatter(EventKind::GuestUnhealthy, details);
            }
            Output::Exited { reason } => {
                tracing::info!(instance = %uuid, reason, "Guest heartbeat daemon exited");
                let details = Details {
                    reason: Some(reason),
                    ..Details::default()
                };
                self.chatter(EventKind::GuestExited, details);
            }
            Output::Mismatch { got, expected } => {
                if let Some(suppressed) = self.throttles.mismatch_log.allow(now) {
                    tracing::warn!(instance = %uuid, got, expected, suppressed,
                        "Answer does not match the latest challenge; ignored");
                }
            }
            Output::Held { misses } => {
                tracing::info!(instance = %uuid, misses,
                    "Guest silent during a planned disruption; waiting for it to register again");
                let details = Details {
                    misses: Some(misses),
                    ..Details::default()
                };
                self.journal(EventKind::HeartbeatHeld, details);
            }
            Output::InitWhileHeartbeating => {
                tracing::info!(instance = %uuid, "Guest registered again while heartbeating; starting over");
            }
            Output::Send(_)
            | Output::Refused { .. }
            | Output::Recover { .. }
            | Output::ActionAnswered(_) => {}
        }
    }

    /// Starts a corrective action unless reporting is off, the controller takes it, one
    /// runs or the limit is reached.
    pub(super) fn recover(&mut self, action: Action, cause: Cause, now: Instant) {
        let uuid = Arc::clone(&self.uuid);
        if !self.settings.reporting.allows_action(&uuid) {
            if let Some(suppressed) = self.throttles.recovery_log.allow(now) {
                tracing::info!(instance = %uuid, %action, cause = cause_name(cause), suppressed,
                    "Reporting is disabled for this guest; no corrective action");
            }
            return;
        }
        if self.defer(action, cause, now) {
            return;
        }
        self.start_recovery(action, cause, None, now);
    }

    pub(super) fn refuse_recovery(
        &mut self,
        action: Action,
        cause: Cause,
        newly: bool,
        now: Instant,
    ) {
        let limit = self.settings.recovery_limit;
        let reason = format!(
            "{} recoveries within {} s already",
            limit.max,
            limit.window.as_secs()
        );
        if newly {
            let details = Details {
                action: Some(action.as_str()),
                cause: Some(cause_name(cause)),
                reason: Some(reason.clone()),
                ..Details::default()
            };
            self.journal(EventKind::Unrecoverable, details);
        }
        if newly || self.throttles.recovery_log.allow(now).is_some() {
            tracing::error!(instance = %self.uuid, %action, cause = cause_name(cause), reason,
                "Guest is unrecoverable; recording the failure only");
        }
    }

    /// Records the outcome of a recovery.
    pub(super) fn on_recovery_done(&mut self, done: (Action, Cause, Result<(), HypervisorError>)) {
        let (action, cause, result) = done;
        let mut details = Details {
            action: Some(action.as_str()),
            cause: Some(cause_name(cause)),
            ..Details::default()
        };
        match result {
            Ok(()) => {
                tracing::info!(instance = %self.uuid, %action, "Recovery done");
                self.journal(EventKind::RecoveryDone, details);
            }
            Err(e) => {
                let error = error_chain(&e);
                tracing::error!(instance = %self.uuid, %action, error, "Recovery failed");
                details.error = Some(error);
                self.journal(EventKind::RecoveryFailed, details);
            }
        }
    }

    fn state(&mut self) -> GuestState {
        if self.recovery.is_running() {
            return GuestState::Recovering;
        }
        if self.recovery.is_unrecoverable(Instant::now()) {
            return GuestState::Unrecoverable;
        }
        if !self.connected {
            return GuestState::Connecting;
        }
        match (self.fsm.phase(), self.fsm.stopped()) {
            (Phase::WaitingInit, Some(Stopped::Lost)) => GuestState::Lost,
            (Phase::WaitingInit, Some(Stopped::Exited)) => GuestState::Exited,
            (Phase::WaitingInit, Some(Stopped::Held)) => GuestState::Held,
            (Phase::WaitingInit, None) => GuestState::WaitingInit,
            _ if self.fsm.consecutive_misses() > 0 => GuestState::Missed,
            _ if self.fsm.health() == Some(tether_proto::Health::Unhealthy) => {
                GuestState::Unhealthy
            }
            _ if self.fsm.is_heartbeating() => GuestState::Heartbeating,
            _ => GuestState::WaitingInit,
        }
    }

    /// Copies what the supervisor knows into the shared status.
    pub(super) fn refresh_status(&mut self) {
        if self.episode.is_some() && self.heartbeats_healthy() {
            self.end_episode();
        }
        let state = self.state();
        let fsm = &self.fsm;
        let mut s = self.status.lock();
        s.state = state;
        s.connected = self.connected;
        if let Some(guest) = fsm.guest() {
            if s.name != guest.name {
                s.name.clone_from(&guest.name);
            }
            s.interval_ms = u32::try_from(guest.interval.as_millis()).ok();
            set_text(
                &mut s.corrective_action,
                Some(guest.corrective_action.as_str()),
            );
        }
        s.last_rtt_us = fsm.last_rtt_us();
        s.misses_total = fsm.misses_total();
        s.consecutive_misses = fsm.consecutive_misses();
        set_text(&mut s.health, fsm.health().map(|h| h.as_str()));
        if s.reason != fsm.reason() {
            s.reason = fsm.reason().to_owned();
        }
        s.recoveries = self.recovery.started_total();
        s.challenges = fsm.challenges();
        s.protocol_errors = self.protocol_errors;
        s.connects = self.connects;
    }
}
