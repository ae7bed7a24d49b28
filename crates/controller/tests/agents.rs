//! Host agents' routes over real TCP and a real SQLite file: registration, event delivery,
//! replay, gaps, resynchronisation, authentication and bad bodies.

#![allow(clippy::unwrap_used)]

mod common;

use common::{event, request, seqs, Harness, TOKEN};
use serde_json::json;

#[tokio::test]
async fn a_host_registers_sends_events_and_they_can_be_read() {
    let h = Harness::start().await;
    assert_eq!(
        h.register(
            "compute-0",
            &[("u1", "heartbeating"), ("u2", "heartbeating")]
        )
        .await,
        0
    );
    let events = [
        event(
            1,
            "u1",
            "heartbeat_lost",
            json!({"misses": 3, "action": "reboot"}),
        ),
        event(
            2,
            "u1",
            "recovery_started",
            json!({"action": "reboot", "cause": "heartbeat_lost"}),
        ),
        event(
            3,
            "u2",
            "guest_unhealthy",
            json!({"action": "stop", "reason": "db down"}),
        ),
    ];
    let (code, answer) = h.post_events("compute-0", &events).await;
    assert_eq!((code, answer), (200, json!({"acked_seq": 3})));

    let u1 = h.get("/v1/instances/u1").await;
    assert_eq!(u1["state"], "recovering");
    assert_eq!(u1["host"], "compute-0");
    let u2 = h.get("/v1/instances/u2").await;
    assert_eq!(
        (u2["state"].as_str(), u2["reason"].as_str()),
        (Some("unhealthy"), Some("db down"))
    );
    assert_eq!(u2["corrective_action"], "stop");

    let log = h.get("/v1/events?instance=u1").await;
    assert_eq!(
        seqs(&log),
        [("compute-0".into(), 1), ("compute-0".into(), 2)]
    );
    let first = &log["events"][0];
    assert_eq!(first["event"], "heartbeat_lost");
    assert_eq!(first["details"], json!({"misses": 3, "action": "reboot"}));
    assert_eq!(first["ts"], "2026-01-02T03:04:01.000Z");
    assert_eq!(first["name"], "vm-u1");
    let host = h.get("/v1/hosts/compute-0").await;
    assert_eq!(host["acked_seq"], 3);
    assert_eq!(host["api_url"], "http://127.0.0.1:7001");
    // A host that registers again learns where to resume.
    assert_eq!(h.register("compute-0", &[("u1", "heartbeating")]).await, 3);
}

#[tokio::test]
async fn replayed_events_are_ignored_and_a_gap_is_refused_with_the_acked_seq() {
    let h = Harness::start().await;
    h.register("c0", &[]).await;
    let batch: Vec<_> = (1..=3)
        .map(|n| event(n, "u1", "heartbeat_missed", json!({})))
        .collect();
    assert_eq!(h.post_events("c0", &batch).await.0, 200);
    // The agent did not see the answer and sends the batch again, plus one new event.
    let mut again = batch.clone();
    again.push(event(4, "u1", "heartbeat_lost", json!({})));
    let (code, answer) = h.post_events("c0", &again).await;
    assert_eq!((code, answer), (200, json!({"acked_seq": 4})));
    assert_eq!(
        h.get("/v1/events").await["events"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    let gap = [event(6, "u1", "heartbeat_started", json!({}))];
    let (code, answer) = h.post_events("c0", &gap).await;
    assert_eq!(code, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "sequence_gap");
    assert_eq!(answer["acked_seq"], 4);
    assert_eq!(
        h.get("/v1/events").await["events"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(h.get("/v1/instances/u1").await["state"], "lost");

    let (code, answer) = h.post_events("stranger", &gap).await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (404, Some("unknown_host"))
    );
}

#[tokio::test]
async fn a_registration_marks_the_instances_it_leaves_out_as_gone() {
    let h = Harness::start().await;
    h.register("c0", &[("u1", "heartbeating"), ("u2", "lost")])
        .await;
    h.register("c1", &[("u3", "heartbeating")]).await;
    h.register("c0", &[("u2", "heartbeating")]).await;
    let gone = h.get("/v1/instances?state=gone").await;
    let uuids: Vec<_> = gone
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["uuid"].clone())
        .collect();
    assert_eq!(uuids, [json!("u1")]);
    assert_eq!(h.get("/v1/instances/u2").await["state"], "heartbeating");
    assert_eq!(
        h.get("/v1/instances?host=c0")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        h.get("/v1/instances?host=c1&state=heartbeating").await[0]["uuid"],
        "u3"
    );
}

#[tokio::test]
async fn without_the_right_token_nothing_is_answered_or_changed() {
    let h = Harness::start().await;
    h.register("c0", &[("u1", "heartbeating")]).await;
    let body = json!({"events": [event(1, "u1", "heartbeat_lost", json!({}))]}).to_string();
    let wrong = format!("Bearer {TOKEN}x");
    let attempts = [
        ("POST", "/v1/agents/c0/events", None, body.as_str()),
        (
            "POST",
            "/v1/agents/c0/events",
            Some(wrong.as_str()),
            body.as_str(),
        ),
        ("POST", "/v1/agents/c0/events", Some(TOKEN), body.as_str()),
        ("POST", "/v1/hosts/c0/disable", Some("Bearer "), ""),
        (
            "PUT",
            "/v1/instances/u1/corrective-action",
            Some(wrong.as_str()),
            r#"{"action":"stop"}"#,
        ),
        ("GET", "/v1/events", Some("Basic abc"), ""),
        ("GET", "/v1/no/such/path", None, ""),
    ];
    for (method, path, auth, body) in attempts {
        let (code, answer) = request(h.addr, method, path, auth, body).await;
        assert_eq!(code, 401, "{method} {path} {auth:?}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized");
    }
    assert_eq!(h.get("/v1/events").await["events"], json!([]));
    let host = h.get("/v1/hosts/c0").await;
    assert_eq!(
        (
            host["acked_seq"].as_u64(),
            host["reporting_enabled"].as_bool()
        ),
        (Some(0), Some(true))
    );
    assert_eq!(
        h.get("/v1/instances/u1").await["corrective_override"],
        json!(null)
    );
}

#[tokio::test]
async fn bad_bodies_are_refused_with_a_message_that_names_the_problem() {
    let h = Harness::start().await;
    h.register("c0", &[]).await;
    let cases = [
        ("/v1/agents/register", "not json", "The body must be"),
        (
            "/v1/agents/register",
            r#"{"host": "c 0", "instances": []}"#,
            "host",
        ),
        ("/v1/agents/register", r#"{"host": "c0"}"#, "instances"),
        (
            "/v1/agents/c0/events",
            r#"{"events": [{"seq": 1}]}"#,
            "missing field",
        ),
        (
            "/v1/agents/c0/events",
            r#"{"events": [{"seq": 1, "ts": "later", "instance": "u", "event": "x"}]}"#,
            "events[0].ts",
        ),
    ];
    for (path, body, expected) in cases {
        let (code, answer) = h.call("POST", path, body).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let many: Vec<_> = (1..=1001)
        .map(|n| event(n, "u", "heartbeat_missed", json!({})))
        .collect();
    let (code, answer) = h.post_events("c0", &many).await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let huge = format!(r#"{{"events": [], "pad": "{}"}}"#, "x".repeat(1 << 20));
    let (code, _) = h.call("POST", "/v1/agents/c0/events", &huge).await;
    assert_eq!(code, 413);
    assert_eq!(h.get("/v1/hosts/c0").await["acked_seq"], 0);
}
