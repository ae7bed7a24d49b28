//! A scripted guest double: listens on a channel socket the way QEMU does and speaks heartbeat
//! v3 like the reference guest daemon (init retried every 5 s until acked, answers to every
//! challenge, re-init after max(2 × interval, 5 s) without a challenge). Its behaviour is
//! switched at run time, and it can inject raw bytes or flood the channel.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_proto::{
    encode, ActionResponse, ChallengeResponse, CorrectiveAction, Decoder, Exit, Health, Init,
    Message, VoteResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const INIT_RETRY: Duration = Duration::from_secs(5);
const MIN_TIMEOUT: Duration = Duration::from_secs(5);
const DEDUP: Duration = Duration::from_secs(60);

/// How the double answers challenges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Healthy answers.
    Healthy,
    /// Keeps its init logic but never answers a challenge (a hung application loop).
    Hang,
    /// Nothing at all: no init, no answer (a frozen VM).
    Frozen,
    /// Unhealthy answers asking for `action` once, then `none` for 60 s (the guest's dedup).
    Unhealthy {
        action: CorrectiveAction,
        reason: String,
    },
    /// Unhealthy answers asking for `action` every time (a guest without dedup).
    UnhealthyEveryTime {
        action: CorrectiveAction,
        reason: String,
    },
}

/// What the double saw and did.
#[derive(Debug, Default, Clone)]
pub struct Log {
    pub connections: u32,
    pub disconnects: u32,
    pub inits_sent: u32,
    pub acks: u32,
    /// When each challenge arrived, and whether it was answered.
    pub challenges: Vec<(Instant, bool)>,
    pub nacks: Vec<String>,
}

enum Cmd {
    Raw(Vec<u8>),
    Flood,
    Exit,
    Restart,
}

struct Shared {
    mode: Mutex<Mode>,
    log: Mutex<Log>,
    interval_ms: u32,
    action: CorrectiveAction,
    /// The answer to every `action_notify`, if it answers them.
    vote: Mutex<Option<(VoteResult, String)>>,
}

/// The double; dropping it stops it and removes its socket.
pub struct GuestDouble {
    pub uuid: String,
    pub path: PathBuf,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Cmd>,
    task: JoinHandle<()>,
}

/// The channel socket path of `uuid` in `dir` (the default pattern).
pub fn channel_path(dir: &Path, uuid: &str) -> PathBuf {
    dir.join(format!("cgcs.heartbeat.{uuid}.sock"))
}

/// A uuid made from a number, for readable tests.
pub fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

impl GuestDouble {
    /// Listens on `dir`'s channel socket for `uuid`, asking for `interval_ms` and `action`.
    pub fn start(
        dir: &Path,
        uuid: &str,
        interval_ms: u32,
        action: CorrectiveAction,
    ) -> GuestDouble {
        let path = channel_path(dir, uuid);
        let listener = UnixListener::bind(&path).expect("bind channel socket");
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Healthy),
            log: Mutex::new(Log::default()),
            interval_ms,
            action,
            vote: Mutex::new(None),
        });
        let (commands, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve(listener, shared.clone(), rx));
        GuestDouble {
            uuid: uuid.to_owned(),
            path,
            shared,
            commands,
            task,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Answers every `action_notify` from now on with `result` and `log_msg` (`None`: never
    /// answers, the default).
    pub fn set_vote(&self, vote: Option<(VoteResult, &str)>) {
        *self.shared.vote.lock().unwrap() = vote.map(|(r, log)| (r, log.to_owned()));
    }

    pub fn log(&self) -> Log {
        self.shared.log.lock().unwrap().clone()
    }

    /// Writes raw bytes on the current connection.
    pub fn send_raw(&self, bytes: impl Into<Vec<u8>>) {
        self.commands.send(Cmd::Raw(bytes.into())).unwrap();
    }

    /// Writes garbage lines as fast as the current connection takes them.
    pub fn flood(&self) {
        self.commands.send(Cmd::Flood).unwrap();
    }

    /// Sends `exit` and stays quiet until [`GuestDouble::restart_daemon`].
    pub fn exit(&self) {
        self.commands.send(Cmd::Exit).unwrap();
    }

    /// Starts the guest daemon again after an exit: it sends a fresh `init`.
    pub fn restart_daemon(&self) {
        self.commands.send(Cmd::Restart).unwrap();
    }

    /// Stops listening and removes the socket, as QEMU does when the VM's process exits.
    pub fn remove(self) {}
}

impl Drop for GuestDouble {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The guest daemon's state; it survives reconnections, which the guest does not see.
struct Guest {
    enabled: bool,
    init_id: u32,
    prev_id: u32,
    last_init: Instant,
    last_challenge: Instant,
    reported_at: Option<Instant>,
    sequence: u32,
    exited: bool,
    rng: fastrand::Rng,
}

async fn serve(listener: UnixListener, shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let now = Instant::now();
    let mut guest = Guest {
        enabled: false,
        init_id: 0,
        prev_id: 0,
        last_init: now,
        last_challenge: now,
        reported_at: None,
        sequence: 0,
        exited: false,
        rng: fastrand::Rng::with_seed(1),
    };
    while let Ok((stream, _)) = listener.accept().await {
        shared.log.lock().unwrap().connections += 1;
        connection(stream, &shared, &mut guest, &mut rx).await;
        shared.log.lock().unwrap().disconnects += 1;
    }
}

async fn connection(
    stream: UnixStream,
    shared: &Shared,
    guest: &mut Guest,
    rx: &mut mpsc::UnboundedReceiver<Cmd>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 4096];
    let mut flooding = false;
    let garbage = b"\n{\"version\":3,\"garbage\n".repeat(64);
    if !guest.enabled && !frozen(shared, guest) && guest.send_init(&mut wr, shared).await.is_err() {
        return;
    }
    loop {
        let timeout = guest.challenge_timeout(shared);
        let next = if guest.enabled {
            guest.last_challenge + timeout
        } else {
            guest.last_init + INIT_RETRY
        };
        tokio::select! {
            read = rd.read(&mut buf) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                let mut messages = Vec::new();
                decoder.feed(&buf[..n], |m| messages.extend(m.ok()));
                for message in messages {
                    if guest.on_message(message, &mut wr, shared).await.is_err() {
                        return;
                    }
                }
            }
            () = tokio::time::sleep_until(next) => {
                if frozen(shared, guest) {
                    guest.enabled = false;
                    guest.last_init = Instant::now();
                    continue;
                }
                guest.enabled = false;
                if guest.send_init(&mut wr, shared).await.is_err() {
                    return;
                }
            }
            cmd = rx.recv() => match cmd {
                Some(Cmd::Raw(bytes)) => { if wr.write_all(&bytes).await.is_err() { return; } }
                Some(Cmd::Flood) => flooding = true,
                Some(Cmd::Exit) => {
                    guest.exited = true;
                    guest.enabled = false;
                    let exit = Message::Exit(Exit { log_msg: "Exiting...".into() });
                    if guest.send(&mut wr, &exit).await.is_err() { return; }
                }
                Some(Cmd::Restart) => {
                    guest.exited = false;
                    if guest.send_init(&mut wr, shared).await.is_err() { return; }
                }
                None => return,
            },
            written = wr.write(&garbage), if flooding => if written.is_err() { return },
        }
    }
}

