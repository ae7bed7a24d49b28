//! Shared parts of the simulator's tests: a simulation in a temp dir, a test double of the
//! host agent on the channel socket, and a raw QMP client.

#![allow(dead_code, clippy::unwrap_used)] // each test file uses a part; helpers may unwrap

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tether_guest::GuestConfig;
use tether_proto::{encode, ChallengeResponse, Decoder, Init, Message};
use tether_sim::{Sim, SimConfig};
use tether_testkit::{temp_dir, TempDir};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::time::timeout;

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Starts `count` VMs under a fresh temp dir with a short boot delay.
pub async fn start(count: usize) -> (TempDir, Sim) {
    let dir = temp_dir();
    let config = SimConfig {
        channel_dir: dir.path().join("channels"),
        private_dir: dir.path().join("private"),
        guest: GuestConfig::default(),
        boot_delay: Duration::from_millis(50),
        event_script: false,
    };
    let sim = Sim::start(config, count).await.unwrap();
    (dir, sim)
}

/// A test double of the host agent: connects to a channel socket, decodes what the guest
/// sends and sends host messages.
pub struct HostDouble {
    stream: UnixStream,
    decoder: Decoder,
    pending: std::collections::VecDeque<Message>,
    sequence: u32,
}

/// What a read from the channel gave.
#[derive(Debug, PartialEq)]
pub enum Heard {
    Message(Message),
    Silence,
    Eof,
}

impl HostDouble {
    pub async fn connect(path: &Path) -> HostDouble {
        HostDouble {
            stream: UnixStream::connect(path).await.unwrap(),
            decoder: Decoder::new(),
            pending: Default::default(),
            sequence: 0,
        }
    }

    pub async fn send(&mut self, message: &Message) {
        self.sequence += 1;
        self.stream
            .write_all(&encode(self.sequence, message))
            .await
            .unwrap();
    }

    /// The next message, or silence after `wait`, or EOF.
    pub async fn hear(&mut self, wait: Duration) -> Heard {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Heard::Message(message);
            }
            let mut buf = [0u8; 4096];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await;
            match read {
                Err(_) => return Heard::Silence,
                Ok(Ok(0)) | Ok(Err(_)) => return Heard::Eof,
                Ok(Ok(n)) => {
                    let pending = &mut self.pending;
                    self.decoder.feed(&buf[..n], |frame| {
                        if let Ok(message) = frame {
                            pending.push_back(message);
                        }
                    });
                }
            }
        }
    }

    /// The next message that `pick` accepts, skipping others; panics on silence or EOF.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Message) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.hear(left).await {
                Heard::Message(m) => {
                    if let Some(found) = pick(&m) {
                        return found;
                    }
                }
                other => panic!("expected {what}, got {other:?}"),
            }
        }
    }

    pub async fn expect_init(&mut self) -> Init {
        self.expect("init", |m| match m {
            Message::Init(init) => Some(init.clone()),
            _ => None,
        })
        .await
    }

    /// Acknowledges `init` and sends the first challenge, as the host agent does.
    pub async fn accept(&mut self, init: &Init, challenge: u32) {
        self.send(&Message::InitAck {
            invocation_id: init.invocation_id,
        })
        .await;
        self.challenge(challenge).await;
    }

    pub async fn challenge(&mut self, value: u32) {
        self.send(&Message::Challenge {
            heartbeat_challenge: value,
        })
        .await;
    }

    pub async fn expect_response(&mut self, challenge: u32) -> ChallengeResponse {
        self.expect("challenge_response", |m| match m {
            Message::ChallengeResponse(r) if r.heartbeat_response == challenge => Some(r.clone()),
            _ => None,
        })
        .await
    }

    /// Connects, takes the guest's init and completes one challenge round.
    pub async fn handshake(path: &Path) -> (HostDouble, Init) {
        let mut host = HostDouble::connect(path).await;
        let init = host.expect_init().await;
        host.accept(&init, 1).await;
        host.expect_response(1).await;
        (host, init)
    }
}

/// A raw QMP client that shows every line, events included.
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    pub async fn connect(path: &Path) -> Qmp {
        let (read, writer) = UnixStream::connect(path).await.unwrap().into_split();
        Qmp {
            reader: BufReader::new(read),
            writer,
        }
    }

    /// The next line as JSON; `None` at EOF. Panics if nothing comes within [`PATIENCE`].
    pub async fn read(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = timeout(PATIENCE, self.reader.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            return None;
        }
        assert!(line.ends_with("\r\n"), "QMP lines end with CRLF: {line:?}");
        Some(serde_json::from_str(&line).unwrap())
    }

    /// Whether a line arrives within `wait`.
    pub async fn silent_for(&mut self, wait: Duration) -> bool {
        let mut line = String::new();
        timeout(wait, self.reader.read_line(&mut line))
            .await
            .is_err()
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).await.unwrap();
        self.writer.write_all(b"\n").await.unwrap();
    }

    pub async fn send(&mut self, request: Value) {
        self.send_raw(&request.to_string()).await;
    }

    /// Connects, checks the greeting, negotiates capabilities.
    pub async fn ready(path: &Path) -> Qmp {
        let mut qmp = Qmp::connect(path).await;
        let greeting = qmp.read().await.unwrap();
        assert!(greeting["QMP"]["version"]["qemu"].is_object(), "{greeting}");
        qmp.send(serde_json::json!({"execute": "qmp_capabilities"}))
            .await;
        assert_eq!(qmp.read().await, Some(serde_json::json!({"return": {}})));
        qmp
    }

    /// Sends `command` and returns the lines up to and including its reply.
    pub async fn call(&mut self, command: &str) -> Vec<Value> {
        self.send(serde_json::json!({"execute": command})).await;
        let mut seen = Vec::new();
        loop {
            let line = self.read().await.unwrap();
            let reply = line.get("return").is_some() || line.get("error").is_some();
            seen.push(line);
            if reply {
                return seen;
            }
        }
    }
}

/// The names of the events among `lines`.
pub fn events(lines: &[Value]) -> Vec<&str> {
    lines.iter().filter_map(|l| l["event"].as_str()).collect()
}
