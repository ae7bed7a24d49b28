//! The guest heartbeat state machine (pure: `(state, event, now) → actions`).
//!
//! States follow the reference Guest-Client: `initial` until the channel is first seen,
//! `disabled` while no host is connected, `enabling` while `init` is sent (at once, then every
//! `HB_INIT_RETRY` ms, each time with a fresh random invocation id) and `enabled` once an
//! `init_ack` for the current or the previous id arrives. While enabled every `challenge` is
//! answered with the merged health of the applications and the health script
//! ([`crate::health`]); no challenge for
//! `max(2 × HB_INTERVAL, HB_MIN_TIMEOUT)` sends the machine back to `enabling`.
//!
//! The machine also owns the timer of the health-check script (run every
//! `HEALTH_CHECK_INTERVAL` s while enabled) and the pending lifecycle action. An
//! `action_notify` that arrives while enabled is put to the event script and to the registered
//! applications at once; their answers are merged by a [`crate::vote::Tally`] and answered as
//! soon as all are in, or at `timeout_ms − 1000` (when `timeout_ms > 1000`) with what is in by
//! then. In any other state it is answered `complete` at once, as the reference
//! guest does: before `init_ack` the host has no registration to act on. A new `action_notify`
//! aborts the pending one, which is then never answered.
//!
//! It never does I/O: the daemon feeds it [`Event`]s with the current time, carries out the
//! returned [`Action`]s, and wakes it with [`Event::Tick`] at [`Heartbeat::next_deadline`].

use std::fmt;
use std::time::Duration;

use tether_proto::{
    ChallengeResponse, CorrectiveAction, EventType, Exit, Init, Message, MsgType, Nack,
    NotificationType, MAX_INT, MAX_NAME_LEN,
};
use tokio::time::Instant;

use crate::apps::ConnId;
use crate::health::{merge, AppHealth, Reporter, ScriptHealth};
use crate::script::ScriptOutcome;
use crate::vote::{cut, Answer, AppVoter, Voter};
use crate::GuestConfig;
use action::Pending;

#[path = "fsm_action.rs"]
mod action;

/// The `log_msg` of the `exit` sent on shutdown.
pub const EXIT_TEXT: &str = "Exiting...";

/// A heartbeat state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Started; the channel has not been looked at yet.
    Initial,
    /// Registering with the host (`init` sent, waiting for `init_ack`).
    Enabling,
    /// Heartbeating: answering challenges.
    Enabled,
    /// No host on the channel.
    Disabled,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Initial => "initial",
            State::Enabling => "enabling",
            State::Enabled => "enabled",
            State::Disabled => "disabled",
        })
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A host is on the channel.
    ChannelUp,
    /// The host went away (or the channel failed).
    ChannelDown,
    /// A message from the host.
    Received(Message),
    /// The health-check script finished.
    HealthChecked(ScriptHealth),
    /// The registered applications or their health changed.
    AppsChanged(Vec<AppHealth>),
    /// The applications asked about action `run` (see [`Action::AskApps`]).
    AppsAsked {
        /// Which action.
        run: u64,
        /// Who was asked; may be empty.
        apps: Vec<AppVoter>,
    },
    /// An application asked about action `run` answered, or is silent.
    AppVoted {
        /// Which action.
        run: u64,
        /// The application's connection.
        conn: ConnId,
        /// Its answer.
        answer: Answer,
    },
    /// The event script of run `run` finished.
    EventScriptDone {
        /// Which run (see [`Action::RunEventScript`]).
        run: u64,
        /// How it ended.
        outcome: ScriptOutcome,
    },
    /// A deadline may have passed.
    Tick,
    /// The daemon is stopping.
    Shutdown,
}

