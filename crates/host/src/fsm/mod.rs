//! The host's per-guest heartbeat state machine, without I/O.
//!
//! `waiting_init → waiting_response ⇄ waiting_challenge`, as the reference guestServer runs it.
//! [`HeartbeatFsm::step`] takes one [`Input`] (a decoded frame or the expiry of the interval
//! timer) and the current instant, updates the state and appends [`Output`]s: messages to send
//! and events for the journal and the recovery policy. The caller owns the timer: it sleeps
//! until [`HeartbeatFsm::deadline`] and then steps with [`Input::Timer`]. Challenges are drawn
//! from a seeded generator, so a test with a fixed seed is fully deterministic.

use std::time::Duration;

use tether_hypervisor::Action;
use tether_proto::{
    ActionResponse, ChallengeResponse, CorrectiveAction, DecodeError, Health, Init, Message,
    MAX_INT, MIN_INTERVAL_MS,
};
use tokio::time::Instant;

#[cfg(test)]
mod tests;

/// Where the heartbeat with one guest stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // the reference guestServer's state names
pub enum Phase {
    /// Waiting for the guest's `init`; no timer runs.
    WaitingInit,
    /// A challenge is out; the timer counts a miss when it expires first.
    WaitingResponse,
    /// The last challenge was answered; the timer sends the next one.
    WaitingChallenge,
}

/// Why the heartbeat last went back to waiting for an `init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Too many intervals went unanswered.
    Lost,
    /// The guest said it was exiting.
    Exited,
    /// A planned disruption it was told about silenced the guest; see [`Hold`].
    Held,
}

/// How long a planned disruption holds heartbeat loss back (see [`HeartbeatFsm::hold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Until the guest registers again or this instant passes, whichever comes first; a
    /// guest still silent then is lost.
    Until(Instant),
    /// Until the guest registers again, however long that takes (a paused VM).
    UntilReinit,
}

/// The notice times from the guest's `init`, in seconds (already plus one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notices {
    /// Time for a vote.
    pub vote_secs: u32,
    /// Notice before stop and reboot.
    pub shutdown_secs: u32,
    /// Notice before pause, suspend and the start of a resize or migration.
    pub suspend_secs: u32,
    /// Notice after unpause, resume and the end of a resize or migration.
    pub resume_secs: u32,
    /// How long the guest may take to come back after a reboot.
    pub restart_secs: u32,
}

impl Default for Notices {
    /// The reference guest's defaults (10 s each, restart 120 s), plus one as it sends them.
    fn default() -> Notices {
        Notices {
            vote_secs: 11,
            shutdown_secs: 11,
            suspend_secs: 11,
            resume_secs: 11,
            restart_secs: 121,
        }
    }
}

impl Notices {
    fn of(init: &Init) -> Notices {
        Notices {
            vote_secs: init.vote_secs,
            shutdown_secs: init.shutdown_notice_secs,
            suspend_secs: init.suspend_notice_secs,
            resume_secs: init.resume_notice_secs,
            restart_secs: init.restart_secs,
        }
    }
}

/// What the guest told us in its accepted `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestInfo {
    /// Echoed in `init_ack` and every later `nack`.
    pub invocation_id: u32,
    /// The guest's name, for logs.
    pub name: String,
    /// The challenge period, raised to at least [`MIN_INTERVAL_MS`].
    pub interval: Duration,
    /// What to do when the heartbeat is lost.
    pub corrective_action: CorrectiveAction,
    /// Vote and notice times.
    pub notices: Notices,
}

/// One thing that happened to the state machine.
#[derive(Debug)]
pub enum Input {
    /// A frame from the guest, decoded or refused by the decoder.
    Frame(Result<Message, DecodeError>),
    /// The instant returned by [`HeartbeatFsm::deadline`] has come.
    Timer,
}

/// Why a recovery is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The heartbeat was lost; the action is the one from the guest's `init`.
    Lost,
    /// The guest answered unhealthy and asked for the action.
    Unhealthy,
}

