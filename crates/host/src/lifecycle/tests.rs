use std::time::Duration;

use tether_hypervisor::Action;
use tether_proto::{ActionNotify, ActionResponse, EventType, NotificationType, VoteResult};
use tokio::time::Instant;

use super::*;
use crate::fsm::{Hold, Notices};

const NOTICES: Notices = Notices {
    vote_secs: 9,
    shutdown_secs: 7,
    suspend_secs: 5,
    resume_secs: 14,
    restart_secs: 601,
};

fn guest(heartbeating: bool) -> Guest {
    Guest {
        heartbeating,
        invocation_id: 77,
        notices: NOTICES,
    }
}

fn answer(event: EventType, kind: NotificationType, result: VoteResult, log: &str) -> RunInput {
    RunInput::Answer(ActionResponse {
        invocation_id: 77,
        event_type: event,
        notification_type: kind,
        vote_result: result,
        log_msg: log.to_owned(),
    })
}

fn notify(event: EventType, kind: NotificationType, secs: u32) -> Effect {
    Effect::Notify(ActionNotify {
        invocation_id: 77,
        event_type: event,
        notification_type: kind,
        timeout_ms: secs * 1000,
    })
}

/// A run and the clock it runs on.
struct Rig {
    run: Run,
    now: Instant,
    guest: Guest,
}

impl Rig {
    fn start(event: EventType, guest: Guest) -> (Rig, Vec<Effect>) {
        Rig::scoped(event, Scope::Full, guest)
    }

    fn scoped(event: EventType, scope: Scope, guest: Guest) -> (Rig, Vec<Effect>) {
        let now = Instant::now();
        let mut out = Vec::new();
        let run = Run::start_scoped(event, scope, guest, now, &mut out).expect("an operation");
        (Rig { run, now, guest }, out)
    }

