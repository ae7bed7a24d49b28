//! Unit tests of the host heartbeat state machine: every phase against every kind of input.

use super::*;
use tether_proto::{ActionNotify, EventType, Exit, Nack, NotificationType, VoteResult};

const SECOND: Duration = Duration::from_secs(1);

fn init(id: u32, interval_ms: u32, action: CorrectiveAction) -> Message {
    Message::Init(Init {
        invocation_id: id,
        name: "vm-1".into(),
        heartbeat_interval_ms: interval_ms,
        vote_secs: 9,
        shutdown_notice_secs: 9,
        suspend_notice_secs: 9,
        resume_notice_secs: 9,
        restart_secs: 121,
        corrective_action: action,
    })
}

fn answer(value: u32, health: Health, action: CorrectiveAction, log: &str) -> Message {
    Message::ChallengeResponse(ChallengeResponse {
        heartbeat_response: value,
        heartbeat_health: health,
        corrective_action: action,
        log_msg: log.into(),
    })
}

struct Rig {
    fsm: HeartbeatFsm,
    now: Instant,
}

impl Rig {
    fn new(threshold: u32) -> Rig {
        Rig {
            fsm: HeartbeatFsm::new(threshold, 7),
            now: Instant::now(),
        }
    }

    fn feed(&mut self, message: Message) -> Vec<Output> {
        let mut out = Vec::new();
        self.fsm.step(Input::Frame(Ok(message)), self.now, &mut out);
        out
    }

    fn fire(&mut self) -> Vec<Output> {
        self.now = self.fsm.deadline().expect("a timer is armed");
        let mut out = Vec::new();
        self.fsm.step(Input::Timer, self.now, &mut out);
        out
    }

    fn healthy(&mut self) -> Vec<Output> {
        let c = self.fsm.challenge();
        self.feed(answer(c, Health::Healthy, CorrectiveAction::Reboot, ""))
    }

    /// Init accepted and the first challenge answered.
    fn heartbeating(threshold: u32) -> Rig {
        let mut rig = Rig::new(threshold);
        rig.feed(init(11, 1000, CorrectiveAction::Reboot));
        rig.healthy();
        rig
    }
}

fn challenge_of(out: &[Output]) -> Option<u32> {
    out.iter().find_map(|o| match o {
        Output::Send(Message::Challenge {
            heartbeat_challenge,
        }) => Some(*heartbeat_challenge),
        _ => None,
    })
}

#[test]
fn init_is_acked_and_challenged_in_the_same_step() {
    let mut rig = Rig::new(1);
    assert_eq!(rig.fsm.deadline(), None);
    let out = rig.feed(init(42, 1000, CorrectiveAction::Reboot));
    assert_eq!(out[0], Output::Send(Message::InitAck { invocation_id: 42 }));
    let c = challenge_of(&out).unwrap();
    assert!(c <= MAX_INT);
    assert_eq!(out.len(), 2);
    assert_eq!(rig.fsm.phase(), Phase::WaitingResponse);
    assert_eq!(rig.fsm.deadline(), Some(rig.now + SECOND));
    assert_eq!(rig.fsm.invocation_id(), 42);
    assert!(!rig.fsm.is_heartbeating());
}

#[test]
fn a_short_interval_is_raised_to_the_minimum() {
    let mut rig = Rig::new(1);
    rig.feed(init(1, 0, CorrectiveAction::Reboot));
    assert_eq!(rig.fsm.interval(), Some(Duration::from_millis(400)));
    assert_eq!(
        rig.fsm.deadline(),
        Some(rig.now + Duration::from_millis(400))
    );
}

#[test]
fn a_lower_configured_floor_grants_faster_heartbeats() {
    let mut rig = Rig::new(1);
    rig.fsm = HeartbeatFsm::new(1, 7).with_min_interval(100);
    rig.feed(init(1, 100, CorrectiveAction::Reboot));
    assert_eq!(rig.fsm.interval(), Some(Duration::from_millis(100)));
    rig.feed(init(2, 20, CorrectiveAction::Reboot));
    assert_eq!(rig.fsm.interval(), Some(Duration::from_millis(100)));
}