/// What the caller must do or record after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this message to the guest.
    Send(Message),
    /// A guest message was refused; answer with a `nack` carrying `nack` (rate-limited).
    Refused {
        /// The reference's `nack` text.
        nack: String,
    },
    /// First healthy answer since the last `init`.
    Started {
        /// Round-trip time of that answer.
        rtt_us: u64,
    },
    /// A challenge went unanswered for one interval; a new one was sent.
    Missed {
        /// Misses in a row so far.
        consecutive: u32,
    },
    /// The heartbeat is lost; back to waiting for an `init`.
    Lost {
        /// Misses in a row, `miss_threshold + 1`.
        misses: u32,
        /// The corrective action from the guest's `init`.
        action: CorrectiveAction,
    },
    /// The guest answered unhealthy and asked for an action.
    Unhealthy {
        /// The requested action.
        action: CorrectiveAction,
        /// The guest's `log_msg`.
        reason: String,
    },
    /// The guest sent `exit`: back to waiting for an `init`, not a failure.
    Exited {
        /// The guest's `log_msg`.
        reason: String,
    },
    /// An answer did not echo the latest challenge; ignored.
    Mismatch {
        /// What the guest sent.
        got: u32,
        /// The latest challenge.
        expected: u32,
    },
    /// The guest answered an `action_notify` (its invocation id matched).
    ActionAnswered(ActionResponse),
    /// Enough intervals went unanswered for a loss, but a [`Hold`] was in force: the
    /// heartbeat waits quietly for the guest's next `init`.
    Held {
        /// Misses in a row.
        misses: u32,
    },
    /// An `init` arrived while heartbeating (the guest restarted, e.g. after a reboot the
    /// agent ordered): the guest is registered afresh at once.
    InitWhileHeartbeating,
    /// Apply a corrective action to the VM.
    Recover {
        /// The action.
        action: Action,
        /// Why.
        cause: Cause,
    },
}

/// The per-guest heartbeat state machine.
#[derive(Debug)]
pub struct HeartbeatFsm {
    miss_threshold: u32,
    min_interval_ms: u32,
    rng: fastrand::Rng,
    phase: Phase,
    guest: Option<GuestInfo>,
    challenge: u32,
    challenge_sent: Option<Instant>,
    deadline: Option<Instant>,
    consecutive_misses: u32,
    misses_total: u64,
    challenges: u64,
    started: bool,
    answered: bool,
    stopped: Option<Stopped>,
    last_rtt_us: Option<u64>,
    health: Option<Health>,
    reason: String,
    hold: Option<Hold>,
}

/// The action a guest's corrective action maps to; `none` and `unknown` ask for nothing.
pub fn action_for(action: CorrectiveAction) -> Option<Action> {
    match action {
        CorrectiveAction::Reboot => Some(Action::Reboot),
        CorrectiveAction::Stop => Some(Action::Stop),
        CorrectiveAction::Log => Some(Action::Log),
        CorrectiveAction::None | CorrectiveAction::Unknown => None,
    }
}

impl HeartbeatFsm {
    /// The shortest interval granted (default [`MIN_INTERVAL_MS`], the reference's floor);
    /// a guest asking for less is challenged at this interval.
    pub fn with_min_interval(mut self, min_interval_ms: u32) -> HeartbeatFsm {
        self.min_interval_ms = min_interval_ms;
        self
    }

    /// A machine waiting for `init`; a loss is declared after `miss_threshold + 1` misses.
    pub fn new(miss_threshold: u32, seed: u64) -> HeartbeatFsm {
        HeartbeatFsm {
            miss_threshold,
            min_interval_ms: MIN_INTERVAL_MS,
            rng: fastrand::Rng::with_seed(seed),
            phase: Phase::WaitingInit,
            guest: None,
            challenge: 0,
            challenge_sent: None,
            deadline: None,
            consecutive_misses: 0,
            misses_total: 0,
            challenges: 0,
            started: false,
            answered: false,
            stopped: None,
            last_rtt_us: None,
            health: None,
            reason: String::new(),
            hold: None,
        }
    }

    /// Feeds one input at `now`; appends what must be done to `out`.
    pub fn step(&mut self, input: Input, now: Instant, out: &mut Vec<Output>) {
        match input {
            Input::Timer => self.on_timer(now, out),
            Input::Frame(Err(error)) => out.push(Output::Refused {
                nack: error.nack_text(),
            }),
            Input::Frame(Ok(message)) => self.on_message(message, now, out),
        }
    }

    /// Forgets the connection: back to waiting for `init`, no timer. Counters are kept.
    pub fn reset(&mut self) {
        self.go_waiting_init();
    }

