//! Every row of the mapping, with the exact bodies, and arbitrary details that must never
//! panic it.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::store::state_after;

const UUID: &str = "5c1a3f0e-9b7d-4e2a-8f6c-0123456789ab";

fn event(name: &str, details: Value) -> StoredEvent {
    StoredEvent {
        id: 7,
        host: "compute-0".into(),
        seq: 3,
        ts: "2026-01-02T03:04:05.678Z".into(),
        instance: UUID.into(),
        name: "vm1".into(),
        event: name.into(),
        details: details.as_object().cloned().unwrap_or_default(),
    }
}

fn instance(reporting: bool, imposed: Option<CorrectiveAction>) -> InstanceRecord {
    InstanceRecord {
        uuid: UUID.into(),
        host: "compute-0".into(),
        name: "vm1".into(),
        state: "heartbeating".into(),
        interval_ms: Some(1000),
        health: Some("healthy".into()),
        corrective_action: Some("reboot".into()),
        reason: String::new(),
        reporting_enabled: reporting,
        corrective_override: imposed,
        updated_at: "2026-01-02T03:04:05.678Z".into(),
        recovery_mode: None,
        guest_timeouts: None,
    }
}

fn host(reporting: bool) -> HostRecord {
    HostRecord {
        name: "compute-0".into(),
        api_url: None,
        reporting_enabled: reporting,
        registered_at: "2026-01-02T03:04:05.678Z".into(),
        last_seen: "2026-01-02T03:04:05.678Z".into(),
        acked_seq: 3,
        recovery_mode: crate::store::RecoveryMode::Builtin,
    }
}

/// Both switches on, no override, after `previous`.
fn context(previous: Option<&str>) -> Context {
    Context {
        instance: Some(instance(true, None)),
        host: Some(host(true)),
        previous: previous.map(str::to_owned),
    }
}

/// The bodies `name` with `details` maps to, as text.
fn bodies(name: &str, details: Value, context: &Context) -> Vec<String> {
    patches(&event(name, details), context)
        .iter()
        .map(|p| String::from_utf8(p.body()).unwrap())
        .collect()
}

fn service(state: &str, status: &str, restart: &str) -> String {
    format!(
        r#"{{"uuid":"{UUID}","hostname":"compute-0","event-type":"service","event-data":{{"services":[{{"service":"heartbeat","state":"{state}","status":"{status}","restart-timeout":"{restart}"}}]}}}}"#
    )
}

fn alarm(state: &str, repair: &str) -> String {
    format!(
        r#"{{"uuid":"{UUID}","hostname":"compute-0","event-type":"alarm","event-data":{{"services":[{{"service":"heartbeat","state":"{state}","repair-action":"{repair}"}}]}}}}"#
    )
}

fn action(event: &str, response: &str, reason: &str) -> String {
    format!(
        r#"{{"uuid":"{UUID}","event-type":"action","event-data":{{"action":"{event}","guest-response":"{response}","reason":"{reason}"}}}}"#
    )
}

#[test]
fn heartbeat_started_enables_the_service_with_the_guests_restart_time() {
    let details = json!({"interval_ms": 1000, "action": "reboot", "restart_secs": 300});
    assert_eq!(
        bodies("heartbeat_started", details, &context(None)),
        [service("enabled", "enabled", "300")]
    );
}

#[test]
fn heartbeat_started_without_a_restart_time_says_121_and_shows_the_switch() {
    let off = Context {
        instance: Some(instance(false, None)),
        ..context(None)
    };
    assert_eq!(
        bodies("heartbeat_started", json!({"action": "reboot"}), &off),
        [service("disabled", "enabled", "121")]
    );
    let odd = json!({"restart_secs": "300"});
    assert_eq!(
        bodies("heartbeat_started", odd, &context(None)),
        [service("enabled", "enabled", "121")],
        "a restart time that is not a number is not used"
    );
}

#[test]
fn a_stop_of_a_heartbeating_guest_disables_the_service() {
    for name in ["guest_exited", "heartbeat_held", "channel_disconnected"] {
        for previous in ["heartbeat_started", "guest_unhealthy"] {
            assert_eq!(
                bodies(name, json!({}), &context(Some(previous))),
                [service("enabled", "disabled", "0")],
                "{name} after {previous}"
            );
        }
    }
}