/// Something the daemon must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this message to the host.
    Send(Message),
    /// The state changed; log it.
    StateChanged {
        /// The old state.
        from: State,
        /// The new state.
        to: State,
    },
    /// Start the health-check script, killing a run still going.
    RunHealthCheck,
    /// Kill the health-check script if it runs.
    StopHealthCheck,
    /// Start the event script with `<notification_type> <event_type>`, killing a run still
    /// going; report it back as [`Event::EventScriptDone`] with this `run`.
    RunEventScript {
        /// Identifies this run.
        run: u64,
        /// First argument.
        notification_type: NotificationType,
        /// Second argument.
        event_type: EventType,
    },
    /// Kill the event script if it runs (no answer is sent for it).
    StopEventScript,
    /// Put action `run` to the registered applications, and report who was asked as
    /// [`Event::AppsAsked`] (an empty list when there is no application API), then each
    /// answer as [`Event::AppVoted`].
    AskApps {
        /// Identifies this action.
        run: u64,
        /// Vote or notification.
        notification_type: NotificationType,
        /// What happens.
        event_type: EventType,
    },
    /// Action `run` is over: drop the applications' later answers to it.
    StopAskingApps(u64),
    /// The deadline of an action passed before these voters answered; they count as accept.
    VoteTimedOut(Vec<String>),
    /// The host refused one of our messages; log it (rate-limited).
    NackReceived(Nack),
    /// An `init_ack` for an id that is neither the current nor the previous one.
    StaleInitAck(u32),
    /// A message that means nothing in this state; log it (rate-limited).
    Ignored(MsgType, State),
}

/// Settings the machine works with, taken from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `init` sent (its `invocation_id` is replaced each time).
    pub init: Init,
    /// `HB_INIT_RETRY`.
    pub init_retry: Duration,
    /// `max(2 × HB_INTERVAL, HB_MIN_TIMEOUT)`.
    pub challenge_timeout: Duration,
    /// `HEALTH_CHECK_INTERVAL` when a script is configured and the interval is not 0.
    pub health_check_interval: Option<Duration>,
    /// Whether an `EVENT_NOTIFICATION_SCRIPT` is configured.
    pub event_script: bool,
    /// `CORRECTIVE_ACTION`.
    pub corrective_action: CorrectiveAction,
}

impl Settings {
    /// The settings for an instance `name` with configuration `config`.
    pub fn new(name: &str, config: &GuestConfig) -> Settings {
        let plus_one = |secs: u32| secs.saturating_add(1);
        let interval = config.health_check_interval_secs;
        Settings {
            init: Init {
                invocation_id: 0,
                name: cut_name(name).to_owned(),
                heartbeat_interval_ms: config.heartbeat_interval_ms,
                vote_secs: plus_one(config.vote_secs),
                shutdown_notice_secs: plus_one(config.shutdown_notice_secs),
                suspend_notice_secs: plus_one(config.suspend_notice_secs),
                resume_notice_secs: plus_one(config.resume_notice_secs),
                restart_secs: plus_one(config.restart_secs),
                corrective_action: config.corrective_action,
            },
            init_retry: Duration::from_millis(config.init_retry_ms.into()),
            challenge_timeout: Duration::from_millis(config.challenge_timeout_ms()),
            health_check_interval: (interval > 0 && config.health_check_script.is_some())
                .then(|| Duration::from_secs(interval.into())),
            event_script: config.event_notification_script.is_some(),
            corrective_action: config.corrective_action,
        }
    }
}

/// `name` cut to at most 63 bytes on a character boundary.
fn cut_name(name: &str) -> &str {
    cut(name, MAX_NAME_LEN)
}

/// The heartbeat state machine of one daemon.
#[derive(Debug)]
pub struct Heartbeat {
    settings: Settings,
    state: State,
    rng: fastrand::Rng,
    init_ids: [Option<u32>; 2],
    next_init: Option<Instant>,
    challenge_deadline: Option<Instant>,
    next_health_check: Option<Instant>,
    script_health: ScriptHealth,
    apps: Vec<AppHealth>,
    reporter: Reporter,
    pending: Option<Pending>,
    runs: u64,
}

