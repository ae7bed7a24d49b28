//! Asking applications about lifecycle actions, on tokio's paused clock: the frames sent, the
//! answers matched, each application's own time to answer, and applications that leave.

use std::time::Duration;

use guest_heartbeat_api::wire::{ActionNotify, ActionResponse, Body, Init};
use tether_proto::{EventType, NotificationType};
use tokio::time::Instant;

use super::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const REVOCABLE: NotificationType = NotificationType::Revocable;
const IRREVOCABLE: NotificationType = NotificationType::Irrevocable;

/// Registers `name` on connection `conn` with answer times vote 8, shutdown 5, suspend 3 and
/// resume 2 seconds.
fn register(s: &mut Supervisor, conn: ConnId, name: &str, t0: Instant) {
    s.handle(ApiEvent::Connected(conn), t0);
    let init = Init {
        name: name.into(),
        heartbeat_interval_ms: 100_000,
        vote_secs: 8,
        shutdown_notice_secs: 5,
        suspend_notice_secs: 3,
        resume_notice_secs: 2,
        corrective_action: 2,
    };
    s.handle(ApiEvent::Frame(conn, Body::Init(init)), t0);
}

fn ask(run: u64, event: EventType, notification: NotificationType) -> ApiEvent {
    ApiEvent::Ask {
        run,
        event,
        notification,
    }
}

/// The `ACTION_NOTIFY` frames among `out`.
fn notifies(out: &[ApiAction]) -> Vec<(ConnId, ActionNotify)> {
    out.iter()
        .filter_map(|a| match a {
            ApiAction::Send(id, Body::ActionNotify(n)) => Some((*id, *n)),
            _ => None,
        })
        .collect()
}

fn reply(n: &ActionNotify, vote_result: u32, log: &str) -> Body {
    Body::ActionResponse(ActionResponse {
        invocation_id: n.invocation_id,
        event_type: n.event_type,
        notification_type: n.notification_type,
        vote_result,
        log_msg: log.into(),
    })
}

fn voted(run: u64, conn: ConnId, name: &str, answer: Answer) -> ApiAction {
    ApiAction::Voted {
        run,
        conn,
        name: name.into(),
        answer,
    }
}

fn silent(why: &str) -> Answer {
    Answer::Silent(why.into())
}

/// A supervisor with `db` on 1 and `web` on 2, asked about a revocable stop as run 1.
fn two_asked(t0: Instant) -> (Supervisor, Vec<(ConnId, ActionNotify)>) {
    let mut s = Supervisor::new(7);
    register(&mut s, 1, "db", t0);
    register(&mut s, 2, "web", t0);
    let out = s.handle(ask(1, EventType::Stop, REVOCABLE), t0);
    let apps = vec![
        AppVoter {
            conn: 1,
            name: "db".into(),
        },
        AppVoter {
            conn: 2,
            name: "web".into(),
        },
    ];
    assert_eq!(out[0], ApiAction::Asked { run: 1, apps });
    let sent = notifies(&out);
    assert_eq!(sent.len(), 2, "{out:?}");
    (s, sent)
}

