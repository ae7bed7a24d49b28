//! The daemon in-process against the host double over a real UNIX socket, on tokio's paused
//! clock: registration, challenges, timeouts and reconnection, with exact timings.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::time::Duration;

use common::{start, HostDouble, PATIENCE};
use tether_guest::GuestConfig;
use tether_proto::{CorrectiveAction, Exit, Health, Message};
use tokio::time::Instant;

const MS: fn(u64) -> Duration = Duration::from_millis;

#[tokio::test(start_paused = true)]
async fn init_is_retried_with_fresh_ids_every_init_retry_period() {
    let dir = tether_testkit::temp_dir();
    let host = HostDouble::bind(dir.path());
    let daemon = start(&host.path, GuestConfig::default());
    let mut conn = host.accept().await;
    let (first, t1) = conn.expect_init().await;
    let (second, t2) = conn.expect_init().await;
    let (third, t3) = conn.expect_init().await;
    assert_eq!(t2 - t1, MS(5000));
    assert_eq!(t3 - t2, MS(5000));
    let ids = [
        first.invocation_id,
        second.invocation_id,
        third.invocation_id,
    ];
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    assert!(ids.iter().all(|id| *id <= i32::MAX as u32));
    assert_eq!(first.name, "vm-test");
    assert_eq!(first.heartbeat_interval_ms, 1000);
    assert_eq!((first.vote_secs, first.shutdown_notice_secs), (11, 11));
    assert_eq!(
        (first.suspend_notice_secs, first.resume_notice_secs),
        (11, 11)
    );
    assert_eq!(first.restart_secs, 121);
    assert_eq!(first.corrective_action, CorrectiveAction::Reboot);
    daemon.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stale_init_acks_are_ignored_and_the_previous_id_is_accepted() {
    let dir = tether_testkit::temp_dir();
    let host = HostDouble::bind(dir.path());
    let daemon = start(&host.path, GuestConfig::default());
    let mut conn = host.accept().await;
    let (a, t0) = conn.expect_init().await;
    let (b, _) = conn.expect_init().await;
    // An id the daemon never sent: ignored, and so is a challenge while enabling.
    let unknown = (a.invocation_id ^ b.invocation_id) | 1;
    conn.send(Message::InitAck {
        invocation_id: unknown,
    })
    .await;
    conn.send(Message::Challenge {
        heartbeat_challenge: 1,
    })
    .await;
    let (c, t) = conn.expect_init().await;
    assert_eq!(t - t0, MS(10_000));
    // `a` is now two inits old: stale.
    conn.send(Message::InitAck {
        invocation_id: a.invocation_id,
    })
    .await;
    conn.send(Message::Challenge {
        heartbeat_challenge: 2,
    })
    .await;
    let (_d, t) = conn.expect_init().await;
    assert_eq!(t - t0, MS(15_000));
    // `c` is the previous init now: accepted.
    conn.send(Message::InitAck {
        invocation_id: c.invocation_id,
    })
    .await;
    let response = conn.challenge(3).await;
    assert_eq!(response.heartbeat_health, Health::Healthy);
    daemon.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn challenges_are_echoed_with_the_guest_health() {
    let dir = tether_testkit::temp_dir();
    let host = HostDouble::bind(dir.path());
    let config = GuestConfig {
        corrective_action: CorrectiveAction::Log,
        ..GuestConfig::default()
    };
    let daemon = start(&host.path, config);
    let mut conn = host.accept().await;
    conn.register().await;
    for value in [0, 1, 2_147_483_647, 123_456] {
        let response = conn.challenge(value).await;
        assert_eq!(response.heartbeat_health, Health::Healthy);
        assert_eq!(response.corrective_action, CorrectiveAction::Log);
        assert_eq!(response.log_msg, "");
    }
    daemon.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_missed_challenge_sends_the_daemon_back_to_init_after_exactly_the_timeout() {
    for (interval, min_timeout, expected) in [(1000, 5000, 5000), (4000, 5000, 8000)] {
        let dir = tether_testkit::temp_dir();
        let host = HostDouble::bind(dir.path());
        let config = GuestConfig {
            heartbeat_interval_ms: interval,
            min_timeout_ms: min_timeout,
            ..GuestConfig::default()
        };
        let daemon = start(&host.path, config);
        let mut conn = host.accept().await;
        let first = conn.register().await;
        conn.challenge(7).await;
        let challenged = Instant::now();
        let (again, at) = conn.expect_init().await;
        assert_eq!(at - challenged, MS(expected), "interval {interval}");
        assert_ne!(again.invocation_id, first.invocation_id);
        daemon.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn the_daemon_reconnects_and_registers_again_when_the_host_comes_back() {
    let dir = tether_testkit::temp_dir();
    let host = HostDouble::bind(dir.path());
    let daemon = start(&host.path, GuestConfig::default());
    // The host drops the connection but keeps listening: the daemon is back at once.
    let mut conn = host.accept().await;
    let first = conn.register().await;
    conn.challenge(1).await;
    drop(conn);
    let dropped = Instant::now();
    let mut conn = host.accept().await;
    assert!(Instant::now() - dropped <= MS(200));
    let second = conn.register().await;
    assert_ne!(first.invocation_id, second.invocation_id);
    conn.challenge(2).await;
    // The host goes away for a while, then listens again.
    drop(conn);
    let path = host.close();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let host = HostDouble::bind(path.parent().unwrap());
    let back = Instant::now();
    let mut conn = host.accept().await;
    assert!(
        Instant::now() - back <= Duration::from_secs(2),
        "back-off is capped at 2 s"
    );
    conn.register().await;
    conn.challenge(3).await;
    daemon.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_sends_exit_to_a_connected_host() {
    let dir = tether_testkit::temp_dir();
    let host = HostDouble::bind(dir.path());
    let daemon = start(&host.path, GuestConfig::default());
    let mut conn = host.accept().await;
    conn.register().await;
    conn.challenge(5).await;
    daemon.shutdown().await.unwrap();
    let exit = Message::Exit(Exit {
        log_msg: "Exiting...".into(),
    });
    assert_eq!(conn.recv().await.0, exit);
    assert_eq!(
        conn.recv_within(PATIENCE).await,
        None,
        "then the channel closes"
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_socket_is_reported_at_once() {
    let dir = tether_testkit::temp_dir();
    let missing = dir.path().join("nope.sock");
    let daemon = start(&missing, GuestConfig::default());
    let result = daemon.task.await.unwrap();
    assert!(matches!(result, Err(tether_guest::GuestError::DeviceMissing(p)) if p == missing));
}

#[tokio::test(start_paused = true)]
async fn garbage_from_the_host_is_dropped_and_the_daemon_carries_on() {
    let dir = tether_testkit::temp_dir();
    let host = HostDouble::bind(dir.path());
    let daemon = start(&host.path, GuestConfig::default());
    let mut conn = host.accept().await;
    conn.register().await;
    conn.send_raw(b"\n{not json}\n").await;
    conn.send_raw(&vec![b'x'; 5000]).await;
    conn.send_raw(b"\n{\"version\":2,\"revision\":1,\"msg_type\":\"challenge\",\"sequence\":1,\"heartbeat_challenge\":9}\n").await;
    let response = conn.challenge(10).await;
    assert_eq!(response.heartbeat_health, Health::Healthy);
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_daemons_run_side_by_side_in_one_process() {
    let dir = tether_testkit::temp_dir();
    let mut hosts = Vec::new();
    for i in 0..20 {
        let sub = dir.path().join(format!("vm{i}"));
        std::fs::create_dir(&sub).unwrap();
        let host = HostDouble::bind(&sub);
        let daemon = start(&host.path, GuestConfig::default());
        hosts.push((host, daemon));
    }
    let mut tasks = Vec::new();
    for (i, (host, daemon)) in hosts.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut conn = host.accept().await;
            conn.register().await;
            for n in 0..3 {
                conn.challenge(i as u32 * 10 + n).await;
            }
            daemon.shutdown().await.unwrap();
            assert!(matches!(conn.recv().await.0, Message::Exit(_)));
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