#[test]
fn a_stop_of_a_guest_that_was_not_heartbeating_says_nothing() {
    for name in ["guest_exited", "heartbeat_held", "channel_disconnected"] {
        for previous in [
            None,
            Some("heartbeat_lost"),
            Some("heartbeat_held"),
            Some("recovery_started"),
            Some("channel_disconnected"),
        ] {
            let none: Vec<String> = Vec::new();
            assert_eq!(
                bodies(name, json!({}), &context(previous)),
                none,
                "{name} after {previous:?}"
            );
        }
    }
}

#[test]
fn heartbeat_lost_sends_the_stop_then_the_failure_alarm() {
    let details = json!({"action": "reboot", "misses": 2});
    assert_eq!(
        bodies(
            "heartbeat_lost",
            details,
            &context(Some("heartbeat_started"))
        ),
        [
            service("enabled", "disabled", "0"),
            alarm("failed", "reboot")
        ]
    );
    assert_eq!(
        bodies("heartbeat_lost", json!({"action": "stop"}), &context(None)),
        [alarm("failed", "stop")],
        "no stop for a guest not heartbeating, the alarm still"
    );
    assert_eq!(
        bodies("heartbeat_lost", json!({}), &context(None)),
        [alarm("failed", "unknown")]
    );
}

#[test]
fn the_failure_alarm_needs_both_reporting_switches_on() {
    let details = json!({"action": "reboot"});
    let host_off = Context {
        host: Some(host(false)),
        ..context(Some("heartbeat_started"))
    };
    assert_eq!(
        bodies("heartbeat_lost", details.clone(), &host_off),
        [service("enabled", "disabled", "0")]
    );
    let instance_off = Context {
        instance: Some(instance(false, None)),
        ..context(Some("heartbeat_started"))
    };
    assert_eq!(
        bodies("heartbeat_lost", details, &instance_off),
        [service("disabled", "disabled", "0")]
    );
}

#[test]
fn an_override_replaces_the_guests_action_in_alarms() {
    let imposed = Context {
        instance: Some(instance(true, Some(CorrectiveAction::Log))),
        ..context(None)
    };
    assert_eq!(
        bodies("heartbeat_lost", json!({"action": "reboot"}), &imposed),
        [alarm("failed", "log")]
    );
    assert_eq!(
        bodies("guest_unhealthy", json!({"action": "stop"}), &imposed),
        [alarm("unhealthy", "log")]
    );
}

#[test]
fn guest_unhealthy_with_a_real_action_alarms_whatever_the_switches() {
    let off = Context {
        instance: Some(instance(false, None)),
        host: Some(host(false)),
        previous: None,
    };
    for asked in ["reboot", "stop", "log"] {
        let details = json!({"action": asked, "reason": "disk full"});
        assert_eq!(
            bodies("guest_unhealthy", details, &off),
            [alarm("unhealthy", asked)]
        );
    }
    for details in [
        json!({"action": "none"}),
        json!({"action": "unknown"}),
        json!({"action": 3}),
        json!({}),
    ] {
        let none: Vec<String> = Vec::new();
        assert_eq!(bodies("guest_unhealthy", details, &off), none);
    }
}

#[test]
fn a_single_step_answer_maps_to_the_vims_guest_response() {
    let rows = [
        // (only, outcome, vote_result, guest-response)
        ("vote", "done", Some("accept"), "allow"),
        ("vote", "done", Some("complete"), "allow"),
        ("notify", "done", Some("complete"), "proceed"),
        ("notify", "done", Some("accept"), "proceed"),
        ("vote", "rejected", Some("reject"), "reject"),
        ("notify", "done", Some("reject"), "reject"),
        ("vote", "done", Some("timeout"), ""),
        ("vote", "done", Some("error"), ""),
        ("notify", "done", Some("timeout"), ""),
        ("vote", "done", None, "allow"),
        ("notify", "done", None, "proceed"),
        ("vote", "rejected", None, "reject"),
    ];
    for (only, outcome, vote, response) in rows {
        let mut details =
            json!({"operation": "9f3c", "action": "stop", "outcome": outcome, "only": only});
        if let Some(vote) = vote {
            details["vote_result"] = vote.into();
        }
        let reason = if outcome == "rejected" { "busy" } else { "" };
        if !reason.is_empty() {
            details["reason"] = reason.into();
        }
        assert_eq!(
            bodies("operation_finished", details, &context(None)),
            [action("stop", response, reason)],
            "{only} {outcome} {vote:?}"
        );
    }
}

