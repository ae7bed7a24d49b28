use super::*;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};

async fn linked() -> (tether_testkit::TempDir, UnixListener, Link, UnixStream) {
    let dir = tether_testkit::temp_dir();
    let path = dir.path().join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let (link, up) = Link::open(Endpoint::Socket(path)).await.unwrap();
    assert!(up && link.is_up());
    let (peer, _) = listener.accept().await.unwrap();
    (dir, listener, link, peer)
}

/// Sends 1 KiB chunks until some output waits in the link's own buffer.
fn fill(link: &mut Link) {
    let chunk = [b'x'; 1024];
    while link.out.is_empty() {
        assert!(link.send(&chunk), "the channel is up");
    }
}

#[tokio::test(start_paused = true)]
async fn output_the_channel_never_takes_is_a_stall_after_exactly_the_limit() {
    let (_dir, _listener, mut link, _peer) = linked().await;
    fill(&mut link);
    let since = Instant::now();
    match link.event().await.unwrap() {
        LinkEvent::Down(DownReason::Stalled) => {}
        other => panic!("expected a stall, got {other:?}"),
    }
    assert_eq!(Instant::now() - since, WRITE_STALL);
    assert!(!link.is_up());
    assert!(!link.send(b"dropped while down"));
}

#[tokio::test(start_paused = true)]
async fn more_than_the_pending_limit_is_an_overflow_not_a_block() {
    let (_dir, _listener, mut link, _peer) = linked().await;
    fill(&mut link);
    let big = vec![b'y'; MAX_PENDING];
    assert!(!link.send(&big));
    match link.event().await.unwrap() {
        LinkEvent::Down(DownReason::Overflow) => {}
        other => panic!("expected an overflow, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn queued_output_drains_as_the_peer_reads() {
    let (_dir, _listener, mut link, mut peer) = linked().await;
    fill(&mut link);
    let queued = link.out.len();
    assert!(queued > 0);
    let reader = tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        while let Ok(n) = peer.read(&mut sink).await {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    link.flush(Duration::from_secs(1)).await;
    assert!(link.out.is_empty() && link.is_up());
    drop(link);
    assert!(reader.await.unwrap() >= queued);
}

#[tokio::test(start_paused = true)]
async fn a_closed_peer_is_down_then_up_again_after_the_first_retry() {
    let (_dir, listener, mut link, peer) = linked().await;
    // Up long enough to count as stable: the back-off starts again from the first wait.
    tokio::time::sleep(STABLE_AFTER).await;
    drop(peer);
    assert!(matches!(
        link.event().await.unwrap(),
        LinkEvent::Down(DownReason::Closed)
    ));
    let down = Instant::now();
    assert!(matches!(link.event().await.unwrap(), LinkEvent::Up));
    assert_eq!(Instant::now() - down, SOCKET_RETRY);
    let (_peer, _) = listener.accept().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_to_the_cap_while_nobody_listens() {
    let (dir, listener, mut link, peer) = linked().await;
    drop((listener, peer));
    assert!(matches!(link.event().await.unwrap(), LinkEvent::Down(_)));
    // Quick flapping keeps the longer wait: the link was up for less than STABLE_AFTER.
    assert_eq!(link.backoff, SOCKET_RETRY * 2);
    let started = Instant::now();
    let relisten = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        UnixListener::bind(dir.path().join("s")).ok()
    };
    std::fs::remove_file(dir.path().join("s")).unwrap();
    let (event, listener) = tokio::join!(link.event(), relisten);
    assert!(matches!(event.unwrap(), LinkEvent::Up));
    assert!(listener.is_some());
    let waited = Instant::now() - started;
    assert!(
        waited >= Duration::from_secs(10) && waited <= Duration::from_secs(12),
        "{waited:?}"
    );
    assert_eq!(link.backoff, RECHECK_CAP);
}
