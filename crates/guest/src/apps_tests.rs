//! The supervisor on tokio's paused clock: registration, challenges, timeouts, recovery,
//! deregistration, limits.

use std::time::Duration;

use guest_heartbeat_api::wire::{Body, ChallengeResponse, FrameError, Init};
use tether_proto::CorrectiveAction;
use tokio::time::Instant;

use super::*;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn init(name: &str, interval: u32, action: u32) -> Body {
    Body::Init(Init {
        name: name.into(),
        heartbeat_interval_ms: interval,
        vote_secs: 8,
        shutdown_notice_secs: 5,
        suspend_notice_secs: 5,
        resume_notice_secs: 5,
        corrective_action: action,
    })
}

fn answer(value: u32, health: u32, action: u32, log: &str) -> Body {
    Body::ChallengeResponse(ChallengeResponse {
        heartbeat_response: value,
        health,
        corrective_action: action,
        log_msg: log.into(),
    })
}

fn challenges(actions: &[ApiAction]) -> Vec<(ConnId, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            ApiAction::Send(
                id,
                Body::Challenge {
                    heartbeat_challenge,
                },
            ) => Some((*id, *heartbeat_challenge)),
            _ => None,
        })
        .collect()
}

/// A supervisor with app `name` registered on connection 1 at `t0`; returns the first challenge.
fn registered(name: &str, interval: u32, t0: Instant) -> (Supervisor, u32) {
    let mut s = Supervisor::new(7);
    assert!(s.handle(ApiEvent::Connected(1), t0).is_empty());
    let out = s.handle(ApiEvent::Frame(1, init(name, interval, 2)), t0);
    assert_eq!(
        out,
        vec![
            ApiAction::Registered(name.into(), interval),
            ApiAction::Send(1, Body::InitAck { accepted: 1 })
        ]
    );
    assert_eq!(s.next_deadline(), Some(t0));
    let c = challenges(&s.handle(ApiEvent::Tick, t0));
    assert_eq!(c.len(), 1);
    (s, c[0].1)
}