fn frozen(shared: &Shared, guest: &Guest) -> bool {
    guest.exited || *shared.mode.lock().unwrap() == Mode::Frozen
}

impl Guest {
    fn challenge_timeout(&self, shared: &Shared) -> Duration {
        (Duration::from_millis(u64::from(shared.interval_ms)) * 2).max(MIN_TIMEOUT)
    }

    async fn send(&mut self, wr: &mut OwnedWriteHalf, message: &Message) -> std::io::Result<()> {
        self.sequence += 1;
        wr.write_all(&encode(self.sequence, message)).await
    }

    async fn send_init(&mut self, wr: &mut OwnedWriteHalf, shared: &Shared) -> std::io::Result<()> {
        self.prev_id = self.init_id;
        self.init_id = self.rng.u32(0..=tether_proto::MAX_INT);
        self.last_init = Instant::now();
        shared.log.lock().unwrap().inits_sent += 1;
        let init = Message::Init(Init {
            invocation_id: self.init_id,
            name: "double".into(),
            heartbeat_interval_ms: shared.interval_ms,
            vote_secs: 9,
            shutdown_notice_secs: 9,
            suspend_notice_secs: 9,
            resume_notice_secs: 9,
            restart_secs: 121,
            corrective_action: shared.action,
        });
        self.send(wr, &init).await
    }

    async fn on_message(
        &mut self,
        message: Message,
        wr: &mut OwnedWriteHalf,
        shared: &Shared,
    ) -> std::io::Result<()> {
        match message {
            Message::InitAck { invocation_id }
                if !self.enabled
                    && (invocation_id == self.init_id || invocation_id == self.prev_id) =>
            {
                self.enabled = true;
                self.last_challenge = Instant::now();
                shared.log.lock().unwrap().acks += 1;
            }
            Message::Challenge {
                heartbeat_challenge,
            } if self.enabled => {
                self.last_challenge = Instant::now();
                let answer = self.answer(heartbeat_challenge, shared);
                let answered = answer.is_some();
                shared
                    .log
                    .lock()
                    .unwrap()
                    .challenges
                    .push((Instant::now(), answered));
                if let Some(answer) = answer {
                    self.send(wr, &Message::ChallengeResponse(answer)).await?;
                }
            }
            Message::ActionNotify(notify) if self.enabled => {
                let vote = shared.vote.lock().unwrap().clone();
                if let Some((vote_result, log_msg)) = vote {
                    let response = ActionResponse {
                        invocation_id: notify.invocation_id,
                        event_type: notify.event_type,
                        notification_type: notify.notification_type,
                        vote_result,
                        log_msg,
                    };
                    self.send(wr, &Message::ActionResponse(response)).await?;
                }
            }
            Message::Nack(nack) => shared.log.lock().unwrap().nacks.push(nack.log_msg),
            _ => {}
        }
        Ok(())
    }

    fn answer(&mut self, challenge: u32, shared: &Shared) -> Option<ChallengeResponse> {
        let mode = shared.mode.lock().unwrap().clone();
        let (health, action, log) = match mode {
            Mode::Hang | Mode::Frozen => return None,
            Mode::Healthy => (Health::Healthy, shared.action, String::new()),
            Mode::UnhealthyEveryTime { action, reason } => (Health::Unhealthy, action, reason),
            Mode::Unhealthy { action, reason } => {
                let now = Instant::now();
                let fresh = self.reported_at.is_none_or(|at| now - at >= DEDUP);
                if fresh {
                    self.reported_at = Some(now);
                }
                (
                    Health::Unhealthy,
                    if fresh {
                        action
                    } else {
                        CorrectiveAction::None
                    },
                    reason,
                )
            }
        };
        Some(ChallengeResponse {
            heartbeat_response: challenge,
            heartbeat_health: health,
            corrective_action: action,
            log_msg: log,
        })
    }
}