#[test]
fn the_first_healthy_answer_starts_the_heartbeat_once() {
    let mut rig = Rig::new(1);
    rig.feed(init(1, 1000, CorrectiveAction::Reboot));
    rig.now += Duration::from_micros(250);
    let out = rig.healthy();
    assert_eq!(out, vec![Output::Started { rtt_us: 250 }]);
    assert_eq!(rig.fsm.phase(), Phase::WaitingChallenge);
    assert!(rig.fsm.is_heartbeating());
    let next = rig.fire();
    assert!(challenge_of(&next).is_some());
    assert_eq!(rig.healthy(), vec![]);
    assert_eq!(rig.fsm.challenges(), 2);
}

#[test]
fn a_mismatching_answer_is_ignored() {
    let mut rig = Rig::new(1);
    rig.feed(init(1, 1000, CorrectiveAction::Reboot));
    let c = rig.fsm.challenge();
    let wrong = c.wrapping_add(1) & MAX_INT;
    let out = rig.feed(answer(wrong, Health::Healthy, CorrectiveAction::Reboot, ""));
    assert_eq!(
        out,
        vec![Output::Mismatch {
            got: wrong,
            expected: c
        }]
    );
    assert_eq!(rig.fsm.phase(), Phase::WaitingResponse);
}

#[test]
fn answers_outside_waiting_response_are_ignored() {
    let mut rig = Rig::new(1);
    assert_eq!(
        rig.feed(answer(0, Health::Healthy, CorrectiveAction::Reboot, "")),
        vec![]
    );
    assert_eq!(rig.fsm.phase(), Phase::WaitingInit);
    let mut rig = Rig::heartbeating(1);
    assert_eq!(rig.healthy(), vec![]);
    assert_eq!(rig.fsm.phase(), Phase::WaitingChallenge);
}

#[test]
fn loss_comes_after_exactly_threshold_plus_one_missed_intervals() {
    for threshold in [0, 1, 3] {
        let mut rig = Rig::heartbeating(threshold);
        rig.fire(); // next challenge, never answered
        let unanswered_at = rig.now;
        for miss in 1..=threshold {
            let out = rig.fire();
            assert_eq!(out[0], Output::Missed { consecutive: miss });
            assert!(
                challenge_of(&out).is_some(),
                "a new challenge follows a miss"
            );
        }
        let out = rig.fire();
        assert_eq!(rig.now - unanswered_at, SECOND * (threshold + 1));
        assert_eq!(
            out,
            vec![
                Output::Lost {
                    misses: threshold + 1,
                    action: CorrectiveAction::Reboot
                },
                Output::Recover {
                    action: Action::Reboot,
                    cause: Cause::Lost
                },
            ]
        );
        assert_eq!(rig.fsm.phase(), Phase::WaitingInit);
        assert_eq!(rig.fsm.deadline(), None);
        assert_eq!(rig.fsm.stopped(), Some(Stopped::Lost));
        assert_eq!(rig.fsm.misses_total(), u64::from(threshold + 1));
    }
}

#[test]
fn an_answer_after_a_miss_resets_the_count() {
    let mut rig = Rig::heartbeating(1);
    rig.fire();
    rig.fire(); // miss 1, re-challenge
    assert_eq!(rig.fsm.consecutive_misses(), 1);
    rig.healthy();
    assert_eq!(rig.fsm.consecutive_misses(), 0);
    rig.fire();
    assert_eq!(rig.fire()[0], Output::Missed { consecutive: 1 });
}

#[test]
fn loss_with_a_passive_action_asks_for_no_recovery() {
    for action in [CorrectiveAction::None, CorrectiveAction::Unknown] {
        let mut rig = Rig::new(0);
        rig.feed(init(1, 1000, action));
        let out = rig.fire();
        assert_eq!(out, vec![Output::Lost { misses: 1, action }]);
    }
    let mut rig = Rig::new(0);
    rig.feed(init(1, 1000, CorrectiveAction::Log));
    let out = rig.fire();
    assert_eq!(
        out[1],
        Output::Recover {
            action: Action::Log,
            cause: Cause::Lost
        }
    );
}

#[test]
fn an_unhealthy_answer_asks_for_its_action_and_none_only_records() {
    let mut rig = Rig::heartbeating(1);
    rig.fire();
    let c = rig.fsm.challenge();
    let out = rig.feed(answer(
        c,
        Health::Unhealthy,
        CorrectiveAction::Stop,
        "disk full",
    ));
    assert_eq!(
        out,
        vec![
            Output::Unhealthy {
                action: CorrectiveAction::Stop,
                reason: "disk full".into()
            },
            Output::Recover {
                action: Action::Stop,
                cause: Cause::Unhealthy
            },
        ]
    );
    assert_eq!(rig.fsm.health(), Some(Health::Unhealthy));
    assert_eq!(rig.fsm.reason(), "disk full");
    rig.fire();
    let c = rig.fsm.challenge();
    let out = rig.feed(answer(
        c,
        Health::Unhealthy,
        CorrectiveAction::None,
        "disk full",
    ));
    assert_eq!(out, vec![]);
    assert_eq!(rig.fsm.phase(), Phase::WaitingChallenge);
}