impl Heartbeat {
    /// A machine in state `initial`; `seed` seeds the invocation ids.
    pub fn new(settings: Settings, seed: u64) -> Heartbeat {
        Heartbeat {
            settings,
            state: State::Initial,
            rng: fastrand::Rng::with_seed(seed),
            init_ids: [None, None],
            next_init: None,
            challenge_deadline: None,
            next_health_check: None,
            script_health: ScriptHealth::default(),
            apps: Vec::new(),
            reporter: Reporter::new(),
            pending: None,
            runs: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The earliest time at which [`Event::Tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.next_init,
            self.challenge_deadline,
            self.next_health_check,
            self.pending.as_ref().map(|p| p.deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles one event at time `now`.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::ChannelUp => {
                if matches!(self.state, State::Initial | State::Disabled) {
                    self.enter(State::Enabling, now, &mut out);
                }
            }
            Event::ChannelDown => {
                self.abort_action(&mut out);
                if self.state != State::Disabled {
                    self.enter(State::Disabled, now, &mut out);
                }
            }
            Event::Received(message) => self.received(message, now, &mut out),
            Event::HealthChecked(health) => self.script_health = health,
            Event::AppsChanged(apps) => self.apps = apps,
            Event::AppsAsked { run, apps } => self.apps_asked(run, apps, &mut out),
            Event::AppVoted { run, conn, answer } => {
                self.counted(run, Voter::App(conn), answer, &mut out);
            }
            Event::EventScriptDone { run, outcome } => {
                self.counted(run, Voter::Script, Answer::of_script(&outcome), &mut out);
            }
            Event::Tick => self.tick(now, &mut out),
            Event::Shutdown => self.shutdown(now, &mut out),
        }
        out
    }

    fn enter(&mut self, to: State, now: Instant, out: &mut Vec<Action>) {
        let from = std::mem::replace(&mut self.state, to);
        out.push(Action::StateChanged { from, to });
        if from == State::Enabled {
            self.challenge_deadline = None;
            self.next_health_check = None;
            out.push(Action::StopHealthCheck);
        }
        self.next_init = None;
        match to {
            State::Enabling => self.send_init(now, out),
            State::Enabled => {
                self.challenge_deadline = Some(now + self.settings.challenge_timeout);
                self.next_health_check = self.settings.health_check_interval.map(|i| now + i);
            }
            State::Initial | State::Disabled => {}
        }
    }

    fn send_init(&mut self, now: Instant, out: &mut Vec<Action>) {
        let current = self.init_ids[0];
        let id = loop {
            let id = self.rng.u32(0..=MAX_INT);
            if Some(id) != current {
                break id;
            }
        };
        self.init_ids = [Some(id), current];
        self.next_init = Some(now + self.settings.init_retry);
        let mut init = self.settings.init.clone();
        init.invocation_id = id;
        out.push(Action::Send(Message::Init(init)));
    }

    fn received(&mut self, message: Message, now: Instant, out: &mut Vec<Action>) {
        match (self.state, message) {
            (State::Enabling, Message::InitAck { invocation_id }) => {
                if self.init_ids.contains(&Some(invocation_id)) {
                    self.enter(State::Enabled, now, out);
                } else {
                    out.push(Action::StaleInitAck(invocation_id));
                }
            }
            (
                State::Enabled,
                Message::Challenge {
                    heartbeat_challenge,
                },
            ) => self.answer_challenge(heartbeat_challenge, now, out),
            (_, Message::ActionNotify(notify)) => self.action_notify(notify, now, out),
            (_, Message::Nack(nack)) => out.push(Action::NackReceived(nack)),
            (state, other) => out.push(Action::Ignored(other.msg_type(), state)),
        }
    }

    fn answer_challenge(&mut self, challenge: u32, now: Instant, out: &mut Vec<Action>) {
        self.challenge_deadline = Some(now + self.settings.challenge_timeout);
        let verdict = merge(
            &self.apps,
            &self.script_health,
            self.settings.corrective_action,
        );
        let verdict = self.reporter.report(verdict, now);
        out.push(Action::Send(Message::ChallengeResponse(
            ChallengeResponse {
                heartbeat_response: challenge,
                heartbeat_health: verdict.health,
                corrective_action: verdict.action,
                log_msg: verdict.log,
            },
        )));
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let due = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now);
        self.action_deadline(now, out);
        if due(self.next_health_check) {
            self.next_health_check = self.settings.health_check_interval.map(|i| now + i);
            out.push(Action::RunHealthCheck);
        }
        if due(self.challenge_deadline) {
            self.enter(State::Enabling, now, out);
        } else if due(self.next_init) {
            self.send_init(now, out);
        }
    }

    fn shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.abort_action(out);
        if matches!(self.state, State::Enabling | State::Enabled) {
            out.push(Action::Send(Message::Exit(Exit {
                log_msg: EXIT_TEXT.to_owned(),
            })));
        }
        if self.state != State::Initial {
            self.enter(State::Initial, now, out);
        }
    }
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "fsm_vote_tests.rs"]
mod vote_tests;
