use super::*;
use tether_proto::{ActionNotify, Health};

pub(super) const MS: fn(u64) -> Duration = Duration::from_millis;

fn settings(config: &GuestConfig) -> Settings {
    Settings::new("vm1", config)
}

pub(super) fn with_scripts() -> GuestConfig {
    GuestConfig {
        health_check_interval_secs: 30,
        health_check_script: Some("/bin/health".into()),
        event_notification_script: Some("/bin/event".into()),
        ..GuestConfig::default()
    }
}

pub(super) fn sent(actions: &[Action]) -> Vec<&Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn init_id(actions: &[Action]) -> u32 {
    match sent(actions).as_slice() {
        [Message::Init(init)] => init.invocation_id,
        other => panic!("expected one init, got {other:?}"),
    }
}

/// A machine brought into `state` at `t0`; returns it and the last init id.
pub(super) fn machine_in(state: State, config: &GuestConfig, t0: Instant) -> (Heartbeat, u32) {
    let mut m = Heartbeat::new(settings(config), 7);
    let mut id = 0;
    match state {
        State::Initial => {}
        State::Disabled => {
            m.handle(Event::ChannelDown, t0);
        }
        State::Enabling | State::Enabled => {
            id = init_id(&m.handle(Event::ChannelUp, t0));
            if state == State::Enabled {
                m.handle(Event::Received(Message::InitAck { invocation_id: id }), t0);
            }
        }
    }
    assert_eq!(m.state(), state);
    (m, id)
}

pub(super) fn notify(event_type: EventType, timeout_ms: u32) -> Message {
    Message::ActionNotify(ActionNotify {
        invocation_id: 77,
        event_type,
        notification_type: NotificationType::Revocable,
        timeout_ms,
    })
}

fn challenge(value: u32) -> Event {
    Event::Received(Message::Challenge {
        heartbeat_challenge: value,
    })
}

#[test]
fn channel_up_sends_init_with_notice_times_plus_one() {
    let t0 = Instant::now();
    let mut m = Heartbeat::new(settings(&GuestConfig::default()), 1);
    let actions = m.handle(Event::ChannelUp, t0);
    assert_eq!(
        actions[0],
        Action::StateChanged {
            from: State::Initial,
            to: State::Enabling
        }
    );
    let [Message::Init(init)] = sent(&actions)[..] else {
        panic!("{actions:?}")
    };
    assert!(init.invocation_id <= MAX_INT);
    assert_eq!(init.name, "vm1");
    assert_eq!(init.heartbeat_interval_ms, 1000);
    assert_eq!(
        (
            init.vote_secs,
            init.shutdown_notice_secs,
            init.suspend_notice_secs
        ),
        (11, 11, 11)
    );
    assert_eq!((init.resume_notice_secs, init.restart_secs), (11, 121));
    assert_eq!(init.corrective_action, CorrectiveAction::Reboot);
    assert_eq!(m.next_deadline(), Some(t0 + MS(5000)));
}

#[test]
fn init_is_resent_every_retry_period_with_a_fresh_id() {
    let t0 = Instant::now();
    let (mut m, first) = machine_in(State::Enabling, &GuestConfig::default(), t0);
    assert!(m.handle(Event::Tick, t0 + MS(4999)).is_empty());
    let second = init_id(&m.handle(Event::Tick, t0 + MS(5000)));
    assert_ne!(first, second);
    assert_eq!(m.next_deadline(), Some(t0 + MS(10000)));
    let third = init_id(&m.handle(Event::Tick, t0 + MS(10000)));
    assert_ne!(second, third);
    assert_eq!(m.state(), State::Enabling);
}

#[test]
fn init_ack_of_the_current_or_previous_id_enables() {
    let t0 = Instant::now();
    for pick_previous in [false, true] {
        let (mut m, first) = machine_in(State::Enabling, &GuestConfig::default(), t0);
        let second = init_id(&m.handle(Event::Tick, t0 + MS(5000)));
        let id = if pick_previous { first } else { second };
        let actions = m.handle(Event::Received(Message::InitAck { invocation_id: id }), t0);
        assert_eq!(m.state(), State::Enabled, "previous={pick_previous}");
        assert!(sent(&actions).is_empty());
    }
}