    fn feed(&mut self, input: RunInput) -> Vec<Effect> {
        let mut out = Vec::new();
        assert!(self.run.step(input, self.guest, self.now, &mut out));
        out
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn expire(&mut self) -> Vec<Effect> {
        self.now = self.run.deadline().expect("a deadline");
        self.feed(RunInput::Timer)
    }

    fn outcomes(&self) -> Vec<(&'static str, &'static str)> {
        self.run
            .steps()
            .iter()
            .map(|s| (s.step, s.outcome))
            .collect()
    }
}

use NotificationType::{Irrevocable, Revocable};

#[test]
fn reboot_votes_notifies_with_the_shutdown_notice_then_acts() {
    let (mut rig, out) = Rig::start(EventType::Reboot, guest(true));
    assert_eq!(out, [notify(EventType::Reboot, Revocable, 9)]);
    assert_eq!(rig.run.state(), OpState::Voting);
    rig.advance(Duration::from_millis(300));
    let out = rig.feed(answer(EventType::Reboot, Revocable, VoteResult::Accept, ""));
    let until = rig.now + Duration::from_secs(601);
    assert_eq!(
        out,
        [
            Effect::Hold(Hold::Until(until)),
            notify(EventType::Reboot, Irrevocable, 7)
        ]
    );
    assert_eq!(rig.run.state(), OpState::Notifying);
    let out = rig.feed(answer(
        EventType::Reboot,
        Irrevocable,
        VoteResult::Complete,
        "",
    ));
    assert_eq!(out, [Effect::Act(Action::Reboot)]);
    assert_eq!(rig.run.state(), OpState::Acting);
    let out = rig.feed(RunInput::Acted(Ok(())));
    let until = rig.now + Duration::from_secs(601);
    assert_eq!(out, [Effect::Quiesce(Hold::Until(until)), Effect::Finished]);
    assert_eq!(rig.run.state(), OpState::Done);
    assert_eq!(
        rig.outcomes(),
        [("vote", "accept"), ("notify", "complete"), ("act", "done")]
    );
    assert_eq!(rig.run.steps()[0].took_ms, 300);
}

#[test]
fn a_reject_ends_the_operation_with_the_guests_reason_and_nothing_acts() {
    let (mut rig, _) = Rig::start(EventType::Stop, guest(true));
    let out = rig.feed(answer(
        EventType::Stop,
        Revocable,
        VoteResult::Reject,
        "database is flushing",
    ));
    assert_eq!(out, [Effect::Finished]);
    assert_eq!(rig.run.state(), OpState::Rejected);
    assert_eq!(rig.run.reason(), Some("database is flushing"));
    assert_eq!(rig.run.deadline(), None);
}

#[test]
fn a_reject_without_words_still_says_why() {
    let (mut rig, _) = Rig::start(EventType::Suspend, guest(true));
    rig.feed(answer(
        EventType::Suspend,
        Revocable,
        VoteResult::Reject,
        "",
    ));
    assert_eq!(rig.run.reason(), Some("the guest rejected suspend"));
}

#[test]
fn a_silent_voter_counts_as_accept_at_the_vote_time() {
    let (mut rig, _) = Rig::start(EventType::Pause, guest(true));
    assert_eq!(rig.run.deadline(), Some(rig.now + Duration::from_secs(9)));
    let out = rig.expire();
    assert_eq!(
        out,
        [
            Effect::Hold(Hold::UntilReinit),
            notify(EventType::Pause, Irrevocable, 5)
        ]
    );
    assert_eq!(rig.outcomes(), [("vote", "timeout")]);
    assert!(rig.run.steps()[0].detail.contains("counted as accept"));
}

#[test]
fn an_overrunning_notification_handler_does_not_hold_the_action_back() {
    let (mut rig, _) = Rig::start(EventType::Pause, guest(true));
    rig.feed(answer(EventType::Pause, Revocable, VoteResult::Accept, ""));
    let notified = rig.now;
    let out = rig.expire();
    assert_eq!(
        rig.now,
        notified + Duration::from_secs(5),
        "suspend notice, not vote time"
    );
    assert_eq!(out, [Effect::Act(Action::Pause)]);
    let out = rig.feed(RunInput::Acted(Ok(())));
    assert_eq!(out, [Effect::Quiesce(Hold::UntilReinit), Effect::Finished]);
}

#[test]
fn a_late_answer_after_a_timeout_is_ignored_not_reported_twice() {
    let (mut rig, _) = Rig::start(EventType::Reboot, guest(true));
    rig.expire();
    let steps = rig.run.steps().len();
    let mut out = Vec::new();
    let late = answer(EventType::Reboot, Revocable, VoteResult::Reject, "too late");
    assert!(!rig.run.step(late, rig.guest, rig.now, &mut out));
    assert!(out.is_empty());
    assert_eq!(rig.run.steps().len(), steps);
    assert_eq!(rig.run.state(), OpState::Notifying);
}

#[test]
fn an_answer_for_another_event_is_ignored() {
    let (mut rig, _) = Rig::start(EventType::Stop, guest(true));
    let mut out = Vec::new();
    let other = answer(EventType::Reboot, Revocable, VoteResult::Reject, "");
    assert!(!rig.run.step(other, rig.guest, rig.now, &mut out));
    assert_eq!(rig.run.state(), OpState::Voting);
}

#[test]
fn unpause_acts_first_then_post_notifies_with_the_resume_notice() {
    let (mut rig, out) = Rig::start(EventType::Unpause, guest(false));
    assert_eq!(out, [Effect::Act(Action::Unpause)]);
    let out = rig.feed(RunInput::Acted(Ok(())));
    assert!(out.is_empty());
    assert_eq!(rig.run.state(), OpState::PostNotifying);
    assert_eq!(rig.run.deadline(), Some(rig.now + Duration::from_secs(601)));
    rig.advance(Duration::from_secs(3));
    rig.guest.heartbeating = true;
    let out = rig.feed(RunInput::GuestBack);
    assert_eq!(out, [notify(EventType::Unpause, Irrevocable, 14)]);
    let out = rig.feed(answer(
        EventType::Unpause,
        Irrevocable,
        VoteResult::Complete,
        "",
    ));
    assert_eq!(out, [Effect::Finished]);
    assert_eq!(
        rig.outcomes(),
        [
            ("act", "done"),
            ("wait_guest", "done"),
            ("post_notify", "complete")
        ]
    );
}

#[test]
fn a_guest_that_never_comes_back_skips_the_post_notification() {
    let (mut rig, _) = Rig::start(EventType::ColdMigrateEnd, guest(false));
    assert_eq!(rig.run.state(), OpState::PostNotifying);
    let out = rig.expire();
    assert_eq!(out, [Effect::Finished]);
    assert_eq!(rig.run.state(), OpState::Done);
    assert!(rig.run.steps()[0].detail.contains("601 s"));
}

#[test]
fn migration_begin_votes_and_notifies_with_nothing_to_act() {
    let (mut rig, out) = Rig::start(EventType::LiveMigrateBegin, guest(true));
    assert_eq!(out, [notify(EventType::LiveMigrateBegin, Revocable, 9)]);
    rig.feed(answer(
        EventType::LiveMigrateBegin,
        Revocable,
        VoteResult::Accept,
        "",
    ));
    let out = rig.feed(answer(
        EventType::LiveMigrateBegin,
        Irrevocable,
        VoteResult::Complete,
        "",
    ));
    assert_eq!(out, [Effect::Finished]);
    assert_eq!(rig.run.state(), OpState::Done);
}

#[test]
fn resize_has_real_notice_times() {
    assert_eq!(notice_secs(EventType::ResizeBegin, &NOTICES), 5);
    assert_eq!(notice_secs(EventType::ResizeEnd, &NOTICES), 14);
}

#[test]
fn a_guest_that_is_not_heartbeating_is_not_asked() {
    let (rig, out) = Rig::start(EventType::Stop, guest(false));
    let until = rig.now + Duration::from_secs(601);
    assert_eq!(
        out,
        [Effect::Hold(Hold::Until(until)), Effect::Act(Action::Stop)]
    );
    assert_eq!(rig.outcomes(), [("vote", "skipped"), ("notify", "skipped")]);
}

#[test]
fn a_failed_action_releases_the_hold_and_fails_the_operation() {
    let (mut rig, _) = Rig::start(EventType::Reboot, guest(false));
    let out = rig.feed(RunInput::Acted(Err("no such domain".into())));
    assert_eq!(out, [Effect::Release, Effect::Finished]);
    assert_eq!(rig.run.state(), OpState::Failed);
    assert_eq!(rig.run.reason(), Some("no such domain"));
}

#[test]
fn the_table_pins_every_event() {
    let rows: Vec<(EventType, bool, bool, Option<Action>)> = EventType::ALL
        .iter()
        .filter_map(|&e| plan(e).map(|p| (e, p.votes, p.post_notifies, p.act)))
        .collect();
    use EventType as E;
    assert_eq!(
        rows,
        [
            (E::Stop, true, false, Some(Action::Stop)),
            (E::Reboot, true, false, Some(Action::Reboot)),
            (E::Suspend, true, false, Some(Action::Suspend)),
            (E::Pause, true, false, Some(Action::Pause)),
            (E::Unpause, false, true, Some(Action::Unpause)),
            (E::Resume, false, true, Some(Action::Resume)),
            (E::ResizeBegin, true, false, None),
            (E::ResizeEnd, false, true, None),
            (E::LiveMigrateBegin, true, false, None),
            (E::LiveMigrateEnd, false, true, None),
            (E::ColdMigrateBegin, true, false, None),
            (E::ColdMigrateEnd, false, true, None),
        ]
    );
    assert!(plan(E::Unknown).is_none());
}

#[test]
fn only_vote_asks_the_vote_and_ends_there_when_accepted() {
    let (mut rig, out) = Rig::scoped(EventType::Stop, Scope::Vote, guest(true));
    assert_eq!(out, [notify(EventType::Stop, Revocable, 9)]);
    assert_eq!(rig.run.state(), OpState::Voting);
    let out = rig.feed(answer(EventType::Stop, Revocable, VoteResult::Accept, ""));
    assert_eq!(
        out,
        [Effect::Finished],
        "no hold, no notification, no action"
    );
    assert_eq!(rig.run.state(), OpState::Done);
    assert_eq!(rig.outcomes(), [("vote", "accept")]);
    assert_eq!(rig.run.answer(), Some(VoteResult::Accept));
}

#[test]
fn only_vote_reports_a_reject_and_a_silent_voter_as_accept_and_keeps_the_answer() {
    let (mut rig, _) = Rig::scoped(EventType::Reboot, Scope::Vote, guest(true));
    let out = rig.feed(answer(
        EventType::Reboot,
        Revocable,
        VoteResult::Reject,
        "busy",
    ));
    assert_eq!(out, [Effect::Finished]);
    assert_eq!(rig.run.state(), OpState::Rejected);
    assert_eq!(rig.run.reason(), Some("busy"));
    assert_eq!(rig.run.answer(), Some(VoteResult::Reject));

    let (mut rig, _) = Rig::scoped(EventType::LiveMigrateBegin, Scope::Vote, guest(true));
    assert_eq!(rig.expire(), [Effect::Finished]);
    assert_eq!(rig.run.state(), OpState::Done);
    assert_eq!(rig.outcomes(), [("vote", "timeout")]);
    assert_eq!(rig.run.answer(), None, "silence is not an answer");

    // A guest that answers `timeout` itself is told apart from a silent one.
    let (mut rig, _) = Rig::scoped(EventType::Stop, Scope::Vote, guest(true));
    let slow = answer(EventType::Stop, Revocable, VoteResult::Timeout, "slow");
    assert_eq!(rig.feed(slow), [Effect::Finished]);
    assert_eq!(rig.outcomes(), [("vote", "timeout")]);
    assert_eq!(rig.run.answer(), Some(VoteResult::Timeout));
}

#[test]
fn only_vote_on_a_guest_that_does_not_heartbeat_is_skipped() {
    let (rig, out) = Rig::scoped(EventType::Pause, Scope::Vote, guest(false));
    assert_eq!(out, [Effect::Finished]);
    assert_eq!(rig.run.state(), OpState::Done);
    assert_eq!(rig.outcomes(), [("vote", "skipped")]);
    assert_eq!(rig.run.answer(), None);
}

#[test]
fn only_notify_holds_a_disruptive_event_and_ends_after_the_answer() {
    let (mut rig, out) = Rig::scoped(EventType::Reboot, Scope::Notify, guest(true));
    let until = rig.now + Duration::from_secs(601);
    assert_eq!(
        out,
        [
            Effect::Hold(Hold::Until(until)),
            notify(EventType::Reboot, Irrevocable, 7)
        ]
    );
    assert_eq!(rig.run.state(), OpState::Notifying);
    let out = rig.feed(answer(
        EventType::Reboot,
        Irrevocable,
        VoteResult::Complete,
        "",
    ));
    assert_eq!(out, [Effect::Finished], "the VIM acts, not the host");
    assert_eq!(rig.run.state(), OpState::Done);
    assert_eq!(rig.outcomes(), [("notify", "complete")]);
    assert_eq!(rig.run.answer(), Some(VoteResult::Complete));

    let (_, out) = Rig::scoped(EventType::Suspend, Scope::Notify, guest(true));
    assert_eq!(
        out,
        [
            Effect::Hold(Hold::UntilReinit),
            notify(EventType::Suspend, Irrevocable, 5)
        ]
    );
}

#[test]
fn only_notify_of_a_resuming_event_holds_nothing_and_times_out_at_its_notice() {
    let (mut rig, out) = Rig::scoped(EventType::Resume, Scope::Notify, guest(true));
    assert_eq!(out, [notify(EventType::Resume, Irrevocable, 14)]);
    assert_eq!(rig.run.deadline(), Some(rig.now + Duration::from_secs(14)));
    assert_eq!(rig.expire(), [Effect::Finished]);
    assert_eq!(rig.outcomes(), [("notify", "timeout")]);
}

#[test]
fn only_notify_to_a_guest_that_does_not_heartbeat_still_holds() {
    let (rig, out) = Rig::scoped(EventType::ColdMigrateBegin, Scope::Notify, guest(false));
    let until = rig.now + Duration::from_secs(601);
    assert_eq!(out, [Effect::Hold(Hold::Until(until)), Effect::Finished]);
    assert_eq!(rig.outcomes(), [("notify", "skipped")]);
}

#[test]
fn only_names_round_trip() {
    for scope in [Scope::Vote, Scope::Notify] {
        assert_eq!(Scope::from_only(scope.only().unwrap()), Some(scope));
    }
    assert_eq!(Scope::Full.only(), None);
    assert_eq!(Scope::from_only("act"), None);
}
