//! Asking the registered applications about a lifecycle action (part of the pure
//! [`Supervisor`]).
//!
//! [`ApiEvent::Ask`](super::ApiEvent::Ask) sends every registered application an
//! `ACTION_NOTIFY` with a fresh random `invocation_id` and the event and notification type as
//! wire numbers, and lists who was asked ([`ApiAction::Asked`]). Each application then has its
//! own time to answer: `vote_secs` for a vote; for a notification `shutdown_notice_secs`
//! (stop, reboot), `suspend_notice_secs` (pause, suspend, `*_begin`) or `resume_notice_secs`
//! (unpause, resume, `*_end`). Exactly one [`ApiAction::Voted`] follows per application asked:
//! its answer, or [`Answer::Silent`] when its time runs out, it leaves or registers again. An
//! `ACTION_RESPONSE` whose `invocation_id` is not the one the application was sent (a late
//! answer to an earlier or stopped action, or a made-up one) is dropped
//! ([`ApiAction::StrayAnswer`]).

use std::time::Duration;

use guest_heartbeat_api::types::{Event as WireEvent, Notify as WireNotify};
use guest_heartbeat_api::wire::{ActionNotify, ActionResponse, Body, Init};
use tether_proto::{EventType, NotificationType};
use tokio::time::Instant;

use super::{ApiAction, App, ConnId, Supervisor};
use crate::vote::{Answer, AppVoter};
use crate::MAX_NOTICE_SECS;

/// The answer times an application registered with, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Notices {
    vote: u32,
    shutdown: u32,
    suspend: u32,
    resume: u32,
}

impl Notices {
    /// The times of registration `init`.
    pub(super) fn of(init: &Init) -> Notices {
        Notices {
            vote: init.vote_secs,
            shutdown: init.shutdown_notice_secs,
            suspend: init.suspend_notice_secs,
            resume: init.resume_notice_secs,
        }
    }

    /// How long the application may take to answer `event` of type `notification`.
    fn secs(self, event: EventType, notification: NotificationType) -> u32 {
        use EventType as E;
        if notification != NotificationType::Irrevocable {
            return self.vote;
        }
        match event {
            E::Stop | E::Reboot => self.shutdown,
            E::Pause | E::Suspend | E::ResizeBegin | E::LiveMigrateBegin | E::ColdMigrateBegin => {
                self.suspend
            }
            E::Unpause | E::Resume | E::ResizeEnd | E::LiveMigrateEnd | E::ColdMigrateEnd => {
                self.resume
            }
            E::Unknown => self.vote,
        }
    }
}

/// The action an application is being asked about.
#[derive(Debug, Clone)]
pub(super) struct Ask {
    run: u64,
    invocation_id: u32,
    secs: u32,
    deadline: Instant,
}

impl Supervisor {
    /// Asks every registered application about `event` (vote `run`).
    pub(super) fn ask(
        &mut self,
        run: u64,
        event: EventType,
        notification: NotificationType,
        now: Instant,
        out: &mut Vec<ApiAction>,
    ) {
        let mut apps = Vec::new();
        let mut sends = Vec::new();
        for (id, conn) in &mut self.conns {
            let Some(app) = conn.app.as_mut() else {
                continue;
            };
            abandon(*id, app, "asked about a newer action", out);
            let secs = app.notices.secs(event, notification).min(MAX_NOTICE_SECS);
            let invocation_id = self.rng.u32(1..);
            app.ask = Some(Ask {
                run,
                invocation_id,
                secs,
                deadline: now + Duration::from_secs(secs.into()),
            });
            let notify = ActionNotify {
                invocation_id,
                event_type: event_wire(event),
                notification_type: notification_wire(notification),
            };
            apps.push(AppVoter {
                conn: *id,
                name: app.name.clone(),
            });
            sends.push(ApiAction::Send(*id, Body::ActionNotify(notify)));
        }
        out.push(ApiAction::Asked { run, apps });
        out.extend(sends);
    }

    /// Forgets vote `run`: later answers to it are stray.
    pub(super) fn stop_asking(&mut self, run: u64) {
        for app in self.conns.values_mut().filter_map(|c| c.app.as_mut()) {
            app.ask.take_if(|a| a.run == run);
        }
    }

    /// Reports the applications whose time to answer has run out.
    pub(super) fn ask_timeouts(&mut self, now: Instant, out: &mut Vec<ApiAction>) {
        for (id, conn) in &mut self.conns {
            let Some(app) = conn.app.as_mut() else {
                continue;
            };
            if let Some(ask) = app.ask.take_if(|a| a.deadline <= now) {
                let why = format!("no answer within {} s", ask.secs);
                out.push(voted(*id, app, ask.run, Answer::Silent(why)));
            }
        }
    }

    /// The earliest time at which an application's time to answer runs out.
    pub(super) fn next_ask_deadline(&self) -> Option<Instant> {
        self.apps()
            .filter_map(|a| a.ask.as_ref())
            .map(|a| a.deadline)
            .min()
    }
}

/// Handles an application's `ACTION_RESPONSE`.
pub(super) fn answered(id: ConnId, app: &mut App, r: ActionResponse, out: &mut Vec<ApiAction>) {
    match app.ask.take_if(|a| a.invocation_id == r.invocation_id) {
        Some(ask) => {
            let answer = Answer::of_app(r.vote_result, r.log_msg);
            out.push(voted(id, app, ask.run, answer));
        }
        None => out.push(ApiAction::StrayAnswer(app.name.clone(), r.invocation_id)),
    }
}

/// Reports an application that stops being asked (it leaves, or is asked anew) as silent.
pub(super) fn abandon(id: ConnId, app: &mut App, why: &str, out: &mut Vec<ApiAction>) {
    if let Some(ask) = app.ask.take() {
        out.push(voted(id, app, ask.run, Answer::Silent(why.to_owned())));
    }
}

fn voted(conn: ConnId, app: &App, run: u64, answer: Answer) -> ApiAction {
    ApiAction::Voted {
        run,
        conn,
        name: app.name.clone(),
        answer,
    }
}

/// The wire number of `event`.
pub fn event_wire(event: EventType) -> u32 {
    let same = |e: &&WireEvent| e.as_str() == event.as_str();
    WireEvent::ALL.iter().find(same).map_or(0, |e| e.wire())
}

/// The wire number of `notification`.
pub fn notification_wire(notification: NotificationType) -> u32 {
    let same = |n: &&WireNotify| n.as_str() == notification.as_str();
    WireNotify::ALL.iter().find(same).map_or(0, |n| n.wire())
}