#[test]
fn an_unhealthy_first_answer_counts_as_answering_but_not_heartbeating() {
    let mut rig = Rig::new(1);
    rig.feed(init(1, 1000, CorrectiveAction::Reboot));
    let c = rig.fsm.challenge();
    rig.feed(answer(
        c,
        Health::Unhealthy,
        CorrectiveAction::None,
        "starting",
    ));
    assert!(rig.fsm.is_answering());
    assert!(!rig.fsm.is_heartbeating());
    rig.fire();
    assert_eq!(rig.healthy(), vec![Output::Started { rtt_us: 0 }]);
}

#[test]
fn init_while_heartbeating_registers_the_guest_afresh_at_once() {
    for answered in [false, true] {
        let mut rig = Rig::new(1);
        rig.feed(init(1, 1000, CorrectiveAction::Reboot));
        if answered {
            rig.healthy();
        }
        let out = rig.feed(init(2, 1000, CorrectiveAction::Reboot));
        assert_eq!(out[0], Output::InitWhileHeartbeating);
        assert_eq!(out[1], Output::Send(Message::InitAck { invocation_id: 2 }));
        assert!(
            matches!(out[2], Output::Send(Message::Challenge { .. })),
            "{out:?}"
        );
        assert_eq!(rig.fsm.phase(), Phase::WaitingResponse);
        // The fresh registration is reported as a new start once answered.
        assert_eq!(rig.healthy(), vec![Output::Started { rtt_us: 0 }]);
    }
}

#[test]
fn exit_stops_the_heartbeat_without_a_failure() {
    let mut rig = Rig::heartbeating(1);
    let out = rig.feed(Message::Exit(Exit {
        log_msg: "Exiting...".into(),
    }));
    assert_eq!(
        out,
        vec![Output::Exited {
            reason: "Exiting...".into()
        }]
    );
    assert_eq!(rig.fsm.phase(), Phase::WaitingInit);
    assert_eq!(rig.fsm.deadline(), None);
    assert_eq!(rig.fsm.stopped(), Some(Stopped::Exited));
    // A second exit, or one before any init, is not reported again.
    assert_eq!(
        rig.feed(Message::Exit(Exit {
            log_msg: String::new()
        })),
        vec![]
    );
}

#[test]
fn messages_of_the_wrong_direction_are_refused() {
    let wrong = [
        Message::InitAck { invocation_id: 1 },
        Message::Challenge {
            heartbeat_challenge: 1,
        },
        Message::Nack(Nack {
            invocation_id: 1,
            log_msg: String::new(),
        }),
        Message::ActionNotify(ActionNotify {
            invocation_id: 1,
            event_type: EventType::Stop,
            notification_type: NotificationType::Revocable,
            timeout_ms: 1,
        }),
    ];
    for message in wrong {
        for mut rig in [Rig::new(1), Rig::heartbeating(1)] {
            let phase = rig.fsm.phase();
            let name = message.msg_type().as_str();
            let out = rig.feed(message.clone());
            let nack = format!("unsupported message type: {name}");
            assert_eq!(out, vec![Output::Refused { nack }]);
            assert_eq!(rig.fsm.phase(), phase, "a refused message changes nothing");
        }
    }
}

#[test]
fn decoder_errors_are_refused_with_the_reference_text() {
    let mut rig = Rig::heartbeating(1);
    let mut out = Vec::new();
    rig.fsm.step(
        Input::Frame(Err(DecodeError::BadVersion(2))),
        rig.now,
        &mut out,
    );
    let nack = "Bad version: 2, expect version: 3".to_owned();
    assert_eq!(out, vec![Output::Refused { nack }]);
    assert_eq!(rig.fsm.phase(), Phase::WaitingChallenge);
}

