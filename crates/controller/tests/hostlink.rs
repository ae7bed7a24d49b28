//! Commands from the controller to host agents, against a host agent double (a real HTTP
//! server): reporting switches reach the host, a missed one is pushed again when the host
//! registers, and lifecycle operations are started and read through the controller.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;
mod host_double;

use std::time::Duration;

use common::{served_instance, Harness};
use host_double::{HostDouble, BUSY, OP_ID};
use serde_json::{json, Value};
use tether_testkit::wait_for;

const U1: &str = "11111111-1111-1111-1111-111111111111";

/// Registers `host` at `api_url` with instances `(uuid, reporting_enabled)`.
async fn register(h: &Harness, host: &str, api_url: &str, instances: &[(&str, bool)]) {
    let instances: Vec<Value> = instances
        .iter()
        .map(|(uuid, enabled)| {
            let mut i = served_instance(uuid, "heartbeating");
            i["reporting_enabled"] = json!(enabled);
            i
        })
        .collect();
    let body = json!({"host": host, "api_url": api_url, "instances": instances});
    let (code, answer) = h
        .call("POST", "/v1/agents/register", &body.to_string())
        .await;
    assert_eq!(code, 200, "{answer}");
}

/// An address nothing listens on.
async fn closed_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

async fn wait_got(double: &HostDouble, method: &str, path: &str, body: Value) {
    let what = format!("{method} {path} {body}");
    wait_for(&what, Duration::from_secs(5), || {
        double.got(method, path, &body)
    })
    .await;
}

#[tokio::test]
async fn reporting_switches_reach_the_host() {
    let h = Harness::start().await;
    let double = HostDouble::start().await;
    register(&h, "compute-0", &double.url(), &[(U1, true)]).await;
    wait_got(&double, "PUT", "/v1/reporting", json!({"enabled": true})).await;

    let (code, answer) = h.call("POST", "/v1/hosts/compute-0/disable", "").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["reporting_enabled"], false);
    assert_eq!(answer["applied"], true);
    assert!(double.got("PUT", "/v1/reporting", &json!({"enabled": false})));

    let path = format!("/v1/instances/{U1}/disable");
    let (code, answer) = h.call("POST", &path, "").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        (
            answer["reporting_enabled"].clone(),
            answer["applied"].clone()
        ),
        (json!(false), json!(true))
    );
    let on_host = format!("/v1/instances/{U1}/reporting");
    assert!(double.got("PUT", &on_host, &json!({"enabled": false})));

    let (code, answer) = h
        .call("POST", &format!("/v1/instances/{U1}/enable"), "")
        .await;
    assert_eq!((code, answer["applied"].clone()), (200, json!(true)));
    assert!(double.got("PUT", &on_host, &json!({"enabled": true})));
}

#[tokio::test]
async fn an_unreachable_host_gets_its_switches_when_it_registers_again() {
    let h = Harness::start().await;
    let closed = closed_url().await;
    register(&h, "compute-1", &closed, &[(U1, true)]).await;

    let (code, answer) = h.call("POST", "/v1/hosts/compute-1/disable", "").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        (
            answer["reporting_enabled"].clone(),
            answer["applied"].clone()
        ),
        (json!(false), json!(false))
    );
    let (code, answer) = h
        .call("POST", &format!("/v1/instances/{U1}/disable"), "")
        .await;
    assert_eq!((code, answer["applied"].clone()), (200, json!(false)));
    assert_eq!(
        h.get("/v1/hosts/compute-1").await["reporting_enabled"],
        false
    );

    // The host comes back (elsewhere) reporting its own, stale switches: both are pushed.
    let double = HostDouble::start().await;
    register(&h, "compute-1", &double.url(), &[(U1, true)]).await;
    wait_got(&double, "PUT", "/v1/reporting", json!({"enabled": false})).await;
    let on_host = format!("/v1/instances/{U1}/reporting");
    wait_got(&double, "PUT", &on_host, json!({"enabled": false})).await;

    // A host that already has the instance's switch right is not told again.
    let before = double.seen().len();
    register(&h, "compute-1", &double.url(), &[(U1, false)]).await;
    wait_for("the host switch again", Duration::from_secs(5), || {
        double.seen().len() > before
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let paths: Vec<String> = double.seen()[before..]
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths, ["/v1/reporting"]);
}

