//! One lifecycle operation on one guest, without I/O: vote, notify, act, notify again.
//!
//! The event table is the contract. Operations the host carries out itself (stop, reboot,
//! pause, suspend) ask a revocable vote, then send an irrevocable pre-notification with the
//! event's notice time, then act through the hypervisor. Their counterparts (unpause,
//! resume) act first and then post-notify once the guest heartbeats again. The begin and end
//! of a resize or migration are carried out by the cloud elsewhere, so here they are a vote
//! and a pre-notification (`*_begin`) or a post-notification (`*_end`) with nothing to act.
//!
//! [`Run::start`] and [`Run::step`] take the guest's situation ([`Guest`]) and the current
//! instant and append [`Effect`]s for the supervisor to carry out. The caller owns the timer:
//! it steps with [`RunInput::Timer`] at [`Run::deadline`]. Where the reference host waits the
//! vote time for every answer, this one waits the notice time the table gives each
//! notification; an answer that comes after its step timed out is ignored, never reported a
//! second time.
//!
//! A [`Scope`] other than [`Scope::Full`] runs a single step, for a VIM that asks the vote and
//! sends the notifications as separate calls and carries the action out itself:
//! [`Scope::Vote`] only the revocable vote (nothing is held or done), [`Scope::Notify`] only the
//! irrevocable notification, holding heartbeat loss back for a disruptive event as the full
//! sequence does at its pre-notification.

#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tether_hypervisor::Action;
use tether_proto::{ActionNotify, ActionResponse, EventType, NotificationType, VoteResult};
use tokio::time::Instant;

use crate::fsm::{Hold, Notices};

/// Where an operation stands (pinned: `GET /v1/operations/{id}` shows these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    /// Waiting for the guest's vote.
    Voting,
    /// Waiting for the guest to prepare (pre-notification).
    Notifying,
    /// The hypervisor is carrying the action out.
    Acting,
    /// Waiting for the guest to heartbeat again, then for its answer to the post-notification.
    PostNotifying,
    /// Finished: the action was carried out (or handed to the cloud) and the guest told.
    Done,
    /// The guest vetoed the operation; nothing happened to the VM.
    Rejected,
    /// The hypervisor could not carry the action out.
    Failed,
}

impl OpState {
    /// The name shown in the API and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Voting => "voting",
            OpState::Notifying => "notifying",
            OpState::Acting => "acting",
            OpState::PostNotifying => "post_notifying",
            OpState::Done => "done",
            OpState::Rejected => "rejected",
            OpState::Failed => "failed",
        }
    }

    /// Whether the operation has ended.
    pub fn is_final(self) -> bool {
        matches!(self, OpState::Done | OpState::Rejected | OpState::Failed)
    }
}

/// How much of the sequence an operation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Vote, notify, act and notify again, as the event table says.
    #[default]
    Full,
    /// Only the revocable vote: done when accepted (or unanswered), rejected when vetoed.
    Vote,
    /// Only the irrevocable notification with the event's notice time; a disruptive event
    /// (one the table lets the guest vote on) holds heartbeat loss back first.
    Notify,
}

impl Scope {
    /// The scope's name in the API (`only`); `None` for [`Scope::Full`].
    pub fn only(self) -> Option<&'static str> {
        match self {
            Scope::Full => None,
            Scope::Vote => Some("vote"),
            Scope::Notify => Some("notify"),
        }
    }

    /// The scope named by an API `only` value.
    pub fn from_only(only: &str) -> Option<Scope> {
        match only {
            "vote" => Some(Scope::Vote),
            "notify" => Some(Scope::Notify),
            _ => None,
        }
    }
}

/// What the table says about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The guest may veto it, and is told before.
    pub votes: bool,
    /// The guest is told after.
    pub post_notifies: bool,
    /// What the host's hypervisor does; `None` when the cloud does the work elsewhere.
    pub act: Option<Action>,
}

/// The table row of `event`; `None` for `unknown`, which no operation can be.
pub fn plan(event: EventType) -> Option<Plan> {
    let (votes, act) = match event {
        EventType::Stop => (true, Some(Action::Stop)),
        EventType::Reboot => (true, Some(Action::Reboot)),
        EventType::Pause => (true, Some(Action::Pause)),
        EventType::Suspend => (true, Some(Action::Suspend)),
        EventType::Unpause => (false, Some(Action::Unpause)),
        EventType::Resume => (false, Some(Action::Resume)),
        EventType::ResizeBegin | EventType::LiveMigrateBegin | EventType::ColdMigrateBegin => {
            (true, None)
        }
        EventType::ResizeEnd | EventType::LiveMigrateEnd | EventType::ColdMigrateEnd => {
            (false, None)
        }
        EventType::Unknown => return None,
    };
    Some(Plan {
        votes,
        post_notifies: !votes,
        act,
    })
}

