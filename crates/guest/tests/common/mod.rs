//! `HostDouble`: a scripted stand-in for the host agent, for tests of the guest daemon.
//!
//! It listens on a real UNIX socket (the daemon connects to it in socket mode, as it would to
//! QEMU's channel socket), speaks heartbeat v3 with tether-proto, and lets a test send any
//! message and wait for the daemon's next one. It answers nothing on its own: each test
//! scripts the host's side of the conversation.

#![allow(dead_code)]

pub mod raw_app;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tether_guest::{Daemon, GuestConfig, GuestError, Options};
use tether_proto::{encode, Decoder, Init, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// How long a test waits for the daemon's next message before failing.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The listening side of the host double.
pub struct HostDouble {
    pub path: PathBuf,
    listener: UnixListener,
}

impl HostDouble {
    /// Listens at `dir/channel.sock`.
    pub fn bind(dir: &Path) -> HostDouble {
        let path = dir.join("channel.sock");
        let listener = UnixListener::bind(&path).expect("bind the host double's socket");
        HostDouble { path, listener }
    }

    /// Waits for the daemon to connect.
    pub async fn accept(&self) -> HostConn {
        let (stream, _) = timeout(PATIENCE, self.listener.accept())
            .await
            .expect("the daemon connects in time")
            .expect("accept");
        HostConn {
            stream,
            decoder: Decoder::new(),
            queue: VecDeque::new(),
            sequence: 0,
        }
    }

    /// Stops listening and removes the socket file (the host is gone).
    pub fn close(self) -> PathBuf {
        drop(self.listener);
        std::fs::remove_file(&self.path).expect("remove the socket file");
        self.path
    }
}

/// One connection from the daemon, seen from the host.
pub struct HostConn {
    stream: UnixStream,
    decoder: Decoder,
    queue: VecDeque<Message>,
    sequence: u32,
}

impl HostConn {
    /// Sends `message` to the daemon.
    pub async fn send(&mut self, message: Message) {
        self.sequence += 1;
        let bytes = encode(self.sequence, &message);
        self.stream
            .write_all(&bytes)
            .await
            .expect("write to the daemon");
    }

    /// Sends raw bytes, framed or not.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the daemon");
    }

    /// The daemon's next message and when it arrived; panics on end of file or after
    /// [`PATIENCE`].
    pub async fn recv(&mut self) -> (Message, Instant) {
        match timeout(PATIENCE, self.next()).await {
            Ok(Some(message)) => (message, Instant::now()),
            Ok(None) => panic!("the daemon closed the channel"),
            Err(_) => panic!("no message from the daemon within {PATIENCE:?}"),
        }
    }

    /// The daemon's next message within `limit`, or `None` if none came.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Message> {
        timeout(limit, self.next()).await.ok().flatten()
    }

    /// The next message, which must be an `init`.
    pub async fn expect_init(&mut self) -> (Init, Instant) {
        match self.recv().await {
            (Message::Init(init), at) => (init, at),
            (other, _) => panic!("expected init, got {other:?}"),
        }
    }

    /// Receives an init and acknowledges it: the daemon is then enabled.
    pub async fn register(&mut self) -> Init {
        let (init, _) = self.expect_init().await;
        self.send(Message::InitAck {
            invocation_id: init.invocation_id,
        })
        .await;
        init
    }

    /// Sends a challenge and returns the response to it (other messages are skipped).
    pub async fn challenge(&mut self, value: u32) -> tether_proto::ChallengeResponse {
        self.send(Message::Challenge {
            heartbeat_challenge: value,
        })
        .await;
        loop {
            if let (Message::ChallengeResponse(r), _) = self.recv().await {
                assert_eq!(
                    r.heartbeat_response, value,
                    "the response echoes the challenge"
                );
                return r;
            }
        }
    }

    /// Decoded messages until end of file (`None`).
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.queue.pop_front() {
                return Some(message);
            }
            let mut buf = [0u8; 2048];
            let n = self
                .stream
                .read(&mut buf)
                .await
                .expect("read from the daemon");
            if n == 0 {
                return None;
            }
            let queue = &mut self.queue;
            self.decoder.feed(&buf[..n], |frame| {
                queue.push_back(frame.expect("the daemon sends valid frames"));
            });
        }
    }
}

/// A daemon running in this process until `stop` is sent or dropped.
pub struct Running {
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), GuestError>>,
}

impl Running {
    /// Stops the daemon and returns its result.
    pub async fn shutdown(mut self) -> Result<(), GuestError> {
        drop(self.stop.take());
        timeout(PATIENCE, self.task)
            .await
            .expect("the daemon stops in time")
            .expect("the daemon task does not panic")
    }
}

/// Starts a daemon named `vm-test` on `device` with `config`.
pub fn start(device: &Path, config: GuestConfig) -> Running {
    start_with_api(device, config, None)
}

/// Starts a daemon named `vm-test` on `device` with `config`, serving applications on
/// `api_socket`.
pub fn start_with_api(device: &Path, config: GuestConfig, api_socket: Option<PathBuf>) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let daemon = Daemon::new(Options {
        device: device.to_owned(),
        name: "vm-test".into(),
        config,
        api_socket,
    });
    let task = tokio::spawn(daemon.run(async move {
        let _ = stopped.await;
    }));
    Running {
        stop: Some(stop),
        task,
    }
}

/// Writes an executable shell script `name` into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// The configuration with a challenge timeout long enough to stay out of a test's way.
pub fn patient_config() -> GuestConfig {
    GuestConfig {
        min_timeout_ms: 600_000,
        ..GuestConfig::default()
    }
}
