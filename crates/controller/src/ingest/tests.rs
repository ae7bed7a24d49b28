//! Parsing of the bodies host agents send, with examples and properties.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;

/// An instance exactly as the host agent's `GET /v1/instances` serves it.
fn served_instance() -> Value {
    json!({
        "uuid": "5c1a3f0e-9b7d-4e2a-8f6c-0123456789ab", "name": "vm1", "connected": true,
        "state": "heartbeating", "interval_ms": 1000, "last_rtt_us": 180, "misses_total": 0,
        "consecutive_misses": 0, "health": "healthy", "corrective_action": "reboot",
        "reason": "", "recoveries": 0, "challenges": 12, "protocol_errors": 0, "connects": 1,
        "a_field_added_later": [1, 2]
    })
}

fn bytes(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn a_registration_takes_the_agents_instance_objects() {
    let body = json!({"host": "compute-0", "api_url": null, "instances": [served_instance()]});
    let registration = parse_registration(&bytes(body)).unwrap();
    assert_eq!(registration.host, "compute-0");
    assert_eq!(registration.api_url, None);
    let i = &registration.instances[0];
    assert_eq!(i.state, "heartbeating");
    assert_eq!(i.interval_ms, Some(1000));
    assert_eq!(i.corrective_action.as_deref(), Some("reboot"));
}

#[test]
fn a_bad_registration_names_the_field() {
    let cases = [
        (json!({"host": "", "instances": []}), "host"),
        (
            json!({"host": "h", "api_url": "ftp://x", "instances": []}),
            "api_url",
        ),
        (
            json!({"host": "h", "instances": [{"uuid": "a/b", "state": "lost"}]}),
            "instances[0].uuid",
        ),
        (
            json!({"host": "h", "instances": [{"uuid": "a", "state": "Lost!"}]}),
            "instances[0].state",
        ),
        (json!({"host": "h"}), "instances"),
        (json!({"host": "h", "instances": [{"uuid": "a"}]}), "state"),
    ];
    for (body, field) in cases {
        let err = parse_registration(&bytes(body.clone())).unwrap_err();
        assert!(
            matches!(&err, BodyError::Invalid(m) if m.contains(field)),
            "{body}: {err}"
        );
    }
}

#[test]
fn journal_lines_become_events_with_their_other_keys_as_details() {
    let body = json!({"events": [
        {"seq": 7, "ts": "2026-01-02T03:04:05.678Z", "instance": "u1", "event": "heartbeat_lost",
         "name": "vm1", "action": "reboot", "misses": 3},
        {"seq": 8, "ts": "2026-01-02T03:04:06.000Z", "instance": "u1", "event": "recovery_started"}
    ]});
    let events = parse_events(&bytes(body)).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].seq, 7);
    assert_eq!(events[0].name, "vm1");
    assert_eq!(events[0].ts_ms, 1_767_323_045_678);
    assert_eq!(
        Value::Object(events[0].details.clone()),
        json!({"action": "reboot", "misses": 3})
    );
    assert_eq!(events[1].name, "");
    assert!(events[1].details.is_empty());
}

#[test]
fn bad_events_name_the_problem() {
    let line = |seq: u64, ts: &str| json!({"seq": seq, "ts": ts, "instance": "u", "event": "guest_exited"});
    let ok = "2026-01-02T03:04:05.678Z";
    let cases = [
        (json!({"events": [line(0, ok)]}), "events[0].seq"),
        (
            json!({"events": [line(1, ok), line(3, ok)]}),
            "events[1].seq must be 2",
        ),
        (json!({"events": [line(1, "noon")]}), "events[0].ts"),
        (
            json!({"events": [{"seq": 1, "ts": ok, "event": "x"}]}),
            "instance",
        ),
        (json!({"events": "none"}), "events"),
        (json!([]), "The body must be"),
    ];
    for (body, expected) in cases {
        let err = parse_events(&bytes(body.clone())).unwrap_err();
        assert!(
            matches!(&err, BodyError::Invalid(m) if m.contains(expected)),
            "{body}: {err}"
        );
    }
    let many: Vec<Value> = (1..=1001).map(|n| line(n, ok)).collect();
    let err = parse_events(&bytes(json!({"events": many}))).unwrap_err();
    assert!(matches!(err, BodyError::TooLarge(_)));
}

fn wire_event() -> impl Strategy<Value = (String, String, String, BTreeMap<String, i64>)> {
    (
        "[a-f0-9-]{1,36}",
        "[a-z_]{1,20}",
        "[ -~]{0,20}",
        proptest::collection::btree_map("x[a-z]{0,8}", any::<i64>(), 0..4),
    )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_events(&data);
        let _ = parse_registration(&data);
    }

    #[test]
    fn arbitrary_json_never_panics(seq in any::<u64>(), ts in ".{0,30}", key in ".{0,8}") {
        let body = json!({"events": [{"seq": seq, "ts": ts, "instance": "u", "event": "e", key: null}]});
        let _ = parse_events(&bytes(body));
    }

    #[test]
    fn valid_events_round_trip(first in 1u64..1_000_000, lines in proptest::collection::vec(wire_event(), 0..20), ms in 0i64..4_000_000_000_000) {
        let ts = crate::clock::format_ts(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64));
        let wire: Vec<Value> = lines.iter().zip(first..).map(|((instance, event, name, details), seq)| {
            let mut line = json!({"seq": seq, "ts": ts, "instance": instance, "event": event, "name": name});
            for (k, v) in details {
                line[k] = json!(v);
            }
            line
        }).collect();
        let events = parse_events(&bytes(json!({"events": wire}))).unwrap();
        prop_assert_eq!(events.len(), lines.len());
        for (event, ((instance, kind, name, details), seq)) in events.iter().zip(lines.iter().zip(first..)) {
            prop_assert_eq!(event.seq, seq);
            prop_assert_eq!(event.ts_ms, ms);
            prop_assert_eq!(&event.instance, instance);
            prop_assert_eq!(&event.event, kind);
            prop_assert_eq!(&event.name, name);
            for (k, v) in details {
                prop_assert_eq!(&event.details[k], &json!(v));
            }
        }
    }
}
