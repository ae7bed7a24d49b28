//! The health-check and event-notification scripts, run for real by the in-process daemon
//! while the host double challenges it and asks for votes. Real time: the scripts are real
//! processes.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::time::Duration;

use common::{patient_config, script, start, HostConn, HostDouble};
use tether_guest::GuestConfig;
use tether_proto::{
    ActionNotify, ActionResponse, CorrectiveAction, EventType, Health, Message, NotificationType,
    VoteResult,
};

const EVENT_SCRIPT: &str = r#"
case "$2" in
  reboot) echo "fine by $1 $2"; exit 0 ;;
  stop) echo "busy saving"; echo "second line"; exit 1 ;;
  suspend) exit 7 ;;
  pause) sleep 30 ;;
esac
"#;

fn notify(event_type: EventType, timeout_ms: u32) -> Message {
    Message::ActionNotify(ActionNotify {
        invocation_id: 4242,
        event_type,
        notification_type: NotificationType::Revocable,
        timeout_ms,
    })
}

/// The next `action_response`, skipping anything else.
async fn action_response(conn: &mut HostConn) -> ActionResponse {
    loop {
        if let (Message::ActionResponse(r), _) = conn.recv().await {
            return r;
        }
    }
}

#[tokio::test]
async fn an_unhealthy_script_is_reported_once_then_held_back() {
    let dir = tether_testkit::temp_dir();
    let flag = dir.path().join("unhealthy");
    let body = format!(
        "if [ -e {0} ]; then cat {0}; exit 1; fi\necho all good",
        flag.display()
    );
    let config = GuestConfig {
        corrective_action: CorrectiveAction::Stop,
        health_check_interval_secs: 1,
        health_check_script: Some(script(dir.path(), "health", &body)),
        ..patient_config()
    };
    std::fs::write(&flag, "disk full\n").unwrap();
    let host = HostDouble::bind(dir.path());
    let daemon = start(&host.path, config);
    let mut conn = host.accept().await;
    conn.register().await;
    let mut value = 0;
    let first = loop {
        value += 1;
        let response = conn.challenge(value).await;
        if response.heartbeat_health == Health::Unhealthy {
            break response;
        }
        assert!(value < 100, "the health script never reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first.corrective_action, CorrectiveAction::Stop);
    assert_eq!(first.log_msg, "disk full");
    // Within 60 s the same report goes out with action none.
    for _ in 0..3 {
        value += 1;
        let again = conn.challenge(value).await;
        assert_eq!(again.heartbeat_health, Health::Unhealthy);
        assert_eq!(again.corrective_action, CorrectiveAction::None);
        assert_eq!(again.log_msg, "disk full");
    }
    // Healthy again once the script says so.
    std::fs::remove_file(&flag).unwrap();
    let healthy = loop {
        value += 1;
        let response = conn.challenge(value).await;
        if response.heartbeat_health == Health::Healthy {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(healthy.corrective_action, CorrectiveAction::Stop);
    assert_eq!(healthy.log_msg, "all good");
    daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn actions_are_completed_at_once_without_a_script() {
    let dir = tether_testkit::temp_dir();
    let host = HostDouble::bind(dir.path());
    let daemon = start(&host.path, patient_config());
    let mut conn = host.accept().await;
    // Before registration (enabling) and after (enabled, but no script).
    let (init, _) = conn.expect_init().await;
    conn.send(notify(EventType::Stop, 10_000)).await;
    let expected = ActionResponse {
        invocation_id: 4242,
        event_type: EventType::Stop,
        notification_type: NotificationType::Revocable,
        vote_result: VoteResult::Complete,
        log_msg: String::new(),
    };
    assert_eq!(action_response(&mut conn).await, expected);
    let ack = Message::InitAck {
        invocation_id: init.invocation_id,
    };
    conn.send(ack).await;
    conn.challenge(1).await;
    conn.send(notify(EventType::Stop, 10_000)).await;
    assert_eq!(action_response(&mut conn).await, expected);
    daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_event_script_votes() {
    let dir = tether_testkit::temp_dir();
    let config = GuestConfig {
        event_notification_script: Some(script(dir.path(), "event", EVENT_SCRIPT)),
        ..patient_config()
    };
    let host = HostDouble::bind(dir.path());
    let daemon = start(&host.path, config);
    let mut conn = host.accept().await;
    conn.register().await;
    conn.challenge(1).await;
    let cases = [
        (
            EventType::Reboot,
            VoteResult::Accept,
            "fine by revocable reboot",
        ),
        (EventType::Stop, VoteResult::Reject, "busy saving"),
        // A failing script is no answer: it does not block the action.
        (
            EventType::Suspend,
            VoteResult::Accept,
            "No answer from event script.",
        ),
    ];
    for (event, vote, reason) in cases {
        conn.send(notify(event, 20_000)).await;
        let r = action_response(&mut conn).await;
        assert_eq!(
            (r.event_type, r.vote_result, r.log_msg.as_str()),
            (event, vote, reason)
        );
        assert_eq!(r.invocation_id, 4242);
        assert_eq!(r.notification_type, NotificationType::Revocable);
    }
    daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn after_a_reboot_a_notification_runs_the_script_with_no_app_registered() {
    let dir = tether_testkit::temp_dir();
    let seen = dir.path().join("seen");
    let body = format!("echo \"$1 $2\" > {}; echo ready", seen.display());
    let config = GuestConfig {
        event_notification_script: Some(script(dir.path(), "event", &body)),
        ..patient_config()
    };
    let host = HostDouble::bind(dir.path());
    let api = dir.path().join("api.sock");
    let daemon = common::start_with_api(&host.path, config, Some(api));
    let mut conn = host.accept().await;
    conn.register().await;
    conn.send(Message::ActionNotify(ActionNotify {
        invocation_id: 4242,
        event_type: EventType::ColdMigrateEnd,
        notification_type: NotificationType::Irrevocable,
        timeout_ms: 20_000,
    }))
    .await;
    let r = action_response(&mut conn).await;
    assert_eq!(
        (r.event_type, r.vote_result, r.log_msg.as_str()),
        (EventType::ColdMigrateEnd, VoteResult::Complete, "ready")
    );
    let args = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(args, "irrevocable cold_migrate_end\n");
    daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_slow_event_script_times_out_and_a_new_action_aborts_the_old_one() {
    let dir = tether_testkit::temp_dir();
    let config = GuestConfig {
        event_notification_script: Some(script(dir.path(), "event", EVENT_SCRIPT)),
        ..patient_config()
    };
    let host = HostDouble::bind(dir.path());
    let daemon = start(&host.path, config);
    let mut conn = host.accept().await;
    conn.register().await;
    conn.challenge(1).await;
    // timeout_ms 1500: after 500 ms the silent script counts as accept.
    let asked = std::time::Instant::now();
    conn.send(notify(EventType::Pause, 1500)).await;
    let r = action_response(&mut conn).await;
    assert_eq!(
        (r.event_type, r.vote_result),
        (EventType::Pause, VoteResult::Accept)
    );
    assert_eq!(r.log_msg, "No answer from event script.");
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // A pause that would hang is cut short by a stop: only the stop is answered.
    conn.send(notify(EventType::Pause, 20_000)).await;
    conn.send(notify(EventType::Stop, 20_000)).await;
    let r = action_response(&mut conn).await;
    assert_eq!(
        (r.event_type, r.vote_result),
        (EventType::Stop, VoteResult::Reject)
    );
    let late = conn.recv_within(Duration::from_millis(1500)).await;
    assert_eq!(late, None, "nothing is sent for the aborted pause");
    daemon.shutdown().await.unwrap();
}