#[tokio::test]
async fn operations_are_started_on_the_host_and_read_back() {
    let h = Harness::start().await;
    let double = HostDouble::start().await;
    register(&h, "compute-2", &double.url(), &[(U1, true), (BUSY, true)]).await;

    let path = format!("/v1/instances/{U1}/operations");
    let (code, answer) = h.call("POST", &path, r#"{"action":"reboot"}"#).await;
    assert_eq!(code, 202, "{answer}");
    let id = format!("compute-2:{OP_ID}");
    assert_eq!(
        answer,
        json!({"id": id, "host": "compute-2", "instance": U1, "action": "reboot"})
    );
    let on_host = format!("/v1/instances/{U1}/actions");
    assert!(double.got("POST", &on_host, &json!({"action": "reboot"})));

    let record = h.get(&format!("/v1/operations/{id}")).await;
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["host"], "compute-2");
    assert_eq!(record["state"], "done");

    // The host's refusals come through with their status and message.
    let busy = format!("/v1/instances/{BUSY}/operations");
    let (code, answer) = h.call("POST", &busy, r#"{"action":"stop"}"#).await;
    assert_eq!(
        (code, answer["error"]["code"].clone()),
        (409, json!("conflict"))
    );
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("still running"));
    let (code, answer) = h.call("POST", &path, r#"{"action":"bogus"}"#).await;
    assert_eq!(
        (code, answer["error"]["code"].clone()),
        (400, json!("bad_request"))
    );

    // Unknown instance, host or operation; a bad body.
    let (code, _) = h
        .call(
            "POST",
            "/v1/instances/nope/operations",
            r#"{"action":"stop"}"#,
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = h
        .call("GET", &format!("/v1/operations/nohost:{OP_ID}"), "")
        .await;
    assert_eq!(code, 404);
    let (code, _) = h.call("GET", "/v1/operations/compute-2:ffff", "").await;
    assert_eq!(code, 404);
    let (code, _) = h.call("GET", "/v1/operations/no-colon", "").await;
    assert_eq!(code, 404);
    let (code, answer) = h.call("POST", &path, r#"{"verb":"stop"}"#).await;
    assert_eq!(code, 400, "{answer}");
}

#[tokio::test]
async fn operations_on_an_unreachable_host_are_502() {
    let h = Harness::start().await;
    register(&h, "compute-3", &closed_url().await, &[(U1, true)]).await;
    let path = format!("/v1/instances/{U1}/operations");
    let (code, answer) = h.call("POST", &path, r#"{"action":"stop"}"#).await;
    assert_eq!(code, 502, "{answer}");
    assert_eq!(answer["error"]["code"], "host_unreachable");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Cannot reach host \"compute-3\""),
        "{message}"
    );
    let (code, answer) = h
        .call("GET", &format!("/v1/operations/compute-3:{OP_ID}"), "")
        .await;
    assert_eq!(
        (code, answer["error"]["code"].clone()),
        (502, json!("host_unreachable"))
    );

    // A host that registered without an API address cannot be commanded either.
    let body = json!({"host": "compute-4", "instances": [served_instance("u4", "heartbeating")]});
    let (code, _) = h
        .call("POST", "/v1/agents/register", &body.to_string())
        .await;
    assert_eq!(code, 200);
    let (code, answer) = h
        .call(
            "POST",
            "/v1/instances/u4/operations",
            r#"{"action":"stop"}"#,
        )
        .await;
    assert_eq!(code, 502, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no API address"));
    let (code, answer) = h.call("POST", "/v1/hosts/compute-4/disable", "").await;
    assert_eq!((code, answer["applied"].clone()), (200, json!(false)));
}
