//! The lifecycle operation API over the agent's UNIX socket: the pinned answers of
//! `POST /v1/instances/{uuid}/actions` and `GET /v1/operations/{id}`. The guest double never
//! answers a vote, so an operation stays `voting` long enough to be seen running. The whole
//! vote → notify → act sequence against the real guest is in the `tether` crate's tests. The
//! journal lines of single steps carry what the controller reports to a VIM.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::time::Duration;

use common::{http, Harness};
use tether_host::journal::EventKind;
use tether_proto::VoteResult;

const SEC: Duration = Duration::from_secs(1);

#[tokio::test]
async fn an_operation_is_accepted_shown_and_exclusive_per_instance() {
    let h = Harness::start(|_| {});
    let guest = h.guest(1, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    let socket = &h.config.api_socket;
    let actions = format!("/v1/instances/{}/actions", guest.uuid);

    let (code, started) = http(socket, "POST", &actions, r#"{"action": "reboot"}"#).await;
    assert_eq!(code, 202, "{started}");
    let id = started["id"].as_str().expect("an id").to_owned();

    let (code, op) = http(socket, "GET", &format!("/v1/operations/{id}"), "").await;
    assert_eq!(code, 200);
    assert_eq!(op["id"], id.as_str());
    assert_eq!(op["instance"], guest.uuid.as_str());
    assert_eq!(op["action"], "reboot");
    assert_eq!(op["state"], "voting");
    assert!(op["reason"].is_null());
    assert!(op["steps"].as_array().is_some());

    let (code, busy) = http(socket, "POST", &actions, r#"{"action": "stop"}"#).await;
    assert_eq!(code, 409, "{busy}");
    assert_eq!(busy["error"]["code"], "conflict");
    assert!(busy["error"]["message"].as_str().unwrap().contains(&id));
    assert!(h.hypervisor.calls().is_empty(), "nothing acts while voting");
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_stable_code() {
    let h = Harness::start(|_| {});
    let guest = h.guest(2, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    let socket = &h.config.api_socket;
    let actions = format!("/v1/instances/{}/actions", guest.uuid);

    for body in [
        "",
        "not json",
        r#"{"action": 3}"#,
        r#"{"verb": "stop"}"#,
        r#"{"action": "stop", "extra": 1}"#,
        r#"{"action": "explode"}"#,
        r#"{"action": "unknown"}"#,
    ] {
        let (code, answer) = http(socket, "POST", &actions, body).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{body}");
    }
    let (_, answer) = http(socket, "POST", &actions, r#"{"action": "explode"}"#).await;
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("live_migrate_begin"), "{message}");

    let (code, answer) = http(
        socket,
        "POST",
        "/v1/instances/nope/actions",
        r#"{"action": "stop"}"#,
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(answer["error"]["code"], "not_found");
    let (code, answer) = http(socket, "GET", "/v1/operations/0123456789abcdef", "").await;
    assert_eq!(code, 404);
    assert_eq!(answer["error"]["code"], "not_found");

    let huge = format!(r#"{{"action": "{}"}}"#, "x".repeat(10_000));
    let (code, _) = http(socket, "POST", &actions, &huge).await;
    assert_eq!(code, 413);
    assert!(h.hypervisor.calls().is_empty());
}

#[tokio::test]
async fn only_runs_one_step_and_an_unknown_only_is_refused() {
    let h = Harness::start(|_| {});
    let guest = h.guest(3, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    let socket = &h.config.api_socket;
    let actions = format!("/v1/instances/{}/actions", guest.uuid);

    for body in [
        r#"{"action": "stop", "only": "act"}"#,
        r#"{"action": "stop", "only": ""}"#,
        r#"{"action": "stop", "only": 1}"#,
    ] {
        let (code, answer) = http(socket, "POST", &actions, body).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{body}");
    }
    let (_, answer) = http(
        socket,
        "POST",
        &actions,
        r#"{"action": "stop", "only": "act"}"#,
    )
    .await;
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("vote, notify"), "{message}");

    let body = r#"{"action": "stop", "only": "notify"}"#;
    let (code, started) = http(socket, "POST", &actions, body).await;
    assert_eq!(code, 202, "{started}");
    let id = started["id"].as_str().unwrap();
    let (_, op) = http(socket, "GET", &format!("/v1/operations/{id}"), "").await;
    assert_eq!(
        (op["only"].clone(), op["state"].clone()),
        ("notify".into(), "notifying".into())
    );
    assert!(
        h.hypervisor.calls().is_empty(),
        "nothing acts on a notification alone"
    );
}

/// Starts `body` on the guest and waits for the operation to end; returns its id.
async fn run_to_end(h: &Harness, uuid: &str, body: &str) -> String {
    let socket = &h.config.api_socket;
    let (code, started) = http(
        socket,
        "POST",
        &format!("/v1/instances/{uuid}/actions"),
        body,
    )
    .await;
    assert_eq!(code, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/operations/{id}");
    let deadline = tokio::time::Instant::now() + 10 * SEC;
    loop {
        let (_, op) = http(socket, "GET", &path, "").await;
        if ["done", "rejected", "failed"].contains(&op["state"].as_str().unwrap_or("")) {
            return id;
        }
        assert!(tokio::time::Instant::now() < deadline, "{op}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_single_step_journals_its_scope_and_the_guests_answer() {
    let h = Harness::start(|_| {});
    let guest = h.guest(4, 1000);
    h.wait_state(&guest.uuid, "heartbeating", 5 * SEC).await;
    let started = h.events(&guest.uuid, EventKind::HeartbeatStarted);
    assert_eq!(
        started[0]["restart_secs"], 121,
        "the double's init says 121"
    );
    for key in ["vote_secs", "shutdown_secs", "suspend_secs", "resume_secs"] {
        assert_eq!(started[0][key], 9, "{key}: the double's init says 9");
    }

    guest.set_vote(Some((VoteResult::Reject, "busy")));
    let vote = run_to_end(&h, &guest.uuid, r#"{"action": "stop", "only": "vote"}"#).await;
    guest.set_vote(Some((VoteResult::Complete, "")));
    let notify = run_to_end(&h, &guest.uuid, r#"{"action": "stop", "only": "notify"}"#).await;
    let full_id = {
        guest.set_vote(Some((VoteResult::Reject, "no")));
        run_to_end(&h, &guest.uuid, r#"{"action": "reboot"}"#).await
    };
    tether_testkit::wait_for("three operation_finished lines", 5 * SEC, || {
        h.events(&guest.uuid, EventKind::OperationFinished).len() == 3
    })
    .await;
    let finished = h.events(&guest.uuid, EventKind::OperationFinished);
    let keys = |n: usize| {
        let e = &finished[n];
        (
            e["operation"].clone(),
            e["only"].clone(),
            e["vote_result"].clone(),
            e["outcome"].clone(),
        )
    };
    assert_eq!(
        keys(0),
        (
            vote.into(),
            "vote".into(),
            "reject".into(),
            "rejected".into()
        )
    );
    assert_eq!(
        keys(1),
        (
            notify.into(),
            "notify".into(),
            "complete".into(),
            "done".into()
        )
    );
    let full = keys(2);
    assert_eq!((full.0, full.3), (full_id.into(), "rejected".into()));
    assert!(
        full.1.is_null() && full.2.is_null(),
        "a full sequence has no single answer"
    );
}
