//! Lifecycle actions in the heartbeat machine (part of the pure [`Heartbeat`]): who is asked,
//! when the one `action_response` goes out, and what stops the voters.

use std::time::Duration;

use tether_proto::{ActionNotify, ActionResponse, Message, VoteResult};
use tokio::time::Instant;

use super::{Action, Heartbeat, State};
use crate::vote::{Answer, AppVoter, Tally, Voter};

/// A lifecycle action waiting for its voters.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    notify: ActionNotify,
    run: u64,
    pub(super) deadline: Instant,
    tally: Tally,
}

impl Pending {
    /// The `action_response` with the merged answers.
    fn answer(&self) -> Action {
        let (result, log) = self.tally.result(self.notify.notification_type);
        respond(&self.notify, result, log)
    }

    /// Stops the voters still asked.
    fn stop_voters(&self, out: &mut Vec<Action>) {
        if self.tally.waits_for_script() {
            out.push(Action::StopEventScript);
        }
        if self.tally.waits_for_apps() {
            out.push(Action::StopAskingApps(self.run));
        }
    }
}

impl Heartbeat {
    /// Starts action `notify`, aborting the pending one; answers at once when not enabled.
    pub(super) fn action_notify(
        &mut self,
        notify: ActionNotify,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.abort_action(out);
        if self.state != State::Enabled {
            out.push(respond(&notify, VoteResult::Complete, String::new()));
            return;
        }
        let budget = match notify.timeout_ms {
            ms if ms > 1000 => ms - 1000,
            ms => ms,
        };
        self.runs += 1;
        let (run, event_type, notification_type) =
            (self.runs, notify.event_type, notify.notification_type);
        if self.settings.event_script {
            out.push(Action::RunEventScript {
                run,
                notification_type,
                event_type,
            });
        }
        out.push(Action::AskApps {
            run,
            notification_type,
            event_type,
        });
        self.pending = Some(Pending {
            notify,
            run,
            deadline: now + Duration::from_millis(budget.into()),
            tally: Tally::new(self.settings.event_script),
        });
    }

    /// Drops the pending action without an answer, stopping its voters.
    pub(super) fn abort_action(&mut self, out: &mut Vec<Action>) {
        if let Some(pending) = self.pending.take() {
            pending.stop_voters(out);
        }
    }

    /// Adds the applications asked about action `run`.
    pub(super) fn apps_asked(&mut self, run: u64, apps: Vec<AppVoter>, out: &mut Vec<Action>) {
        if let Some(pending) = self.pending.as_mut().filter(|p| p.run == run) {
            pending.tally.list_apps(apps);
            self.answer_when_done(out);
        }
    }

    /// Counts `voter`'s answer to action `run`.
    pub(super) fn counted(
        &mut self,
        run: u64,
        voter: Voter,
        answer: Answer,
        out: &mut Vec<Action>,
    ) {
        if let Some(pending) = self.pending.as_mut().filter(|p| p.run == run) {
            pending.tally.count(voter, answer);
            self.answer_when_done(out);
        }
    }

    /// Answers the pending action once every voter has answered.
    fn answer_when_done(&mut self, out: &mut Vec<Action>) {
        if let Some(pending) = self.pending.take_if(|p| p.tally.is_done()) {
            out.push(pending.answer());
        }
    }

    /// Answers the pending action with what is in once its deadline has passed.
    pub(super) fn action_deadline(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(mut pending) = self.pending.take_if(|p| p.deadline <= now) {
            pending.stop_voters(out);
            out.push(Action::VoteTimedOut(pending.tally.close()));
            out.push(pending.answer());
        }
    }
}

/// The `action_response` to `notify`.
pub(super) fn respond(notify: &ActionNotify, vote_result: VoteResult, log_msg: String) -> Action {
    Action::Send(Message::ActionResponse(ActionResponse {
        invocation_id: notify.invocation_id,
        event_type: notify.event_type,
        notification_type: notify.notification_type,
        vote_result,
        log_msg,
    }))
}