    fn on_message(&mut self, message: Message, now: Instant, out: &mut Vec<Output>) {
        match message {
            Message::Init(init) => self.on_init(init, now, out),
            Message::ChallengeResponse(r) => self.on_response(r, now, out),
            Message::ActionResponse(r) => self.on_action_response(r, out),
            Message::Exit(exit) => {
                if self.phase != Phase::WaitingInit {
                    self.go_waiting_init();
                    self.stopped = Some(Stopped::Exited);
                    out.push(Output::Exited {
                        reason: exit.log_msg,
                    });
                }
            }
            other => out.push(Output::Refused {
                nack: format!("unsupported message type: {}", other.msg_type()),
            }),
        }
    }

    fn on_init(&mut self, init: Init, now: Instant, out: &mut Vec<Output>) {
        // The reference drops such an init and acks the guest's retry five seconds later; a
        // guest that re-registers has restarted, so tether acks it at once and starts over.
        if self.phase != Phase::WaitingInit {
            self.go_waiting_init();
            out.push(Output::InitWhileHeartbeating);
        }
        let interval_ms = init.heartbeat_interval_ms.max(self.min_interval_ms);
        let notices = Notices::of(&init);
        self.guest = Some(GuestInfo {
            invocation_id: init.invocation_id,
            name: init.name,
            interval: Duration::from_millis(u64::from(interval_ms)),
            corrective_action: init.corrective_action,
            notices,
        });
        self.stopped = None;
        self.hold = None;
        self.consecutive_misses = 0;
        out.push(Output::Send(Message::InitAck {
            invocation_id: init.invocation_id,
        }));
        self.send_challenge(now, out);
    }

    fn on_response(&mut self, r: ChallengeResponse, now: Instant, out: &mut Vec<Output>) {
        if self.phase != Phase::WaitingResponse {
            return;
        }
        if r.heartbeat_response != self.challenge {
            out.push(Output::Mismatch {
                got: r.heartbeat_response,
                expected: self.challenge,
            });
            return;
        }
        let rtt_us = self.challenge_sent.map_or(0, |sent| {
            u64::try_from(now.saturating_duration_since(sent).as_micros()).unwrap_or(u64::MAX)
        });
        self.phase = Phase::WaitingChallenge;
        self.consecutive_misses = 0;
        self.answered = true;
        self.last_rtt_us = Some(rtt_us);
        self.health = Some(r.heartbeat_health);
        if r.heartbeat_health == Health::Healthy {
            if !self.started {
                self.started = true;
                out.push(Output::Started { rtt_us });
            }
            return;
        }
        self.reason = r.log_msg;
        if let Some(action) = action_for(r.corrective_action) {
            out.push(Output::Unhealthy {
                action: r.corrective_action,
                reason: self.reason.clone(),
            });
            out.push(Output::Recover {
                action,
                cause: Cause::Unhealthy,
            });
        }
    }

    fn on_action_response(&mut self, r: ActionResponse, out: &mut Vec<Output>) {
        let expected = self.invocation_id();
        if r.invocation_id == expected {
            out.push(Output::ActionAnswered(r));
        } else {
            out.push(Output::Refused {
                nack: format!(
                    "Invocation id mismatch. Received: {} expect: {expected}",
                    r.invocation_id
                ),
            });
        }
    }

    fn on_timer(&mut self, now: Instant, out: &mut Vec<Output>) {
        let hold_expired = matches!(self.hold, Some(Hold::Until(until)) if until <= now);
        if hold_expired {
            self.hold = None;
        }
        match self.phase {
            Phase::WaitingInit => {
                self.deadline = None;
                if hold_expired && self.stopped == Some(Stopped::Held) {
                    self.declare_lost(out);
                }
            }
            Phase::WaitingChallenge => self.send_challenge(now, out),
            Phase::WaitingResponse => {
                self.consecutive_misses = self.consecutive_misses.saturating_add(1);
                self.misses_total += 1;
                if self.consecutive_misses > self.miss_threshold && self.hold.is_some() {
                    let misses = self.consecutive_misses;
                    self.go_quiet();
                    self.consecutive_misses = misses;
                    out.push(Output::Held { misses });
                } else if self.consecutive_misses > self.miss_threshold {
                    self.declare_lost(out);
                } else {
                    out.push(Output::Missed {
                        consecutive: self.consecutive_misses,
                    });
                    self.send_challenge(now, out);
                }
            }
        }
    }