/// The notice time of an irrevocable notification of `event`, in seconds.
pub fn notice_secs(event: EventType, notices: &Notices) -> u32 {
    match event {
        EventType::Stop | EventType::Reboot => notices.shutdown_secs,
        EventType::Pause
        | EventType::Suspend
        | EventType::ResizeBegin
        | EventType::LiveMigrateBegin
        | EventType::ColdMigrateBegin => notices.suspend_secs,
        EventType::Unpause
        | EventType::Resume
        | EventType::ResizeEnd
        | EventType::LiveMigrateEnd
        | EventType::ColdMigrateEnd => notices.resume_secs,
        EventType::Unknown => notices.vote_secs,
    }
}

/// What the operation needs to know about the guest at each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guest {
    /// The guest answers challenges now, so it can vote and be told.
    pub heartbeating: bool,
    /// Invocation id of its accepted `init` (echoed in every `action_notify`).
    pub invocation_id: u32,
    /// Its notice times (the reference defaults before any `init`).
    pub notices: Notices,
}

/// One thing that happened to an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunInput {
    /// The guest answered an `action_notify`.
    Answer(ActionResponse),
    /// [`Run::deadline`] has come.
    Timer,
    /// The hypervisor finished; `Err` holds the cause chain.
    Acted(Result<(), String>),
    /// The guest heartbeats again (its first healthy answer after an `init`).
    GuestBack,
}

/// What the supervisor must do for an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send this `action_notify` to the guest.
    Notify(ActionNotify),
    /// Hold heartbeat loss back: the guest was told of a disruption.
    Hold(Hold),
    /// End the hold: the disruption will not happen.
    Release,
    /// Carry this action out through the hypervisor; answer with [`RunInput::Acted`].
    Act(Action),
    /// The VM was paused, suspended or rebooted: stop challenging until the guest registers
    /// again, held as this says.
    Quiesce(Hold),
    /// The operation ended; [`Run::state`] says how.
    Finished,
}

/// One step of an operation as recorded (pinned: the `steps` of `GET /v1/operations/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// `vote`, `notify`, `act`, `wait_guest` or `post_notify`.
    pub step: &'static str,
    /// The event the guest was asked about or told of, or the action carried out.
    pub event: &'static str,
    /// When the step started, milliseconds after the operation started.
    pub started_ms: u64,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
    /// `accept`, `reject`, `complete`, `timeout`, `error`, `skipped`, `done` or `failed`.
    pub outcome: &'static str,
    /// The guest's reason, a hypervisor error, or why the step was skipped.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Voting,
    Notifying,
    Acting,
    AwaitingGuest,
    PostNotifying,
    Finished,
}

/// A running lifecycle operation.
#[derive(Debug)]
pub struct Run {
    event: EventType,
    plan: Plan,
    scope: Scope,
    state: OpState,
    stage: Stage,
    started: Instant,
    started_wall: SystemTime,
    stage_started: Instant,
    deadline: Option<Instant>,
    reason: Option<String>,
    answer: Option<VoteResult>,
    steps: Vec<Step>,
}