#[test]
fn stale_init_ack_is_ignored() {
    let t0 = Instant::now();
    let (mut m, first) = machine_in(State::Enabling, &GuestConfig::default(), t0);
    let second = init_id(&m.handle(Event::Tick, t0 + MS(5000)));
    let third = init_id(&m.handle(Event::Tick, t0 + MS(10000)));
    assert!(![second, third].contains(&first));
    let actions = m.handle(
        Event::Received(Message::InitAck {
            invocation_id: first,
        }),
        t0,
    );
    assert_eq!(actions, vec![Action::StaleInitAck(first)]);
    assert_eq!(m.state(), State::Enabling);
}

#[test]
fn challenges_are_echoed_and_reset_the_timeout() {
    let t0 = Instant::now();
    let (mut m, _) = machine_in(State::Enabled, &GuestConfig::default(), t0);
    assert_eq!(m.next_deadline(), Some(t0 + MS(5000)));
    let actions = m.handle(challenge(12345), t0 + MS(1000));
    let expected = Message::ChallengeResponse(ChallengeResponse {
        heartbeat_response: 12345,
        heartbeat_health: Health::Healthy,
        corrective_action: CorrectiveAction::Reboot,
        log_msg: String::new(),
    });
    assert_eq!(actions, vec![Action::Send(expected)]);
    assert_eq!(m.next_deadline(), Some(t0 + MS(6000)));
    assert!(m.handle(Event::Tick, t0 + MS(5999)).is_empty());
    let actions = m.handle(Event::Tick, t0 + MS(6000));
    assert_eq!(m.state(), State::Enabling);
    assert!(actions.contains(&Action::StopHealthCheck));
    init_id(&actions);
}

#[test]
fn challenge_timeout_is_twice_the_interval_when_that_is_longer() {
    let t0 = Instant::now();
    let config = GuestConfig {
        heartbeat_interval_ms: 4000,
        ..GuestConfig::default()
    };
    let (m, _) = machine_in(State::Enabled, &config, t0);
    assert_eq!(m.next_deadline(), Some(t0 + MS(8000)));
}

#[test]
fn channel_down_disables_and_clears_every_timer() {
    let t0 = Instant::now();
    for state in [State::Initial, State::Enabling, State::Enabled] {
        let (mut m, _) = machine_in(state, &with_scripts(), t0);
        let actions = m.handle(Event::ChannelDown, t0);
        assert_eq!(m.state(), State::Disabled);
        assert!(sent(&actions).is_empty());
        assert_eq!(m.next_deadline(), None, "from {state}");
        let up = m.handle(Event::ChannelUp, t0 + MS(1));
        assert_eq!(m.state(), State::Enabling);
        init_id(&up);
    }
}

#[test]
fn health_checks_run_on_their_interval_only_while_enabled() {
    let t0 = Instant::now();
    let (mut m, _) = machine_in(State::Enabled, &with_scripts(), t0);
    m.handle(challenge(1), t0 + MS(29_000));
    assert_eq!(m.next_deadline(), Some(t0 + MS(30_000)));
    assert_eq!(
        m.handle(Event::Tick, t0 + MS(30_000)),
        vec![Action::RunHealthCheck]
    );
    assert_eq!(m.next_deadline(), Some(t0 + MS(34_000)));
    let (m, _) = machine_in(State::Enabling, &with_scripts(), t0);
    assert_eq!(m.next_deadline(), Some(t0 + MS(5000)));
    let mut no_script = with_scripts();
    no_script.health_check_script = None;
    let (m, _) = machine_in(State::Enabled, &no_script, t0);
    assert_eq!(m.next_deadline(), Some(t0 + MS(5000)));
}

#[test]
fn unhealthy_script_is_reported_once_then_held_back() {
    let t0 = Instant::now();
    let (mut m, _) = machine_in(State::Enabled, &with_scripts(), t0);
    let bad = ScriptHealth {
        unhealthy: true,
        output: "disk full".into(),
    };
    m.handle(Event::HealthChecked(bad), t0);
    let answer = |m: &mut Heartbeat, at| match &m.handle(challenge(5), at)[..] {
        [Action::Send(Message::ChallengeResponse(r))] => r.clone(),
        other => panic!("{other:?}"),
    };
    let first = answer(&mut m, t0 + MS(1000));
    assert_eq!(first.heartbeat_health, Health::Unhealthy);
    assert_eq!(first.corrective_action, CorrectiveAction::Reboot);
    assert_eq!(first.log_msg, "disk full");
    let second = answer(&mut m, t0 + MS(2000));
    assert_eq!(second.heartbeat_health, Health::Unhealthy);
    assert_eq!(second.corrective_action, CorrectiveAction::None);
    let later = answer(&mut m, t0 + MS(61_000));
    assert_eq!(later.corrective_action, CorrectiveAction::Reboot);
}

