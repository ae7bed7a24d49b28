//! The native REST API over real TCP: hosts, instances, flags, the override, event queries,
//! and a restart of the controller on the same data directory.

#![allow(clippy::unwrap_used)]

mod common;

use common::{event, seqs, Harness};
use serde_json::{json, Value};

fn at(host: &str, seq: u64) -> (String, u64) {
    (host.to_owned(), seq)
}

/// Two hosts, three instances, seven events.
async fn populated() -> Harness {
    let h = Harness::start().await;
    h.register("c0", &[("u1", "heartbeating"), ("u2", "heartbeating")])
        .await;
    h.register("c1", &[("u3", "heartbeating")]).await;
    let c0 = [
        event(1, "u1", "heartbeat_missed", json!({"misses": 1})),
        event(2, "u1", "heartbeat_lost", json!({"misses": 3})),
        event(
            3,
            "u2",
            "guest_unhealthy",
            json!({"action": "log", "reason": "slow"}),
        ),
        event(4, "u1", "recovery_started", json!({"action": "reboot"})),
        event(5, "u1", "heartbeat_started", json!({"interval_ms": 1000})),
    ];
    assert_eq!(h.post_events("c0", &c0).await.0, 200);
    let c1 = [
        event(1, "u3", "heartbeat_lost", json!({})),
        event(2, "u3", "guest_exited", json!({})),
    ];
    assert_eq!(h.post_events("c1", &c1).await.0, 200);
    h
}

#[tokio::test]
async fn hosts_are_listed_found_and_switched() {
    let h = populated().await;
    let hosts = h.get("/v1/hosts").await;
    let names: Vec<_> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].clone())
        .collect();
    assert_eq!(names, [json!("c0"), json!("c1")]);
    let (code, host) = h.call("POST", "/v1/hosts/c1/disable", "").await;
    assert_eq!(
        (code, host["reporting_enabled"].as_bool()),
        (200, Some(false))
    );
    assert_eq!(h.get("/v1/hosts/c1").await["reporting_enabled"], false);
    let (code, host) = h.call("POST", "/v1/hosts/c1/enable", "").await;
    assert_eq!(
        (code, host["reporting_enabled"].as_bool()),
        (200, Some(true))
    );
    let (code, answer) = h.call("GET", "/v1/hosts/c9", "").await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (code, _) = h.call("POST", "/v1/hosts/c9/disable", "").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn instances_are_filtered_switched_and_overridden() {
    let h = populated().await;
    let lost = h.get("/v1/instances?state=exited").await;
    assert_eq!(lost.as_array().unwrap().len(), 1);
    assert_eq!(lost[0]["uuid"], "u3");
    assert_eq!(
        h.get("/v1/instances?host=c0")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let u1 = h.get("/v1/instances/u1").await;
    assert_eq!(
        (u1["state"].as_str(), u1["health"].as_str()),
        (Some("heartbeating"), Some("healthy"))
    );

    let (code, u1) = h.call("POST", "/v1/instances/u1/disable", "").await;
    assert_eq!(
        (code, u1["reporting_enabled"].as_bool()),
        (200, Some(false))
    );
    let path = "/v1/instances/u1/corrective-action";
    let (code, u1) = h.call("PUT", path, r#"{"action": "stop"}"#).await;
    assert_eq!(
        (code, u1["corrective_override"].as_str()),
        (200, Some("stop"))
    );
    for bad in [
        r#"{"action": "explode"}"#,
        r#"{}"#,
        r#"{"action": "log", "x": 1}"#,
        "stop",
    ] {
        let (code, answer) = h.call("PUT", path, bad).await;
        assert_eq!(code, 400, "{bad}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("\"action\""),
            "{answer}"
        );
    }
    assert_eq!(
        h.get("/v1/instances/u1").await["corrective_override"],
        "stop"
    );
    let (code, u1) = h.call("PUT", path, r#"{"action": null}"#).await;
    assert_eq!((code, &u1["corrective_override"]), (200, &Value::Null));
    let (code, _) = h
        .call(
            "PUT",
            "/v1/instances/nope/corrective-action",
            r#"{"action": "log"}"#,
        )
        .await;
    assert_eq!(code, 404);
    let (code, answer) = h.call("GET", "/v1/instances?colour=red", "").await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (code, answer) = h.call("DELETE", "/v1/instances/u1", "").await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn event_queries_filter_by_instance_host_type_time_and_page() {
    let h = populated().await;
    let c0 = |n| at("c0", n);
    assert_eq!(
        seqs(&h.get("/v1/events?instance=u1").await),
        [c0(1), c0(2), c0(4), c0(5)]
    );
    assert_eq!(
        seqs(&h.get("/v1/events?host=c1").await),
        [at("c1", 1), at("c1", 2)]
    );
    assert_eq!(
        seqs(&h.get("/v1/events?type=heartbeat_lost").await),
        [c0(2), at("c1", 1)]
    );
    // Events 1..5 of c0 are at seconds 1..5 of the minute; c1's at 1 and 2.
    let since = "/v1/events?since=2026-01-02T03%3A04%3A04Z";
    assert_eq!(seqs(&h.get(since).await), [c0(4), c0(5)]);

    let page = h.get("/v1/events?limit=3").await;
    assert_eq!(seqs(&page), [c0(1), c0(2), c0(3)]);
    let next = page["next_after"].as_u64().unwrap();
    let rest = h.get(&format!("/v1/events?limit=3&after={next}")).await;
    assert_eq!(seqs(&rest), [c0(4), c0(5), at("c1", 1)]);
    let last = h
        .get(&format!("/v1/events?after={}", rest["next_after"]))
        .await;
    assert_eq!(
        (seqs(&last), &last["next_after"]),
        (vec![at("c1", 2)], &Value::Null)
    );

    for bad in [
        "limit=0",
        "limit=5000",
        "since=today",
        "after=x",
        "kind=lost",
    ] {
        let (code, answer) = h.call("GET", &format!("/v1/events?{bad}"), "").await;
        assert_eq!(code, 400, "{bad}: {answer}");
    }
}

#[tokio::test]
async fn a_restarted_controller_keeps_hosts_instances_events_flags_and_acked_seq() {
    let mut h = populated().await;
    h.call("POST", "/v1/hosts/c1/disable", "").await;
    h.call("POST", "/v1/instances/u2/disable", "").await;
    h.call(
        "PUT",
        "/v1/instances/u2/corrective-action",
        r#"{"action": "log"}"#,
    )
    .await;
    let before = (
        h.get("/v1/hosts").await,
        h.get("/v1/instances").await,
        h.get("/v1/events").await,
    );
    h.restart().await;
    let after = (
        h.get("/v1/hosts").await,
        h.get("/v1/instances").await,
        h.get("/v1/events").await,
    );
    assert_eq!(before, after);
    assert_eq!(h.get("/v1/hosts/c0").await["acked_seq"], 5);
    assert_eq!(h.get("/v1/hosts/c1").await["reporting_enabled"], false);
    // The host resumes where the controller left off; a replay is still ignored.
    assert_eq!(
        h.register("c0", &[("u1", "heartbeating"), ("u2", "heartbeating")])
            .await,
        5
    );
    let (code, answer) = h
        .post_events(
            "c0",
            &[
                event(5, "u1", "heartbeat_started", json!({})),
                event(6, "u1", "heartbeat_lost", json!({})),
            ],
        )
        .await;
    assert_eq!((code, answer), (200, json!({"acked_seq": 6})));
    assert_eq!(
        h.get("/v1/events").await["events"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    h.stop().await;
}