    fn declare_lost(&mut self, out: &mut Vec<Output>) {
        let misses = self.consecutive_misses.max(1);
        let action = self
            .guest
            .as_ref()
            .map_or(CorrectiveAction::Unknown, |g| g.corrective_action);
        self.go_waiting_init();
        self.stopped = Some(Stopped::Lost);
        out.push(Output::Lost { misses, action });
        if let Some(action) = action_for(action) {
            out.push(Output::Recover {
                action,
                cause: Cause::Lost,
            });
        }
    }

    fn send_challenge(&mut self, now: Instant, out: &mut Vec<Output>) {
        let interval = self
            .interval()
            .unwrap_or(Duration::from_millis(u64::from(self.min_interval_ms)));
        self.challenge = self.rng.u32(0..=MAX_INT);
        self.challenge_sent = Some(now);
        self.challenges += 1;
        self.deadline = Some(now + interval);
        self.phase = Phase::WaitingResponse;
        out.push(Output::Send(Message::Challenge {
            heartbeat_challenge: self.challenge,
        }));
    }

    fn go_waiting_init(&mut self) {
        self.phase = Phase::WaitingInit;
        self.deadline = None;
        self.started = false;
        self.answered = false;
        self.consecutive_misses = 0;
    }

    /// Holds heartbeat loss back for a planned disruption the guest was told about (a
    /// reboot, a pause, a migration): misses are still counted, but instead of a loss the
    /// heartbeat goes quiet and waits for the guest's next `init`, which ends the hold. A
    /// later hold replaces an earlier one.
    pub fn hold(&mut self, hold: Hold) {
        self.hold = Some(hold);
    }

    /// Ends a hold early (the disruption did not happen). A guest already quiet stays so
    /// until its next `init`, as after an `exit`.
    pub fn release(&mut self) {
        self.hold = None;
    }

    /// The hold in force, if any.
    #[cfg(test)]
    pub fn held(&self) -> Option<Hold> {
        self.hold
    }

    /// Stops challenging at once, as a hold does after too many misses, and holds loss back
    /// as `hold` says: for a VM that was just paused or rebooted on purpose.
    pub fn quiesce(&mut self, hold: Hold) {
        self.go_quiet();
        self.hold = Some(hold);
    }

    fn go_quiet(&mut self) {
        self.go_waiting_init();
        self.stopped = Some(Stopped::Held);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the caller must step with [`Input::Timer`]: the next challenge or miss, or, while
    /// waiting for `init` under a timed hold, the end of the hold. `None` otherwise.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.phase, self.hold) {
            (Phase::WaitingInit, Some(Hold::Until(until))) => Some(until),
            (Phase::WaitingInit, _) => None,
            _ => self.deadline,
        }
    }

    /// The guest's accepted `init`, if any.
    pub fn guest(&self) -> Option<&GuestInfo> {
        self.guest.as_ref()
    }

    /// The challenge period, once an `init` was accepted.
    pub fn interval(&self) -> Option<Duration> {
        self.guest.as_ref().map(|g| g.interval)
    }

    /// The invocation id of the accepted `init` (0 before any).
    pub fn invocation_id(&self) -> u32 {
        self.guest.as_ref().map_or(0, |g| g.invocation_id)
    }

    /// Whether a healthy answer came since the last accepted `init`.
    pub fn is_heartbeating(&self) -> bool {
        self.started && self.phase != Phase::WaitingInit
    }

    /// Whether any matching answer (healthy or not) came since the last accepted `init`.
    pub fn is_answering(&self) -> bool {
        self.answered && self.phase != Phase::WaitingInit
    }

    /// Why the heartbeat last stopped, until the next accepted `init`.
    pub fn stopped(&self) -> Option<Stopped> {
        self.stopped
    }

    /// Misses in a row now.
    pub fn consecutive_misses(&self) -> u32 {
        self.consecutive_misses
    }

    /// Every miss counted so far.
    pub fn misses_total(&self) -> u64 {
        self.misses_total
    }

    /// Every challenge sent so far.
    pub fn challenges(&self) -> u64 {
        self.challenges
    }

    /// Round-trip time of the last matching answer.
    pub fn last_rtt_us(&self) -> Option<u64> {
        self.last_rtt_us
    }

    /// Health in the last matching answer.
    pub fn health(&self) -> Option<Health> {
        self.health
    }

    /// The `log_msg` of the last unhealthy answer.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The challenge now outstanding (or last sent).
    #[cfg(test)]
    pub fn challenge(&self) -> u32 {
        self.challenge
    }
}
