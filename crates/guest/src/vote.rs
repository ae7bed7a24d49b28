//! Collecting the answers to one lifecycle action (pure, no I/O).
//!
//! When the host sends `action_notify`, the guest asks its voters in parallel: the event
//! script, if one is configured, and every application registered at that moment. A [`Tally`]
//! holds who has not answered yet and merges the answers into the one `action_response` the
//! host gets:
//!
//! - one `reject` wins; its reason is the `log_msg` (or `Rejected by <voter>.` when it gave
//!   none). The first reject counts; later ones are only logged;
//! - otherwise `accept` for a vote (`revocable`) and `complete` for a notification
//!   (`irrevocable` or `unknown`), whatever each voter said: an application answers a
//!   notification with `complete`, the event script with exit status 0;
//! - a voter that does not answer in time, leaves while asked, or answers something that is not
//!   a vote (an event script exiting with a status other than 0 or 1) is *silent*: it is
//!   counted as accept, so it never blocks the action, and named in the `log_msg`
//!   (`No answer from …`) unless an accepting voter gave a reason;
//! - with no voter at all the answer is `complete` with an empty `log_msg`, for votes too, as
//!   the reference guest answers.
//!
//! [`crate::fsm`] owns the tally of the pending action; [`crate::apps`] reports the
//! applications' answers.

use tether_proto::{NotificationType, VoteResult, MAX_LOG_LEN};

use crate::apps::ConnId;
use crate::script::ScriptOutcome;

/// The voter name of the event script in logs and `log_msg`.
pub const SCRIPT_NAME: &str = "event script";

/// Who is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voter {
    /// The `EVENT_NOTIFICATION_SCRIPT`.
    Script,
    /// The application registered on this connection.
    App(ConnId),
}

/// An application that was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppVoter {
    /// Its connection.
    pub conn: ConnId,
    /// The name it registered with.
    pub name: String,
}

/// One voter's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Go ahead (`accept` to a vote, `complete` to a notification), with an optional note.
    Accept(String),
    /// Do not, and why (may be empty).
    Reject(String),
    /// No usable answer, and why; counted as accept.
    Silent(String),
}

impl Answer {
    /// The answer of an application's `ACTION_RESPONSE` (`vote_result` 1 accept, 2 reject,
    /// 3 complete; anything else is not a vote).
    pub fn of_app(vote_result: u32, log_msg: String) -> Answer {
        match vote_result {
            1 | 3 => Answer::Accept(log_msg),
            2 => Answer::Reject(log_msg),
            other => Answer::Silent(format!("vote result {other} is not a vote")),
        }
    }

    /// The answer of the event script: exit status 0 accepts, 1 rejects, with the first line
    /// of its output as the reason; anything else is not a vote.
    pub fn of_script(outcome: &ScriptOutcome) -> Answer {
        let line = outcome.first_line().to_owned();
        match outcome.code {
            Some(0) => Answer::Accept(line),
            Some(1) => Answer::Reject(line),
            Some(code) => Answer::Silent(format!("exit status {code}")),
            None if outcome.failed_to_start => Answer::Silent(outcome.output.clone()),
            None => Answer::Silent("killed by a signal".to_owned()),
        }
    }
}

/// The answers to one action so far.
#[derive(Debug, Clone)]
pub struct Tally {
    waiting: Vec<(Voter, String)>,
    apps_listed: bool,
    voters: usize,
    silent: Vec<String>,
    reject: Option<String>,
    note: String,
}

impl Tally {
    /// A tally that waits for the event script if `script`, and for the applications once
    /// they are listed ([`Tally::list_apps`]).
    pub fn new(script: bool) -> Tally {
        let waiting = if script {
            vec![(Voter::Script, SCRIPT_NAME.to_owned())]
        } else {
            Vec::new()
        };
        Tally {
            voters: waiting.len(),
            waiting,
            apps_listed: false,
            silent: Vec::new(),
            reject: None,
            note: String::new(),
        }
    }

    /// Adds the applications that were asked; only the first list counts.
    pub fn list_apps(&mut self, apps: Vec<AppVoter>) {
        if std::mem::replace(&mut self.apps_listed, true) {
            return;
        }
        self.voters += apps.len();
        let named = apps
            .into_iter()
            .map(|a| (Voter::App(a.conn), format!("application {}", a.name)));
        self.waiting.extend(named);
    }

    /// Counts `answer` from `voter`; returns the voter's name, or `None` when it was not
    /// waited for (not asked, or already answered).
    pub fn count(&mut self, voter: Voter, answer: Answer) -> Option<String> {
        let at = self.waiting.iter().position(|(v, _)| *v == voter)?;
        let (_, name) = self.waiting.swap_remove(at);
        match answer {
            Answer::Accept(note) if !note.is_empty() => self.note = note,
            Answer::Accept(_) => {}
            Answer::Reject(reason) if self.reject.is_none() => {
                let reason = if reason.is_empty() {
                    format!("Rejected by {name}.")
                } else {
                    reason
                };
                self.reject = Some(reason);
            }
            Answer::Reject(_) => {}
            Answer::Silent(_) => self.silent.push(name.clone()),
        }
        Some(name)
    }

    /// Whether every voter has answered.
    pub fn is_done(&self) -> bool {
        self.apps_listed && self.waiting.is_empty()
    }

    /// Whether the event script has not answered yet.
    pub fn waits_for_script(&self) -> bool {
        self.waiting.iter().any(|(v, _)| *v == Voter::Script)
    }

    /// Whether an application has not answered yet (or they are not listed yet).
    pub fn waits_for_apps(&self) -> bool {
        !self.apps_listed || self.waiting.iter().any(|(v, _)| *v != Voter::Script)
    }

    /// Counts everyone still waited for as silent (the deadline passed); returns their names.
    pub fn close(&mut self) -> Vec<String> {
        self.apps_listed = true;
        let names: Vec<String> = self.waiting.drain(..).map(|(_, name)| name).collect();
        self.silent.extend(names.iter().cloned());
        names
    }

    /// The merged answer to a `notification`: the result and its `log_msg`.
    pub fn result(&self, notification: NotificationType) -> (VoteResult, String) {
        if self.voters == 0 {
            return (VoteResult::Complete, String::new());
        }
        if let Some(reason) = &self.reject {
            return (VoteResult::Reject, cut(reason, MAX_LOG_LEN).to_owned());
        }
        let result = match notification {
            NotificationType::Revocable => VoteResult::Accept,
            _ => VoteResult::Complete,
        };
        let log = match (self.note.is_empty(), self.silent.is_empty()) {
            (false, _) => self.note.clone(),
            (true, false) => format!("No answer from {}.", self.silent.join(", ")),
            (true, true) => String::new(),
        };
        (result, cut(&log, MAX_LOG_LEN).to_owned())
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
#[path = "vote_tests.rs"]
mod tests;