#[test]
fn a_full_operation_or_one_without_an_action_is_not_reported() {
    let none: Vec<String> = Vec::new();
    for details in [
        json!({"action": "reboot", "outcome": "done"}),
        json!({"action": "reboot", "outcome": "done", "only": "act"}),
        json!({"outcome": "done", "only": "vote", "vote_result": "accept"}),
    ] {
        assert_eq!(bodies("operation_finished", details, &context(None)), none);
    }
}

#[test]
fn every_other_event_maps_to_nothing() {
    let details = json!({"action": "reboot", "only": "vote", "outcome": "done"});
    for name in [
        "channel_connected",
        "heartbeat_missed",
        "recovery_started",
        "recovery_done",
        "recovery_failed",
        "unrecoverable",
        "protocol_error",
        "operation_started",
        "something_new",
    ] {
        assert!(!relevant(name), "{name}");
        let none: Vec<String> = Vec::new();
        assert_eq!(
            bodies(name, details.clone(), &context(Some("heartbeat_started"))),
            none
        );
    }
}

#[test]
fn the_state_events_are_those_that_set_the_state() {
    for name in STATE_EVENTS {
        assert!(state_after(name).is_some(), "{name}");
    }
    for name in [
        "channel_connected",
        "heartbeat_missed",
        "operation_finished",
    ] {
        assert!(state_after(name).is_none(), "{name}");
    }
}

#[test]
fn the_url_escapes_what_a_path_segment_cannot_hold() {
    let patch = patches(&event("heartbeat_started", json!({})), &context(None)).remove(0);
    assert_eq!(
        patch.url("http://127.0.0.1:30002"),
        format!("http://127.0.0.1:30002/nfvi-plugins/v1/instances/{UUID}")
    );
    let odd = VimPatch {
        uuid: "a b?c#d%é".into(),
        ..patch
    };
    assert_eq!(
        odd.url("http://vim"),
        "http://vim/nfvi-plugins/v1/instances/a%20b%3Fc%23d%25%C3%A9"
    );
}

#[test]
fn a_reason_is_escaped_in_the_body() {
    let details =
        json!({"action": "stop", "only": "vote", "outcome": "rejected", "reason": "say \"no\"\n"});
    let body = &bodies("operation_finished", details, &context(None))[0];
    let parsed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(parsed["event-data"]["reason"], "say \"no\"\n");
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("vote"),
            Just("notify"),
            Just("rejected"),
            Just("accept"),
            Just("reboot"),
            Just("none")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_details() -> impl Strategy<Value = Map<String, Value>> {
    let key = prop_oneof![
        Just("action".to_owned()),
        Just("restart_secs".to_owned()),
        Just("only".to_owned()),
        Just("outcome".to_owned()),
        Just("vote_result".to_owned()),
        Just("reason".to_owned()),
        ".{0,8}",
    ];
    proptest::collection::btree_map(key, any_json(), 0..8).prop_map(|m| m.into_iter().collect())
}

fn any_name() -> impl Strategy<Value = String> {
    let known: Vec<&str> = STATE_EVENTS
        .iter()
        .copied()
        .chain(["operation_finished"])
        .collect();
    prop_oneof![
        proptest::sample::select(known).prop_map(str::to_owned),
        ".{0,20}"
    ]
}

proptest! {
    #[test]
    fn arbitrary_details_never_panic(
        name in any_name(),
        details in any_details(),
        instance_on in any::<bool>(),
        host_on in any::<bool>(),
        previous in proptest::option::of(proptest::sample::select(STATE_EVENTS.to_vec())),
        uuid in ".{1,40}",
    ) {
        let mut stored = event(&name, json!({}));
        stored.details = details;
        stored.instance = uuid;
        let context = Context {
            instance: Some(instance(instance_on, None)),
            host: Some(host(host_on)),
            previous: previous.map(str::to_owned),
        };
        for patch in patches(&stored, &context) {
            let body: Value = serde_json::from_slice(&patch.body()).unwrap();
            prop_assert_eq!(&body["uuid"], &Value::from(stored.instance.clone()));
            let url = patch.url("http://vim:30002");
            prop_assert!(url.parse::<hyper::Uri>().is_ok(), "{}", url);
        }
    }
}
