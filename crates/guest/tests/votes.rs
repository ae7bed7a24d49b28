//! Lifecycle votes and notifications put to applications: an in-process daemon, raw
//! application clients on its real API socket and the host double on its channel, on tokio's
//! paused clock.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::patient_config;
use common::raw_app::{setup, RawApp};
use common::HostConn;
use guest_heartbeat_api::wire::{self, Body, Frame, Init};
use tether_proto::{
    ActionNotify, ActionResponse, EventType, Message, NotificationType, VoteResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

fn notify(event_type: EventType, notification_type: NotificationType) -> Message {
    Message::ActionNotify(ActionNotify {
        invocation_id: 4242,
        event_type,
        notification_type,
        timeout_ms: 20_000,
    })
}

/// The next `action_response` and how long after `since` it came, skipping anything else.
async fn action_response(conn: &mut HostConn, since: Instant) -> (ActionResponse, Duration) {
    loop {
        if let (Message::ActionResponse(r), at) = conn.recv().await {
            return (r, at - since);
        }
    }
}

/// An application `name` that answers votes within `vote_secs`.
async fn app(api: &std::path::Path, name: &str, vote_secs: u32) -> RawApp {
    let mut app = RawApp::connect(api).await;
    app.send(Body::Init(Init {
        name: name.into(),
        heartbeat_interval_ms: 100_000,
        vote_secs,
        shutdown_notice_secs: vote_secs,
        suspend_notice_secs: vote_secs,
        resume_notice_secs: vote_secs,
        corrective_action: 2,
    }))
    .await;
    assert!(matches!(
        app.recv().await.map(|f| f.body),
        Some(Body::InitAck { accepted: 1 })
    ));
    app
}

/// The next frame of type ACTION_NOTIFY on `stream`, as bytes.
async fn raw_notify(stream: &mut UnixStream) -> [u8; 228] {
    let mut frame = [0u8; 228];
    loop {
        stream.read_exact(&mut frame).await.unwrap();
        if frame[10] == 5 {
            return frame;
        }
    }
}

#[cfg(target_endian = "little")]
#[tokio::test(start_paused = true)]
async fn a_raw_app_gets_the_reference_frame_and_its_reject_reaches_the_host() {
    let mut s = setup(patient_config()).await;
    let mut stream = UnixStream::connect(&s.api).await.unwrap();
    let init = Body::Init(Init {
        name: "db".into(),
        heartbeat_interval_ms: 100_000,
        vote_secs: 8,
        shutdown_notice_secs: 5,
        suspend_notice_secs: 5,
        resume_notice_secs: 5,
        corrective_action: 2,
    });
    let init = wire::to_bytes(&Frame {
        sequence: 1,
        body: init,
    });
    stream.write_all(&init).await.unwrap();
    let mut ack = [0u8; 228];
    stream.read_exact(&mut ack).await.unwrap();
    assert_eq!((ack[10], ack[20]), (1, 1), "INIT_ACK, accepted");

    let asked = Instant::now();
    s.host
        .send(notify(EventType::Stop, NotificationType::Revocable))
        .await;
    let frame = raw_notify(&mut stream).await;
    assert_eq!(&frame[..8], b"FDFDA5A5");
    assert_eq!(
        &frame[8..12],
        b"\x02\x01\x05\x00",
        "version 2, revision 1, type 5"
    );
    assert_eq!(&frame[16..20], &228u32.to_le_bytes());
    let id = &frame[20..24];
    assert_ne!(id, [0; 4], "a fresh invocation id, not the host's");
    assert_eq!(
        &frame[24..32],
        b"\x01\x00\x00\x00\x01\x00\x00\x00",
        "stop, revocable"
    );
    assert!(frame[32..].iter().all(|b| *b == 0));

    // ACTION_RESPONSE: an accept with a wrong id (dropped), then a reject with a reason.
    let mut answer = b"FDFDA5A5\x02\x01\x06\x00\x02\x00\x00\x00\xe4\x00\x00\x00".to_vec();
    answer.resize(228, 0);
    let wrong = u32::from_le_bytes(id.try_into().unwrap()) ^ 1;
    answer[20..24].copy_from_slice(&wrong.to_le_bytes());
    answer[24..36].copy_from_slice(b"\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00");
    stream.write_all(&answer).await.unwrap();
    answer[20..24].copy_from_slice(id);
    answer[32] = 2;
    answer[36..48].copy_from_slice(b"db is saving");
    stream.write_all(&answer).await.unwrap();
    let (r, took) = action_response(&mut s.host, asked).await;
    let want = ActionResponse {
        invocation_id: 4242,
        event_type: EventType::Stop,
        notification_type: NotificationType::Revocable,
        vote_result: VoteResult::Reject,
        log_msg: "db is saving".into(),
    };
    assert_eq!(r, want);
    assert!(took < Duration::from_secs(1), "answered at once: {took:?}");
    s.daemon.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_silent_app_counts_as_accept_at_its_own_timeout() {
    let mut s = setup(patient_config()).await;
    let mut quiet = app(&s.api, "quiet", 2).await;
    let mut fast = app(&s.api, "fast", 8).await;
    let asked = Instant::now();
    s.host
        .send(notify(EventType::Reboot, NotificationType::Revocable))
        .await;
    let n = fast.notified().await;
    fast.vote(&n, 1, "").await;
    quiet.notified().await;
    let (r, took) = action_response(&mut s.host, asked).await;
    assert_eq!(
        (r.vote_result, r.log_msg.as_str()),
        (VoteResult::Accept, "No answer from application quiet.")
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "at quiet's vote_secs, not at the 19 s deadline: {took:?}"
    );
    s.daemon.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_notification_is_completed_once_every_app_is_done_or_gone() {
    let mut s = setup(patient_config()).await;
    let mut a = app(&s.api, "a", 8).await;
    let mut b = app(&s.api, "b", 8).await;
    let mut gone = app(&s.api, "gone", 8).await;
    let asked = Instant::now();
    s.host
        .send(notify(EventType::Stop, NotificationType::Irrevocable))
        .await;
    for app in [&mut a, &mut b] {
        let n = app.notified().await;
        assert_eq!((n.event_type, n.notification_type), (1, 2));
        app.vote(&n, 3, "").await;
    }
    gone.notified().await;
    drop(gone);
    let (r, took) = action_response(&mut s.host, asked).await;
    assert_eq!(
        (r.vote_result, r.log_msg.as_str()),
        (VoteResult::Complete, "No answer from application gone.")
    );
    assert!(
        took < Duration::from_secs(1),
        "no wait for anyone: {took:?}"
    );
    s.daemon.shutdown().await.unwrap();
}
