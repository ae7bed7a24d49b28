//! Lifecycle actions in the heartbeat machine: who is asked, when the answer goes out and what
//! it says. Explicit `now` values; the applications' side is in `apps_tests.rs`.

use super::tests::{machine_in, sent, with_scripts, MS};
use super::*;
use tether_proto::{ActionNotify, ActionResponse, VoteResult};

const REVOCABLE: NotificationType = NotificationType::Revocable;
const IRREVOCABLE: NotificationType = NotificationType::Irrevocable;

fn notice(notification_type: NotificationType, event_type: EventType, timeout_ms: u32) -> Event {
    Event::Received(Message::ActionNotify(ActionNotify {
        invocation_id: 77,
        event_type,
        notification_type,
        timeout_ms,
    }))
}

fn response(notification_type: NotificationType, vote_result: VoteResult, log: &str) -> Action {
    Action::Send(Message::ActionResponse(ActionResponse {
        invocation_id: 77,
        event_type: EventType::Stop,
        notification_type,
        vote_result,
        log_msg: log.into(),
    }))
}

fn apps_asked(run: u64, apps: &[(ConnId, &str)]) -> Event {
    let apps = apps
        .iter()
        .map(|(conn, name)| AppVoter {
            conn: *conn,
            name: (*name).into(),
        })
        .collect();
    Event::AppsAsked { run, apps }
}

fn voted(run: u64, conn: ConnId, answer: Answer) -> Event {
    Event::AppVoted { run, conn, answer }
}

fn script_done(run: u64, code: Option<i32>, output: &str) -> Event {
    Event::EventScriptDone {
        run,
        outcome: ScriptOutcome {
            code,
            output: output.into(),
            failed_to_start: false,
        },
    }
}

/// A configuration with an event script if `script`, no health check and a challenge timeout
/// out of the way.
fn config(script: bool) -> GuestConfig {
    let base = GuestConfig {
        min_timeout_ms: 100_000,
        ..GuestConfig::default()
    };
    GuestConfig {
        event_notification_script: script.then(|| "/bin/event".into()),
        ..base
    }
}

/// An enabled machine (with an event script if `script`) asked at `t0` to stop (timeout
/// 9 s), with `apps` asked as run 1.
fn asked(
    script: bool,
    notification: NotificationType,
    apps: &[(ConnId, &str)],
    t0: Instant,
) -> Heartbeat {
    let (mut m, _) = machine_in(State::Enabled, &config(script), t0);
    let actions = m.handle(notice(notification, EventType::Stop, 9000), t0);
    let run_script = Action::RunEventScript {
        run: 1,
        notification_type: notification,
        event_type: EventType::Stop,
    };
    let ask = Action::AskApps {
        run: 1,
        notification_type: notification,
        event_type: EventType::Stop,
    };
    let want = if script {
        vec![run_script, ask]
    } else {
        vec![ask]
    };
    assert_eq!(actions, want);
    if script || !apps.is_empty() {
        assert!(m.handle(apps_asked(1, apps), t0).is_empty());
    }
    m
}

#[test]
fn action_notify_is_completed_at_once_when_not_enabled() {
    let t0 = Instant::now();
    for state in [State::Initial, State::Disabled, State::Enabling] {
        let (mut m, _) = machine_in(state, &with_scripts(), t0);
        let actions = m.handle(notice(REVOCABLE, EventType::Stop, 9000), t0);
        let want = vec![response(REVOCABLE, VoteResult::Complete, "")];
        assert_eq!(actions, want, "in {state}");
    }
}

#[test]
fn nobody_to_ask_is_completed_at_once() {
    let t0 = Instant::now();
    let mut m = asked(false, REVOCABLE, &[], t0);
    let actions = m.handle(apps_asked(1, &[]), t0);
    assert_eq!(actions, vec![response(REVOCABLE, VoteResult::Complete, "")]);
    let challenge_timeout = t0 + MS(100_000);
    assert_eq!(
        m.next_deadline(),
        Some(challenge_timeout),
        "no action timer left"
    );
}

#[test]
fn every_voter_accepting_is_accept_and_answered_at_once() {
    let t0 = Instant::now();
    let mut m = asked(true, REVOCABLE, &[(1, "db"), (2, "web")], t0);
    let accept = || Answer::Accept(String::new());
    assert!(m.handle(voted(1, 1, accept()), t0).is_empty());
    assert!(m.handle(script_done(1, Some(0), "ok\n"), t0).is_empty());
    let actions = m.handle(voted(1, 2, accept()), t0 + MS(3));
    assert_eq!(actions, vec![response(REVOCABLE, VoteResult::Accept, "ok")]);
}

#[test]
fn a_rejecting_app_rejects_with_its_reason() {
    let t0 = Instant::now();
    let mut m = asked(false, REVOCABLE, &[(1, "db"), (2, "web")], t0);
    let no = Answer::Reject("web is saving".into());
    assert!(m.handle(voted(1, 2, no), t0).is_empty());
    let actions = m.handle(voted(1, 1, Answer::Accept(String::new())), t0);
    let want = response(REVOCABLE, VoteResult::Reject, "web is saving");
    assert_eq!(actions, vec![want]);
}

#[test]
fn event_script_exit_status_becomes_the_vote() {
    let t0 = Instant::now();
    let silent = "No answer from event script.";
    let cases = [
        (Some(0), VoteResult::Accept, "busy now"),
        (Some(1), VoteResult::Reject, "busy now"),
        (Some(2), VoteResult::Accept, silent),
        (None, VoteResult::Accept, silent),
    ];
    for (code, vote, log) in cases {
        let mut m = asked(true, REVOCABLE, &[], t0);
        let actions = m.handle(script_done(1, code, "  busy now \nmore\n"), t0 + MS(10));
        assert_eq!(actions, vec![response(REVOCABLE, vote, log)], "{code:?}");
    }
}

