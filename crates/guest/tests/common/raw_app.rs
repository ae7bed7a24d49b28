//! `RawApp`: an application client that writes and reads frames itself, for tests of the
//! daemon's application API over its real UNIX socket.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use guest_heartbeat_api::wire::{
    self, ActionNotify, ActionResponse, Body, ChallengeResponse, Decoder, Frame, Init,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::timeout;

use super::{start_with_api, HostConn, HostDouble, Running, PATIENCE};
use tether_guest::GuestConfig;

/// A raw application connection.
pub struct RawApp {
    pub stream: UnixStream,
    decoder: Decoder,
    queue: VecDeque<Frame>,
    sequence: u32,
}

impl RawApp {
    pub async fn connect(path: &Path) -> RawApp {
        RawApp {
            stream: UnixStream::connect(path).await.unwrap(),
            decoder: Decoder::new(),
            queue: Default::default(),
            sequence: 0,
        }
    }

    pub async fn send(&mut self, body: Body) {
        self.sequence += 1;
        let frame = Frame {
            sequence: self.sequence,
            body,
        };
        self.stream
            .write_all(&wire::to_bytes(&frame))
            .await
            .unwrap();
    }

    /// The next frame, or `None` at end of stream.
    pub async fn recv(&mut self) -> Option<Frame> {
        timeout(PATIENCE, async {
            loop {
                if let Some(frame) = self.queue.pop_front() {
                    return Some(frame);
                }
                let mut buf = [0u8; 1024];
                let n = self.stream.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return None;
                }
                let queue = &mut self.queue;
                self.decoder
                    .feed(&buf[..n], |f| queue.push_back(f.unwrap()));
            }
        })
        .await
        .expect("a frame from the daemon in time")
    }

    pub async fn register(&mut self, name: &str, interval: u32, action: u32) -> u32 {
        self.send(init(name, interval, action)).await;
        match self.recv().await.map(|f| f.body) {
            Some(Body::InitAck { accepted }) => accepted,
            other => panic!("expected INIT_ACK, got {other:?}"),
        }
    }

    pub async fn challenged(&mut self) -> u32 {
        match self.recv().await.map(|f| f.body) {
            Some(Body::Challenge {
                heartbeat_challenge,
            }) => heartbeat_challenge,
            other => panic!("expected CHALLENGE, got {other:?}"),
        }
    }

    pub async fn answer(&mut self, value: u32, healthy: bool, action: u32, log: &str) {
        self.send(Body::ChallengeResponse(ChallengeResponse {
            heartbeat_response: value,
            health: u32::from(healthy),
            corrective_action: action,
            log_msg: log.into(),
        }))
        .await;
    }

    /// The next frame, which must be an `ACTION_NOTIFY` (challenges before it are skipped).
    pub async fn notified(&mut self) -> ActionNotify {
        loop {
            match self.recv().await.map(|f| f.body) {
                Some(Body::ActionNotify(n)) => return n,
                Some(Body::Challenge { .. }) => {}
                other => panic!("expected ACTION_NOTIFY, got {other:?}"),
            }
        }
    }

    /// Answers `notify` with `vote_result` (1 accept, 2 reject, 3 complete) and `log`.
    pub async fn vote(&mut self, notify: &ActionNotify, vote_result: u32, log: &str) {
        self.send(Body::ActionResponse(ActionResponse {
            invocation_id: notify.invocation_id,
            event_type: notify.event_type,
            notification_type: notify.notification_type,
            vote_result,
            log_msg: log.into(),
        }))
        .await;
    }
}

pub fn init(name: &str, interval: u32, action: u32) -> Body {
    Body::Init(Init {
        name: name.into(),
        heartbeat_interval_ms: interval,
        vote_secs: 8,
        shutdown_notice_secs: 5,
        suspend_notice_secs: 5,
        resume_notice_secs: 5,
        corrective_action: action,
    })
}

/// A daemon with an API socket and its registered host connection; `D` keeps the directory.
pub struct Setup<D> {
    pub _dir: D,
    pub api: PathBuf,
    pub host: HostConn,
    pub daemon: Running,
}

/// Starts a daemon with `config` and an API socket, and registers it with a host double.
pub async fn setup(config: GuestConfig) -> Setup<impl Sized> {
    let dir = tether_testkit::temp_dir();
    let host = HostDouble::bind(dir.path());
    let api = dir.path().join("api.sock");
    let daemon = start_with_api(&host.path, config, Some(api.clone()));
    let mut conn = host.accept().await;
    conn.register().await;
    Setup {
        _dir: dir,
        api,
        host: conn,
        daemon,
    }
}
