//! Parses arbitrary bytes as the bodies host agents send the controller (a registration, a
//! batch of events): neither may panic, an accepted batch is contiguous and within the
//! limits, and its events keep their fields when written out and parsed again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tether_controller::ingest::{parse_events, parse_registration, MAX_EVENTS};

fuzz_target!(|data: &[u8]| {
    let _ = parse_registration(data);
    let Ok(events) = parse_events(data) else {
        return;
    };
    assert!(events.len() <= MAX_EVENTS);
    for pair in events.windows(2) {
        assert_eq!(pair[0].seq + 1, pair[1].seq);
    }
    let lines: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut line = Value::Object(e.details.clone());
            line["seq"] = json!(e.seq);
            line["ts"] = json!(e.ts);
            line["instance"] = json!(e.instance);
            line["name"] = json!(e.name);
            line["event"] = json!(e.event);
            line
        })
        .collect();
    let again = serde_json::to_vec(&json!({ "events": lines })).expect("serializable");
    assert_eq!(parse_events(&again).expect("parses again"), events);
});