#[test]
fn a_notification_is_completed() {
    let t0 = Instant::now();
    let mut m = asked(true, IRREVOCABLE, &[(4, "db")], t0);
    assert!(m.handle(script_done(1, Some(0), ""), t0).is_empty());
    let done = Answer::of_app(3, String::new());
    let actions = m.handle(voted(1, 4, done), t0);
    assert_eq!(
        actions,
        vec![response(IRREVOCABLE, VoteResult::Complete, "")]
    );
}

#[test]
fn a_silent_or_departed_app_counts_as_accept() {
    let t0 = Instant::now();
    let mut m = asked(false, REVOCABLE, &[(1, "db"), (2, "web")], t0);
    let why = Answer::Silent("no answer within 8 s".into());
    assert!(m.handle(voted(1, 1, why), t0 + MS(7000)).is_empty());
    let gone = Answer::Silent("connection closed".into());
    let actions = m.handle(voted(1, 2, gone), t0 + MS(7001));
    let log = "No answer from application db, application web.";
    assert_eq!(actions, vec![response(REVOCABLE, VoteResult::Accept, log)]);
}

#[test]
fn the_deadline_answers_with_what_is_in() {
    let t0 = Instant::now();
    let mut m = asked(true, REVOCABLE, &[(1, "db")], t0);
    assert_eq!(m.next_deadline(), Some(t0 + MS(8000)));
    assert!(m.handle(Event::Tick, t0 + MS(7999)).is_empty());
    let actions = m.handle(Event::Tick, t0 + MS(8000));
    let want = vec![
        Action::StopEventScript,
        Action::StopAskingApps(1),
        Action::VoteTimedOut(vec!["event script".into(), "application db".into()]),
        response(
            REVOCABLE,
            VoteResult::Accept,
            "No answer from event script, application db.",
        ),
    ];
    assert_eq!(actions, want);
    assert!(m
        .handle(script_done(1, Some(1), "late"), t0 + MS(8001))
        .is_empty());
    assert!(m
        .handle(voted(1, 1, Answer::Reject("late".into())), t0)
        .is_empty());
}

#[test]
fn the_deadline_keeps_a_reject_that_is_in() {
    let t0 = Instant::now();
    let mut m = asked(true, REVOCABLE, &[(1, "db")], t0);
    let no = Answer::Reject("db is busy".into());
    assert!(m.handle(voted(1, 1, no), t0 + MS(5)).is_empty());
    let actions = m.handle(Event::Tick, t0 + MS(8000));
    let want = vec![
        Action::StopEventScript,
        Action::VoteTimedOut(vec!["event script".into()]),
        response(REVOCABLE, VoteResult::Reject, "db is busy"),
    ];
    assert_eq!(actions, want);
}

#[test]
fn the_deadline_is_timeout_minus_one_second() {
    let t0 = Instant::now();
    let config = config(true);
    for (timeout_ms, deadline_ms) in [(9000, 8000), (1000, 1000), (1001, 1), (0, 0)] {
        let (mut m, _) = machine_in(State::Enabled, &config, t0);
        m.handle(notice(REVOCABLE, EventType::Stop, timeout_ms), t0);
        m.handle(apps_asked(1, &[]), t0);
        let at = t0 + MS(deadline_ms);
        assert_eq!(m.next_deadline(), Some(at), "{timeout_ms}");
        let answer = m.handle(Event::Tick, at);
        assert!(matches!(sent(&answer)[..], [Message::ActionResponse(_)]));
    }
}

#[test]
fn a_new_action_aborts_the_previous_one() {
    let t0 = Instant::now();
    let mut m = asked(true, REVOCABLE, &[(1, "db")], t0);
    let actions = m.handle(notice(REVOCABLE, EventType::Reboot, 9000), t0 + MS(5));
    let want = vec![
        Action::StopEventScript,
        Action::StopAskingApps(1),
        Action::RunEventScript {
            run: 2,
            notification_type: REVOCABLE,
            event_type: EventType::Reboot,
        },
        Action::AskApps {
            run: 2,
            notification_type: REVOCABLE,
            event_type: EventType::Reboot,
        },
    ];
    assert_eq!(actions, want);
    assert!(m
        .handle(script_done(1, Some(1), "no"), t0 + MS(6))
        .is_empty());
    assert!(m
        .handle(voted(1, 1, Answer::Reject("no".into())), t0)
        .is_empty());
    assert!(m.handle(apps_asked(2, &[(1, "db")]), t0 + MS(6)).is_empty());
    assert!(m.handle(script_done(2, Some(0), ""), t0 + MS(7)).is_empty());
    let actions = m.handle(voted(2, 1, Answer::Accept(String::new())), t0 + MS(8));
    let [Message::ActionResponse(r)] = sent(&actions)[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        (r.event_type, r.vote_result),
        (EventType::Reboot, VoteResult::Accept)
    );
    assert_eq!(
        m.handle(Event::Tick, t0 + MS(9000)),
        vec![],
        "nothing pending"
    );
}

#[test]
fn losing_the_channel_aborts_the_action_without_an_answer() {
    let t0 = Instant::now();
    let mut m = asked(true, IRREVOCABLE, &[(1, "db")], t0);
    let actions = m.handle(Event::ChannelDown, t0);
    assert!(sent(&actions).is_empty(), "{actions:?}");
    assert!(actions.contains(&Action::StopEventScript));
    assert!(actions.contains(&Action::StopAskingApps(1)));
    assert!(m.handle(script_done(1, Some(0), ""), t0).is_empty());
}