impl Run {
    /// Starts an operation for `event` at `now`; `None` for an event no operation can be.
    pub fn start(
        event: EventType,
        guest: Guest,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Option<Run> {
        Run::start_scoped(event, Scope::Full, guest, now, out)
    }

    /// Starts the part `scope` of an operation for `event` at `now`.
    pub fn start_scoped(
        event: EventType,
        scope: Scope,
        guest: Guest,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Option<Run> {
        let plan = plan(event)?;
        let mut run = Run {
            event,
            plan,
            scope,
            state: OpState::Voting,
            stage: Stage::Voting,
            started: now,
            started_wall: SystemTime::now(),
            stage_started: now,
            deadline: None,
            reason: None,
            answer: None,
            steps: Vec::new(),
        };
        match scope {
            Scope::Full if plan.votes => run.vote(guest, now, out),
            Scope::Full => run.act(guest, now, out),
            Scope::Vote => run.vote(guest, now, out),
            Scope::Notify => run.notify(guest, now, out),
        }
        Some(run)
    }

    /// Feeds one input at `now`; appends what must be done to `out`. Inputs that do not
    /// belong to the current step (a late or stray answer) change nothing and return false.
    pub fn step(
        &mut self,
        input: RunInput,
        guest: Guest,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> bool {
        match (self.stage, input) {
            (Stage::Voting, RunInput::Answer(r))
                if self.expects(&r, NotificationType::Revocable) =>
            {
                self.voted(r, guest, now, out);
            }
            (Stage::Voting, RunInput::Timer) => {
                self.timed_out("vote", "accept", now);
                self.after_vote(guest, now, out);
            }
            (Stage::Notifying, RunInput::Answer(r))
                if self.expects(&r, NotificationType::Irrevocable) =>
            {
                self.answered("notify", r, now);
                self.after_notify(guest, now, out);
            }
            (Stage::Notifying, RunInput::Timer) => {
                self.timed_out("notify", "complete", now);
                self.after_notify(guest, now, out);
            }
            (Stage::Acting, RunInput::Acted(result)) => self.acted(result, guest, now, out),
            (Stage::AwaitingGuest, RunInput::GuestBack) => {
                self.record("wait_guest", "heartbeat", now, "done", String::new());
                self.post_notify(guest, now, out);
            }
            (Stage::AwaitingGuest, RunInput::Timer) => {
                let detail = format!(
                    "the guest did not heartbeat within {} s; post-notification skipped",
                    guest.notices.restart_secs
                );
                self.record("wait_guest", "heartbeat", now, "timeout", detail);
                self.finish(OpState::Done, None, out);
            }
            (Stage::PostNotifying, RunInput::Answer(r))
                if self.expects(&r, NotificationType::Irrevocable) =>
            {
                self.answered("post_notify", r, now);
                self.finish(OpState::Done, None, out);
            }
            (Stage::PostNotifying, RunInput::Timer) => {
                self.timed_out("post_notify", "complete", now);
                self.finish(OpState::Done, None, out);
            }
            _ => return false,
        }
        true
    }

    /// Records the guest's answer as the outcome of `step`.
    fn answered(&mut self, step: &'static str, r: ActionResponse, now: Instant) {
        self.answer = Some(r.vote_result);
        self.record(
            step,
            self.event.as_str(),
            now,
            r.vote_result.as_str(),
            r.log_msg,
        );
    }

    /// Records that `step` got no answer in time, and what the silence counts as.
    fn timed_out(&mut self, step: &'static str, counted_as: &str, now: Instant) {
        let ms = self.waited_ms(now);
        let detail = format!("no answer within {ms} ms; counted as {counted_as}");
        self.record(step, self.event.as_str(), now, "timeout", detail);
    }

    fn expects(&self, r: &ActionResponse, kind: NotificationType) -> bool {
        r.event_type == self.event && r.notification_type == kind
    }

    fn waited_ms(&self, now: Instant) -> u64 {
        millis(now.saturating_duration_since(self.stage_started))
    }

    fn enter(&mut self, stage: Stage, state: OpState, now: Instant, wait: Option<Duration>) {
        self.stage = stage;
        self.state = state;
        self.stage_started = now;
        self.deadline = wait.map(|w| now + w);
    }

    fn vote(&mut self, guest: Guest, now: Instant, out: &mut Vec<Effect>) {
        if !guest.heartbeating {
            let detail = "the guest is not heartbeating".to_owned();
            self.record("vote", self.event.as_str(), now, "skipped", detail);
            return self.after_vote(guest, now, out);
        }
        let secs = guest.notices.vote_secs;
        self.enter(Stage::Voting, OpState::Voting, now, Some(secs_to(secs)));
        out.push(self.notification(guest, NotificationType::Revocable, secs));
    }

    fn voted(&mut self, r: ActionResponse, guest: Guest, now: Instant, out: &mut Vec<Effect>) {
        if r.vote_result == VoteResult::Reject {
            let reason = if r.log_msg.is_empty() {
                format!("the guest rejected {}", self.event)
            } else {
                r.log_msg.clone()
            };
            self.answered("vote", r, now);
            return self.finish(OpState::Rejected, Some(reason), out);
        }
        self.answered("vote", r, now);
        self.after_vote(guest, now, out);
    }

    /// An accepted (or unanswered, or skipped) vote: the notification, or the end of a vote
    /// alone.
    fn after_vote(&mut self, guest: Guest, now: Instant, out: &mut Vec<Effect>) {
        match self.scope {
            Scope::Vote => self.finish(OpState::Done, None, out),
            Scope::Full | Scope::Notify => self.notify(guest, now, out),
        }
    }

    /// The pre-notification; from here on the guest knows, so loss of a disruptive event is
    /// held back.
    fn notify(&mut self, guest: Guest, now: Instant, out: &mut Vec<Effect>) {
        if self.plan.votes {
            let restart = secs_to(guest.notices.restart_secs);
            out.push(Effect::Hold(match self.plan.act {
                Some(Action::Pause | Action::Suspend) => Hold::UntilReinit,
                _ => Hold::Until(now + restart),
            }));
        }
        if !guest.heartbeating {
            let detail = "the guest is not heartbeating".to_owned();
            self.record("notify", self.event.as_str(), now, "skipped", detail);
            return self.after_notify(guest, now, out);
        }
        let secs = notice_secs(self.event, &guest.notices);
        self.enter(
            Stage::Notifying,
            OpState::Notifying,
            now,
            Some(secs_to(secs)),
        );
        out.push(self.notification(guest, NotificationType::Irrevocable, secs));
    }

    /// The notification is answered (or skipped): the action, or the end of a notification
    /// alone.
    fn after_notify(&mut self, guest: Guest, now: Instant, out: &mut Vec<Effect>) {
        match self.scope {
            Scope::Notify => self.finish(OpState::Done, None, out),
            Scope::Full | Scope::Vote => self.act(guest, now, out),
        }
    }

    fn act(&mut self, guest: Guest, now: Instant, out: &mut Vec<Effect>) {
        match self.plan.act {
            Some(action) => {
                self.enter(Stage::Acting, OpState::Acting, now, None);
                out.push(Effect::Act(action));
            }
            None => self.after_act(guest, now, out),
        }
    }

    fn acted(
        &mut self,
        result: Result<(), String>,
        guest: Guest,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        let action = self.plan.act.map_or("none", Action::as_str);
        match result {
            Ok(()) => {
                self.record("act", action, now, "done", String::new());
                let restart = secs_to(guest.notices.restart_secs);
                match self.plan.act {
                    Some(Action::Pause | Action::Suspend) => {
                        out.push(Effect::Quiesce(Hold::UntilReinit));
                    }
                    Some(Action::Reboot) => out.push(Effect::Quiesce(Hold::Until(now + restart))),
                    _ => {}
                }
                self.after_act(guest, now, out);
            }
            Err(error) => {
                self.record("act", action, now, "failed", error.clone());
                if self.plan.votes {
                    out.push(Effect::Release);
                }
                self.finish(OpState::Failed, Some(error), out);
            }
        }
    }

    fn after_act(&mut self, guest: Guest, now: Instant, out: &mut Vec<Effect>) {
        if !self.plan.post_notifies {
            return self.finish(OpState::Done, None, out);
        }
        if guest.heartbeating {
            return self.post_notify(guest, now, out);
        }
        let restart = secs_to(guest.notices.restart_secs);
        self.enter(
            Stage::AwaitingGuest,
            OpState::PostNotifying,
            now,
            Some(restart),
        );
    }

    fn post_notify(&mut self, guest: Guest, now: Instant, out: &mut Vec<Effect>) {
        let secs = notice_secs(self.event, &guest.notices);
        self.enter(
            Stage::PostNotifying,
            OpState::PostNotifying,
            now,
            Some(secs_to(secs)),
        );
        out.push(self.notification(guest, NotificationType::Irrevocable, secs));
    }

    fn notification(&self, guest: Guest, kind: NotificationType, secs: u32) -> Effect {
        Effect::Notify(ActionNotify {
            invocation_id: guest.invocation_id,
            event_type: self.event,
            notification_type: kind,
            timeout_ms: secs.saturating_mul(1000),
        })
    }

    fn finish(&mut self, state: OpState, reason: Option<String>, out: &mut Vec<Effect>) {
        self.stage = Stage::Finished;
        self.state = state;
        self.deadline = None;
        self.reason = reason;
        out.push(Effect::Finished);
    }

    fn record(
        &mut self,
        step: &'static str,
        event: &'static str,
        now: Instant,
        outcome: &'static str,
        detail: String,
    ) {
        self.steps.push(Step {
            step,
            event,
            started_ms: millis(self.stage_started.saturating_duration_since(self.started)),
            took_ms: millis(now.saturating_duration_since(self.stage_started)),
            outcome,
            detail,
        });
        self.stage_started = now;
    }

    /// The event this operation is about.
    pub fn event(&self) -> EventType {
        self.event
    }

    /// How much of the sequence it runs.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Where it stands.
    pub fn state(&self) -> OpState {
        self.state
    }

    /// Why it was rejected or failed.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The guest's latest answer (`vote_result`); `None` while it has not answered (a step
    /// that timed out or was skipped records no answer).
    pub fn answer(&self) -> Option<VoteResult> {
        self.answer
    }

    /// Every step recorded so far.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// When it started (wall clock).
    pub fn started_at(&self) -> SystemTime {
        self.started_wall
    }

    /// When the caller must step with [`RunInput::Timer`].
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

fn secs_to(secs: u32) -> Duration {
    Duration::from_secs(u64::from(secs))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
