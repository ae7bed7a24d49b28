//! The application API socket of an in-process daemon, driven by raw application clients over
//! real UNIX sockets on tokio's paused clock: pinned frame bytes, the health that reaches the
//! host double, resynchronisation, misbehaving clients, and many applications at once.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::raw_app::{init, setup, RawApp};
use common::{patient_config, start_with_api, HostDouble};
use guest_heartbeat_api::wire::{self, Body, Frame};
use tether_proto::{CorrectiveAction, Health};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::{sleep, timeout};

#[cfg(target_endian = "little")]
#[tokio::test(start_paused = true)]
async fn raw_frames_have_the_reference_bytes_and_app_health_reaches_the_host() {
    let mut s = setup(patient_config()).await;
    let mut stream = UnixStream::connect(&s.api).await.unwrap();
    // INIT as an application built against the reference library writes it.
    let mut init = b"FDFDA5A5\x02\x01\x00\x00\x01\x00\x00\x00\xe4\x00\x00\x00".to_vec();
    init.resize(228, 0);
    init[20..23].copy_from_slice(b"raw");
    for (i, v) in [1000u32, 8, 5, 5, 5, 3].iter().enumerate() {
        init[60 + 4 * i..64 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    stream.write_all(&init).await.unwrap();
    let mut frame = [0u8; 228];
    stream.read_exact(&mut frame).await.unwrap();
    let mut ack = b"FDFDA5A5\x02\x01\x01\x00\x01\x00\x00\x00\xe4\x00\x00\x00\x01".to_vec();
    ack.resize(228, 0);
    assert_eq!(frame.to_vec(), ack);
    stream.read_exact(&mut frame).await.unwrap();
    assert_eq!(
        &frame[..20],
        b"FDFDA5A5\x02\x01\x03\x00\x02\x00\x00\x00\xe4\x00\x00\x00"
    );
    assert!(frame[24..].iter().all(|b| *b == 0));
    // CHALLENGE_RESPONSE: unhealthy, stop, with a reason.
    let mut response = b"FDFDA5A5\x02\x01\x04\x00\x02\x00\x00\x00\xe4\x00\x00\x00".to_vec();
    response.resize(228, 0);
    response[20..24].copy_from_slice(&frame[20..24]);
    response[28..32].copy_from_slice(&3u32.to_le_bytes());
    response[32..41].copy_from_slice(b"raw broke");
    stream.write_all(&response).await.unwrap();
    sleep(Duration::from_millis(10)).await;
    let r = s.host.challenge(1).await;
    assert_eq!(r.heartbeat_health, Health::Unhealthy);
    assert_eq!(r.corrective_action, CorrectiveAction::Stop);
    assert_eq!(r.log_msg, "raw broke");
    // FINAL removes it.
    let mut fin = b"FDFDA5A5\x02\x01\x02\x00\x03\x00\x00\x00\xe4\x00\x00\x00".to_vec();
    fin.resize(228, 0);
    stream.write_all(&fin).await.unwrap();
    sleep(Duration::from_millis(10)).await;
    assert_eq!(s.host.challenge(2).await.heartbeat_health, Health::Healthy);
    s.daemon.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn short_intervals_are_refused_and_garbage_before_a_frame_is_skipped() {
    let s = setup(patient_config()).await;
    let mut app = RawApp::connect(&s.api).await;
    assert_eq!(app.register("fast", 399, 2).await, 0);
    app.stream
        .write_all(b"\x00junk FDFD A5A5 FDFDA5")
        .await
        .unwrap();
    assert_eq!(app.register("slow", 400, 2).await, 1);
    app.challenged().await;
    s.daemon.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_timeout_is_reported_with_the_apps_action_and_an_answer_restores_it() {
    let mut s = setup(patient_config()).await;
    let mut app = RawApp::connect(&s.api).await;
    app.register("slowpoke", 1000, 4).await;
    let first = app.challenged().await;
    sleep(Duration::from_millis(2001)).await;
    let r = s.host.challenge(1).await;
    assert_eq!(r.heartbeat_health, Health::Unhealthy);
    assert_eq!(r.corrective_action, CorrectiveAction::Log);
    assert_eq!(r.log_msg, "Application slowpoke heartbeat timeout 2000 ms.");
    app.answer(first, true, 1, "").await;
    sleep(Duration::from_millis(10)).await;
    assert_eq!(s.host.challenge(2).await.heartbeat_health, Health::Healthy);
    s.daemon.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn misbehaving_clients_are_cut_off_alone() {
    let mut s = setup(patient_config()).await;
    let mut good = RawApp::connect(&s.api).await;
    good.register("good", 1000, 2).await;
    // Garbage without end.
    let mut junk = RawApp::connect(&s.api).await;
    junk.stream.write_all(&[0x55; 4096]).await.unwrap();
    assert!(junk.recv().await.is_none(), "the garbage client is cut off");
    // A client that asks for acknowledgements and never reads them.
    let mut deaf = UnixStream::connect(&s.api).await.unwrap();
    let ask = wire::to_bytes(&Frame {
        sequence: 1,
        body: init("deaf", 1000, 2),
    });
    let mut cut = false;
    for _ in 0..100 {
        for _ in 0..100 {
            if deaf.write_all(&ask).await.is_err() {
                cut = true;
                break;
            }
        }
        if cut {
            break;
        }
        sleep(Duration::from_secs(1)).await;
        // The good application keeps answering meanwhile.
        while let Ok(Some(frame)) = timeout(Duration::ZERO, good.recv()).await {
            if let Body::Challenge {
                heartbeat_challenge,
            } = frame.body
            {
                good.answer(heartbeat_challenge, true, 1, "").await;
            }
        }
    }
    assert!(cut, "a client that never reads is cut off");
    let r = s.host.challenge(1).await;
    assert_eq!(r.heartbeat_health, Health::Healthy, "{r:?}");
    let value = good.challenged().await;
    good.answer(value, false, 4, "still here").await;
    sleep(Duration::from_millis(10)).await;
    assert_eq!(s.host.challenge(2).await.log_msg, "still here");
    s.daemon.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn sixty_four_apps_heartbeat_at_once() {
    let mut s = setup(patient_config()).await;
    let mut apps = Vec::new();
    for i in 0..64 {
        let mut app = RawApp::connect(&s.api).await;
        assert_eq!(app.register(&format!("app{i}"), 500, 2).await, 1);
        apps.push(app);
    }
    for _round in 0..3 {
        for app in &mut apps {
            let value = app.challenged().await;
            app.answer(value, true, 1, "").await;
        }
    }
    assert_eq!(s.host.challenge(1).await.heartbeat_health, Health::Healthy);
    // One of them goes quiet: only it times out.
    let quiet = apps.remove(17);
    for _round in 0..3 {
        for app in &mut apps {
            let value = app.challenged().await;
            app.answer(value, true, 1, "").await;
        }
    }
    let r = s.host.challenge(2).await;
    assert_eq!(r.log_msg, "Application app17 heartbeat timeout 1000 ms.");
    drop(quiet);
    sleep(Duration::from_millis(10)).await;
    assert_eq!(s.host.challenge(3).await.heartbeat_health, Health::Healthy);
    s.daemon.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn without_its_api_socket_the_daemon_still_heartbeats() {
    let dir = tether_testkit::temp_dir();
    let host = HostDouble::bind(dir.path());
    let api = dir.path().join("no-such-dir/api.sock");
    let daemon = start_with_api(&host.path, patient_config(), Some(api));
    let mut conn = host.accept().await;
    conn.register().await;
    assert_eq!(conn.challenge(5).await.heartbeat_health, Health::Healthy);
    daemon.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_flood_is_cut_off_and_a_half_frame_harms_no_one() {
    let mut s = setup(patient_config()).await;
    let mut good = RawApp::connect(&s.api).await;
    good.register("good", 1000, 2).await;
    // Half a frame, then silence: it just waits.
    let mut half = UnixStream::connect(&s.api).await.unwrap();
    let frame = wire::to_bytes(&Frame {
        sequence: 1,
        body: init("half", 1000, 2),
    });
    half.write_all(&frame[..100]).await.unwrap();
    // A thousand valid frames at once.
    let mut flood = RawApp::connect(&s.api).await;
    let bye = wire::to_bytes(&Frame {
        sequence: 1,
        body: Body::Final {
            log_msg: String::new(),
        },
    });
    let burst: Vec<u8> = bye.iter().copied().cycle().take(bye.len() * 1000).collect();
    let _ = flood.stream.write_all(&burst).await;
    assert!(
        flood.recv().await.is_none(),
        "the flooding client is cut off"
    );
    let value = good.challenged().await;
    good.answer(value, false, 3, "good but sick").await;
    sleep(Duration::from_millis(10)).await;
    let r = s.host.challenge(1).await;
    assert_eq!(
        (r.corrective_action, r.log_msg.as_str()),
        (CorrectiveAction::Stop, "good but sick")
    );
    // The half frame completes later and registers.
    half.write_all(&frame[100..]).await.unwrap();
    let mut ack = [0u8; 228];
    half.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack[10], 1, "INIT_ACK");
    assert_eq!(ack[20], 1, "accepted");
    s.daemon.shutdown().await.unwrap();
}