#[test]
fn an_action_response_must_carry_the_init_id() {
    let response = |id| {
        Message::ActionResponse(ActionResponse {
            invocation_id: id,
            event_type: EventType::Stop,
            notification_type: NotificationType::Revocable,
            vote_result: VoteResult::Accept,
            log_msg: String::new(),
        })
    };
    let mut rig = Rig::heartbeating(1);
    let nack = "Invocation id mismatch. Received: 5 expect: 11".to_owned();
    assert_eq!(rig.feed(response(5)), vec![Output::Refused { nack }]);
    let Message::ActionResponse(matching) = response(11) else {
        unreachable!()
    };
    assert_eq!(
        rig.feed(response(11)),
        vec![Output::ActionAnswered(matching)]
    );
}

#[test]
fn a_timer_while_waiting_for_init_does_nothing() {
    let mut rig = Rig::new(1);
    let mut out = Vec::new();
    rig.fsm.step(Input::Timer, rig.now, &mut out);
    assert_eq!(out, vec![]);
    assert_eq!(rig.fsm.phase(), Phase::WaitingInit);
}

#[test]
fn reset_forgets_the_connection_but_keeps_counters() {
    let mut rig = Rig::heartbeating(1);
    rig.fire();
    rig.fire();
    rig.fsm.reset();
    assert_eq!(rig.fsm.phase(), Phase::WaitingInit);
    assert_eq!(rig.fsm.deadline(), None);
    assert_eq!(rig.fsm.misses_total(), 1);
    assert_eq!(rig.fsm.stopped(), None);
}

#[test]
fn challenges_differ_and_stay_in_range() {
    let mut rig = Rig::heartbeating(1);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..100 {
        let out = rig.fire();
        let c = challenge_of(&out).unwrap();
        assert!(c <= MAX_INT);
        seen.insert(c);
        rig.healthy();
    }
    assert!(seen.len() > 95);
}

fn is_recover(o: &Output) -> bool {
    matches!(o, Output::Recover { .. } | Output::Lost { .. })
}

#[test]
fn a_held_guest_that_goes_silent_waits_quietly_for_its_init() {
    let mut rig = Rig::heartbeating(1);
    rig.fsm.hold(Hold::Until(rig.now + 120 * SECOND));
    rig.fire();
    assert!(matches!(
        rig.fire().as_slice(),
        [Output::Send(_)] | [Output::Missed { .. }, ..]
    ));
    let out = rig.fire();
    assert_eq!(out, vec![Output::Held { misses: 2 }]);
    assert_eq!(rig.fsm.phase(), Phase::WaitingInit);
    assert_eq!(rig.fsm.stopped(), Some(Stopped::Held));
    // The guest comes back after its reboot: the hold ends with its init.
    rig.feed(init(12, 1000, CorrectiveAction::Reboot));
    assert_eq!(rig.fsm.held(), None);
    assert!(rig
        .healthy()
        .iter()
        .any(|o| matches!(o, Output::Started { .. })));
}

#[test]
fn a_guest_still_silent_when_the_hold_expires_is_lost() {
    let mut rig = Rig::heartbeating(1);
    let until = rig.now + 30 * SECOND;
    rig.fsm.hold(Hold::Until(until));
    let mut outputs = Vec::new();
    while rig.fsm.deadline().is_some() {
        outputs.extend(rig.fire());
    }
    assert_eq!(rig.now, until);
    assert!(outputs.iter().any(|o| matches!(o, Output::Held { .. })));
    assert!(matches!(
        outputs.last(),
        Some(Output::Recover {
            cause: Cause::Lost,
            ..
        })
    ));
    assert_eq!(rig.fsm.stopped(), Some(Stopped::Lost));
}

#[test]
fn a_quiesced_guest_is_never_lost_however_long_it_stays_paused() {
    let mut rig = Rig::heartbeating(1);
    rig.fsm.quiesce(Hold::UntilReinit);
    assert_eq!(rig.fsm.deadline(), None);
    assert_eq!(rig.fsm.stopped(), Some(Stopped::Held));
    rig.now += 3600 * SECOND;
    let mut out = Vec::new();
    rig.fsm.step(Input::Timer, rig.now, &mut out);
    assert!(!out.iter().any(is_recover));
}

#[test]
fn a_released_hold_lets_loss_be_declared_again() {
    let mut rig = Rig::heartbeating(1);
    rig.fsm.hold(Hold::UntilReinit);
    rig.fsm.release();
    rig.fire();
    rig.fire();
    assert!(rig.fire().iter().any(is_recover));
}

#[test]
fn the_notice_times_of_the_init_are_kept() {
    let rig = Rig::heartbeating(1);
    let notices = rig.fsm.guest().unwrap().notices;
    assert_eq!((notices.vote_secs, notices.restart_secs), (9, 121));
}