#[test]
fn shutdown_sends_exit_only_when_a_host_is_there() {
    let t0 = Instant::now();
    let exit = Message::Exit(Exit {
        log_msg: "Exiting...".into(),
    });
    for (state, sends_exit) in [
        (State::Initial, false),
        (State::Disabled, false),
        (State::Enabling, true),
        (State::Enabled, true),
    ] {
        let (mut m, _) = machine_in(state, &with_scripts(), t0);
        let actions = m.handle(Event::Shutdown, t0);
        assert_eq!(
            sent(&actions) == vec![&exit],
            sends_exit,
            "{state}: {actions:?}"
        );
        assert_eq!(m.state(), State::Initial);
        assert_eq!(m.next_deadline(), None);
    }
}

#[test]
fn messages_out_of_place_are_ignored() {
    let t0 = Instant::now();
    let (mut m, _) = machine_in(State::Enabling, &GuestConfig::default(), t0);
    assert_eq!(
        m.handle(challenge(3), t0),
        vec![Action::Ignored(MsgType::Challenge, State::Enabling)]
    );
    let (mut m, id) = machine_in(State::Enabled, &GuestConfig::default(), t0);
    let ack = Message::InitAck { invocation_id: id };
    assert_eq!(
        m.handle(Event::Received(ack), t0),
        vec![Action::Ignored(MsgType::InitAck, State::Enabled)]
    );
    let exit = Message::Exit(Exit {
        log_msg: "bye".into(),
    });
    assert_eq!(
        m.handle(Event::Received(exit), t0),
        vec![Action::Ignored(MsgType::Exit, State::Enabled)]
    );
    let nack = Nack {
        invocation_id: 1,
        log_msg: "failed to parse x".into(),
    };
    assert_eq!(
        m.handle(Event::Received(Message::Nack(nack.clone())), t0),
        vec![Action::NackReceived(nack)]
    );
    assert_eq!(m.state(), State::Enabled);
}

/// Every state × every kind of event lands in the state of this table.
#[test]
fn transition_table() {
    use State::*;
    let t0 = Instant::now();
    let events: Vec<(&str, Event)> = vec![
        ("up", Event::ChannelUp),
        ("down", Event::ChannelDown),
        ("challenge", challenge(9)),
        ("notify", Event::Received(notify(EventType::Pause, 5000))),
        ("health", Event::HealthChecked(ScriptHealth::default())),
        ("tick-now", Event::Tick),
        ("shutdown", Event::Shutdown),
    ];
    let expected = [
        (
            Initial,
            [
                Enabling, Disabled, Initial, Initial, Initial, Initial, Initial,
            ],
        ),
        (
            Enabling,
            [
                Enabling, Disabled, Enabling, Enabling, Enabling, Enabling, Initial,
            ],
        ),
        (
            Enabled,
            [
                Enabled, Disabled, Enabled, Enabled, Enabled, Enabled, Initial,
            ],
        ),
        (
            Disabled,
            [
                Enabling, Disabled, Disabled, Disabled, Disabled, Disabled, Initial,
            ],
        ),
    ];
    for (state, after) in expected {
        for ((name, event), want) in events.iter().zip(after) {
            let (mut m, _) = machine_in(state, &with_scripts(), t0);
            let actions = m.handle(event.clone(), t0);
            assert_eq!(m.state(), want, "{state} + {name}: {actions:?}");
            let changes = actions
                .iter()
                .filter(|a| matches!(a, Action::StateChanged { .. }))
                .count();
            assert_eq!(changes, usize::from(state != want), "{state} + {name}");
        }
    }
}

#[test]
fn names_are_cut_to_63_bytes_on_a_character_boundary() {
    assert_eq!(cut_name("vm1"), "vm1");
    assert_eq!(cut_name(&"a".repeat(80)).len(), 63);
    let wide = "é".repeat(40); // 80 bytes
    assert_eq!(cut_name(&wide), "é".repeat(31));
}

#[test]
fn health_interval_needs_a_script_and_a_nonzero_interval() {
    let mut c = with_scripts();
    assert_eq!(
        Settings::new("x", &c).health_check_interval,
        Some(MS(30_000))
    );
    c.health_check_interval_secs = 0;
    assert_eq!(Settings::new("x", &c).health_check_interval, None);
}