#[tokio::test(start_paused = true)]
async fn every_app_gets_a_notify_with_its_own_id_and_the_wire_numbers() {
    let t0 = Instant::now();
    let (_, sent) = two_asked(t0);
    let [(1, a), (2, b)] = sent[..] else {
        panic!("{sent:?}")
    };
    assert_ne!(a.invocation_id, b.invocation_id);
    assert_eq!((a.event_type, a.notification_type), (1, 1));
    let mut s = Supervisor::new(7);
    register(&mut s, 1, "db", t0);
    let out = s.handle(ask(2, EventType::ColdMigrateEnd, IRREVOCABLE), t0);
    let [(1, n)] = notifies(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!((n.event_type, n.notification_type), (12, 2));
}

#[tokio::test(start_paused = true)]
async fn answers_must_carry_the_id_they_were_sent() {
    let t0 = Instant::now();
    let (mut s, sent) = two_asked(t0);
    let (_, web) = sent[1];
    let mut wrong = web;
    wrong.invocation_id ^= 1;
    let out = s.handle(ApiEvent::Frame(2, reply(&wrong, 2, "no")), t0);
    let stray = ApiAction::StrayAnswer("web".into(), wrong.invocation_id);
    assert_eq!(out, vec![stray]);
    let out = s.handle(ApiEvent::Frame(2, reply(&web, 2, "web is saving")), t0);
    let no = Answer::Reject("web is saving".into());
    assert_eq!(out, vec![voted(1, 2, "web", no)]);
    let again = s.handle(ApiEvent::Frame(2, reply(&web, 1, "")), t0);
    assert!(
        matches!(again[..], [ApiAction::StrayAnswer(..)]),
        "{again:?}"
    );
    let (_, db) = sent[0];
    let out = s.handle(ApiEvent::Frame(1, reply(&db, 3, "")), t0);
    let done = Answer::Accept(String::new());
    assert_eq!(out, vec![voted(1, 1, "db", done)]);
}

#[tokio::test(start_paused = true)]
async fn each_app_has_the_time_it_registered_for_the_event() {
    let t0 = Instant::now();
    let cases = [
        (EventType::Stop, REVOCABLE, 8),
        (EventType::Reboot, IRREVOCABLE, 5),
        (EventType::LiveMigrateBegin, IRREVOCABLE, 3),
        (EventType::Pause, IRREVOCABLE, 3),
        (EventType::ResizeEnd, IRREVOCABLE, 2),
        (EventType::Unpause, IRREVOCABLE, 2),
    ];
    for (run, (event, notification, secs)) in (1..).zip(cases) {
        let mut s = Supervisor::new(7);
        register(&mut s, 1, "db", t0);
        s.handle(ApiEvent::Tick, t0);
        s.handle(ask(run, event, notification), t0);
        let deadline = t0 + SECS(secs);
        assert_eq!(s.next_deadline(), Some(deadline), "{event}");
        let early = s.handle(ApiEvent::Tick, deadline - Duration::from_millis(1));
        assert!(early.is_empty(), "{event}: {early:?}");
        let why = format!("no answer within {secs} s");
        let out = s.handle(ApiEvent::Tick, deadline);
        assert_eq!(out, vec![voted(run, 1, "db", silent(&why))], "{event}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_app_that_leaves_while_asked_is_silent() {
    let t0 = Instant::now();
    let (mut s, _) = two_asked(t0);
    let out = s.handle(ApiEvent::Closed(1), t0);
    assert_eq!(out[0], voted(1, 1, "db", silent("connection closed")));
    let fin = Body::Final {
        log_msg: "bye".into(),
    };
    let out = s.handle(ApiEvent::Frame(2, fin), t0);
    assert_eq!(out[0], voted(1, 2, "web", silent("deregistered")));
    assert!(
        s.handle(ApiEvent::Tick, t0 + SECS(60)).is_empty(),
        "no later timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn registering_again_while_asked_is_silent() {
    let t0 = Instant::now();
    let (mut s, _) = two_asked(t0);
    let init = Init {
        name: "db2".into(),
        heartbeat_interval_ms: 1000,
        vote_secs: 8,
        shutdown_notice_secs: 5,
        suspend_notice_secs: 5,
        resume_notice_secs: 5,
        corrective_action: 2,
    };
    let out = s.handle(ApiEvent::Frame(1, Body::Init(init)), t0);
    assert_eq!(out[0], voted(1, 1, "db", silent("registered again")));
}

#[tokio::test(start_paused = true)]
async fn a_stopped_or_newer_action_drops_late_answers() {
    let t0 = Instant::now();
    let (mut s, sent) = two_asked(t0);
    s.handle(ApiEvent::StopAsking(1), t0);
    let out = s.handle(ApiEvent::Frame(1, reply(&sent[0].1, 1, "")), t0);
    assert!(matches!(out[..], [ApiAction::StrayAnswer(..)]), "{out:?}");
    let later = s.handle(ApiEvent::Tick, t0 + SECS(60));
    let is_vote = |a: &ApiAction| matches!(a, ApiAction::Voted { .. });
    assert!(
        !later.iter().any(is_vote),
        "no timeout after the stop: {later:?}"
    );
    // A newer action: web is reported silent on the first, and only its new id counts.
    let (mut s, sent) = two_asked(t0);
    let out = s.handle(ask(2, EventType::Reboot, REVOCABLE), t0);
    let newer = silent("asked about a newer action");
    assert!(out.contains(&voted(1, 2, "web", newer)), "{out:?}");
    let old = s.handle(ApiEvent::Frame(2, reply(&sent[1].1, 2, "")), t0);
    assert!(matches!(old[..], [ApiAction::StrayAnswer(..)]), "{old:?}");
    let (_, fresh) = notifies(&out)[1];
    let out = s.handle(ApiEvent::Frame(2, reply(&fresh, 2, "")), t0);
    assert_eq!(out, vec![voted(2, 2, "web", Answer::Reject(String::new()))]);
}

#[test]
fn every_event_and_notification_has_its_wire_number() {
    for event in EventType::ALL {
        let wire = event_wire(*event);
        let name = guest_heartbeat_api::types::Event::from_wire(wire).as_str();
        assert_eq!(name, event.as_str());
    }
    assert_eq!(event_wire(EventType::Unknown), 0);
    assert_eq!(event_wire(EventType::LiveMigrateBegin), 9);
    assert_eq!(notification_wire(NotificationType::Unknown), 0);
    assert_eq!(notification_wire(REVOCABLE), 1);
    assert_eq!(notification_wire(IRREVOCABLE), 2);
}