#[tokio::test(start_paused = true)]
async fn short_intervals_are_refused() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(1);
    s.handle(ApiEvent::Connected(1), t0);
    let out = s.handle(ApiEvent::Frame(1, init("fast", 399, 2)), t0);
    assert_eq!(
        out,
        vec![
            ApiAction::Refused("fast".into(), 399),
            ApiAction::Send(1, Body::InitAck { accepted: 0 })
        ]
    );
    assert_eq!(s.registered(), 0);
    assert_eq!(s.next_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn challenges_wait_for_the_previous_answer() {
    let t0 = Instant::now();
    let (mut s, first) = registered("app", 1000, t0);
    // Not answered: no new challenge at the next interval.
    assert!(challenges(&s.handle(ApiEvent::Tick, t0 + MS(1000))).is_empty());
    s.handle(ApiEvent::Frame(1, answer(first, 1, 1, "")), t0 + MS(1100));
    let c = challenges(&s.handle(ApiEvent::Tick, t0 + MS(2000)));
    assert_eq!(c.len(), 1);
    assert_ne!(c[0].1, first);
    assert!(s.health()[0].healthy);
}

#[tokio::test(start_paused = true)]
async fn no_answer_for_two_intervals_is_unhealthy_with_the_apps_action_then_recovers() {
    let t0 = Instant::now();
    let (mut s, first) = registered("db", 1000, t0);
    assert!(s.handle(ApiEvent::Tick, t0 + MS(1999)).is_empty());
    let out = s.handle(ApiEvent::Tick, t0 + MS(2000));
    let text = "Application db heartbeat timeout 2000 ms.";
    assert!(out.contains(&ApiAction::TimedOut("db".into(), text.into())));
    assert!(out.contains(&ApiAction::HealthChanged));
    let expected = AppHealth {
        healthy: false,
        action: CorrectiveAction::Reboot,
        log: text.into(),
    };
    assert_eq!(s.health(), vec![expected]);
    // A late answer to the first challenge (still among the last four) restores it.
    let out = s.handle(ApiEvent::Frame(1, answer(first, 1, 1, "")), t0 + MS(2500));
    assert!(out.contains(&ApiAction::Recovered("db".into())));
    assert!(out.contains(&ApiAction::HealthChanged));
    assert!(s.health()[0].healthy);
}

#[tokio::test(start_paused = true)]
async fn only_the_last_four_challenges_may_be_answered() {
    let t0 = Instant::now();
    let (mut s, first) = registered("a", 1000, t0);
    s.handle(ApiEvent::Tick, t0 + MS(2000));
    // Timed out: challenged every interval; the first falls out after four more.
    for i in 3..7 {
        s.handle(ApiEvent::Tick, t0 + MS(1000 * i));
    }
    let out = s.handle(ApiEvent::Frame(1, answer(first, 1, 1, "")), t0 + MS(6500));
    assert!(out.is_empty(), "{out:?}");
    assert!(!s.health()[0].healthy);
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_answer_carries_the_apps_action_and_reason() {
    let t0 = Instant::now();
    let (mut s, first) = registered("web", 1000, t0);
    let out = s.handle(
        ApiEvent::Frame(1, answer(first, 0, 3, "stuck")),
        t0 + MS(10),
    );
    assert_eq!(out, vec![ApiAction::HealthChanged]);
    let expected = AppHealth {
        healthy: false,
        action: CorrectiveAction::Stop,
        log: "stuck".into(),
    };
    assert_eq!(s.health(), vec![expected]);
    // A wrong echo is ignored.
    let out = s.handle(ApiEvent::Frame(1, answer(first ^ 1, 1, 1, "")), t0 + MS(20));
    assert!(out.is_empty());
}

#[tokio::test(start_paused = true)]
async fn final_and_close_remove_the_app() {
    let t0 = Instant::now();
    let (mut s, _) = registered("x", 1000, t0);
    let out = s.handle(
        ApiEvent::Frame(
            1,
            Body::Final {
                log_msg: "bye".into(),
            },
        ),
        t0,
    );
    assert_eq!(
        out,
        vec![
            ApiAction::Left("x".into(), "bye".into()),
            ApiAction::HealthChanged
        ]
    );
    assert!(s.health().is_empty());
    s.handle(ApiEvent::Frame(1, init("y", 1000, 2)), t0);
    let out = s.handle(ApiEvent::Closed(1), t0);
    assert_eq!(
        out[0],
        ApiAction::Left("y".into(), "connection closed".into())
    );
    assert_eq!(s.registered(), 0);
}

#[tokio::test(start_paused = true)]
async fn garbage_and_floods_cut_a_connection_off_alone() {
    let t0 = Instant::now();
    let (mut s, _) = registered("good", 1000, t0);
    s.handle(ApiEvent::Connected(2), t0);
    s.handle(ApiEvent::Connected(3), t0);
    let out = s.handle(ApiEvent::Dropped(2, FrameError::Garbage(MAX_GARBAGE)), t0);
    assert!(out.is_empty());
    let out = s.handle(ApiEvent::Dropped(2, FrameError::Garbage(1)), t0);
    assert_eq!(out, vec![ApiAction::Disconnect(2, CutOff::Garbage)]);
    let fin = || Body::Final {
        log_msg: String::new(),
    };
    for _ in 0..MAX_FRAMES_PER_SEC {
        assert!(s.handle(ApiEvent::Frame(3, fin()), t0).is_empty());
    }
    let out = s.handle(ApiEvent::Frame(3, fin()), t0);
    assert_eq!(out, vec![ApiAction::Disconnect(3, CutOff::Flood)]);
    assert_eq!(s.registered(), 1);
}

#[tokio::test(start_paused = true)]
async fn many_apps_and_the_connection_limit() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(3);
    for id in 0..MAX_CONNECTIONS as u64 {
        s.handle(ApiEvent::Connected(id), t0);
    }
    for id in 0..MAX_APPS as u64 {
        s.handle(ApiEvent::Frame(id, init(&format!("a{id}"), 500, 2)), t0);
    }
    // Full: the oldest unregistered connection makes room.
    let out = s.handle(ApiEvent::Connected(999), t0);
    let oldest_idle = MAX_APPS as u64;
    assert_eq!(out, vec![ApiAction::Disconnect(oldest_idle, CutOff::Full)]);
    assert_eq!(s.registered(), MAX_APPS);
    // No room for more applications: refused, the connection stays.
    let out = s.handle(ApiEvent::Frame(999, init("late", 500, 2)), t0);
    assert!(out.contains(&ApiAction::Send(999, Body::InitAck { accepted: 0 })));
    assert_eq!(challenges(&s.handle(ApiEvent::Tick, t0)).len(), MAX_APPS);
}
