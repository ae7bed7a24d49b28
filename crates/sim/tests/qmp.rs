//! The simulated VM's QMP server, spoken to over its real socket.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{events, start, HostDouble, Qmp};
use serde_json::json;
use tether_sim::VmStatus;
use tether_testkit::wait_for;

#[tokio::test]
async fn greets_and_requires_capabilities_first() {
    let (_dir, sim) = start(1).await;
    let vm = &sim.vms()[0];
    let mut qmp = Qmp::connect(&vm.qmp_path()).await;

    let greeting = qmp.read().await.unwrap();
    assert_eq!(greeting["QMP"]["capabilities"], json!([]));
    assert_eq!(greeting["QMP"]["version"]["qemu"]["major"], 10);

    qmp.send(json!({"execute": "query-status", "id": "early"}))
        .await;
    let refused = qmp.read().await.unwrap();
    assert_eq!(refused["error"]["class"], "CommandNotFound");
    assert_eq!(refused["id"], "early");

    qmp.send(json!({"execute": "qmp_capabilities", "id": 7}))
        .await;
    assert_eq!(qmp.read().await, Some(json!({"return": {}, "id": 7})));
    qmp.send(json!({"execute": "qmp_capabilities"})).await;
    assert_eq!(
        qmp.read().await.unwrap()["error"]["class"],
        "CommandNotFound"
    );

    assert_eq!(
        vm.qmp_log(),
        ["query-status", "qmp_capabilities", "qmp_capabilities"]
    );
}

#[tokio::test]
async fn reports_status_and_pauses_and_resumes() {
    let (_dir, sim) = start(1).await;
    let vm = &sim.vms()[0];
    let mut qmp = Qmp::ready(&vm.qmp_path()).await;

    let running = qmp.call("query-status").await;
    assert_eq!(
        running,
        [json!({"return": {"status": "running", "running": true, "singlestep": false}})]
    );

    let stopped = qmp.call("stop").await;
    assert_eq!(events(&stopped), ["STOP"]);
    assert_eq!(stopped.last(), Some(&json!({"return": {}})));
    assert_eq!(vm.status(), VmStatus::Paused);
    let paused = qmp.call("query-status").await;
    assert_eq!(paused[0]["return"]["status"], "paused");
    assert_eq!(paused[0]["return"]["running"], false);

    let resumed = qmp.call("cont").await;
    assert_eq!(events(&resumed), ["RESUME"]);
    assert_eq!(vm.status(), VmStatus::Running);
}

#[tokio::test]
async fn refuses_what_is_not_a_command() {
    let (_dir, sim) = start(1).await;
    let mut qmp = Qmp::ready(&sim.vms()[0].qmp_path()).await;

    let unknown = qmp.call("frobnicate").await;
    assert_eq!(unknown[0]["error"]["class"], "CommandNotFound");
    assert_eq!(
        unknown[0]["error"]["desc"],
        "The command frobnicate has not been found"
    );

    for bad in [
        "{not json",
        "[1, 2]",
        r#"{"arguments": {}}"#,
        r#"{"execute": 5}"#,
    ] {
        qmp.send_raw(bad).await;
        let reply = qmp.read().await.unwrap();
        assert_eq!(reply["error"]["class"], "GenericError", "{bad}: {reply}");
    }
    qmp.send_raw(&"x".repeat(100_000)).await;
    assert_eq!(qmp.read().await.unwrap()["error"]["class"], "GenericError");
    // Still serving after all that.
    assert_eq!(qmp.call("query-status").await[0]["return"]["running"], true);
}

#[tokio::test]
async fn serves_one_client_at_a_time() {
    let (_dir, sim) = start(1).await;
    let path = sim.vms()[0].qmp_path();
    let first = Qmp::ready(&path).await;
    let mut second = Qmp::connect(&path).await;
    assert!(
        second.silent_for(Duration::from_millis(300)).await,
        "second client was greeted"
    );
    drop(first);
    assert!(second.read().await.unwrap()["QMP"].is_object());
}

#[tokio::test]
async fn system_reset_boots_a_fresh_guest_on_the_same_connection() {
    let (_dir, sim) = start(1).await;
    let vm = &sim.vms()[0];
    let (mut host, first) = HostDouble::handshake(&vm.channel_path()).await;
    let mut qmp = Qmp::ready(&vm.qmp_path()).await;

    let reply = qmp.call("system_reset").await;
    assert_eq!(reply.last(), Some(&json!({"return": {}})));
    let mut seen = vec![qmp.read().await.unwrap(), qmp.read().await.unwrap()];
    assert_eq!(events(&seen), ["RESET", "RESET"]);
    assert_eq!(seen.remove(0)["data"]["reason"], "host-qmp-system-reset");
    assert_eq!(vm.resets(), 1);

    let second = host.expect_init().await;
    assert_ne!(first.invocation_id, second.invocation_id);
    assert_eq!(second.name, "vm-1");
}

#[tokio::test]
async fn quit_ends_the_channel_and_removes_the_sockets() {
    let (_dir, sim) = start(1).await;
    let vm = &sim.vms()[0];
    let (mut host, _) = HostDouble::handshake(&vm.channel_path()).await;
    let mut qmp = Qmp::ready(&vm.qmp_path()).await;

    let reply = qmp.call("quit").await;
    assert_eq!(reply.last(), Some(&json!({"return": {}})));
    assert_eq!(events(&[qmp.read().await.unwrap()]), ["SHUTDOWN"]);
    assert_eq!(qmp.read().await, None, "QMP connection closed");
    assert_eq!(host.hear(Duration::from_secs(1)).await, common::Heard::Eof);
    wait_for("the socket files are gone", Duration::from_secs(2), || {
        !vm.channel_path().exists() && !vm.qmp_path().exists()
    })
    .await;
    assert_eq!(vm.status(), VmStatus::Stopped);
    assert_eq!(vm.qmp_log(), ["qmp_capabilities", "quit"]);

    vm.restart().await.unwrap();
    assert_eq!(vm.status(), VmStatus::Running);
    let mut host = HostDouble::connect(&vm.channel_path()).await;
    host.expect_init().await;
}
