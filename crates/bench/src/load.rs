//! The load process (`tether bench load`): many emulated guests in one process.
//!
//! For every guest it listens on a channel socket `cgcs.heartbeat.<uuid>.sock`, as QEMU does
//! for a VM's virtio-serial channel, and serves whoever connects (the host agent, or the
//! baseline's null agent): it sends the v3 `init`, then answers every `challenge` with a
//! healthy `challenge_response`. One task per guest on one thread keeps the process light.
//!
//! It talks to the bench controller with lines. On standard input: `start` begins the
//! measured window (and schedules the injected failures), `stop` ends it, end of input asks for
//! the result. On standard output: `ready <guests>` once every socket is bound, `progress
//! <heartbeating> <challenges> <answers>` every 100 ms, and finally `result <json>`
//! ([`LoadResult`]).
//!
//! What it measures, per guest: the challenge delay (the arrival of a challenge minus one
//! interval after the arrival of the previous one; the agent arms its next challenge when it
//! sends one, so a timely agent delivers them exactly one interval apart), and, for a guest
//! made silent, the wall-clock instant of the first challenge it left unanswered.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde::{Deserialize, Serialize};
use tether_proto::{
    encode_into, ChallengeResponse, CorrectiveAction, Decoder, Health, Init, Message,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::LocalSet;
use tokio::time::Instant;

use crate::stats::Spread;
use crate::{io_err, BenchError};

/// Flags of `tether bench load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Directory for the channel sockets.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Guests to emulate.
    #[arg(long, value_name = "N")]
    pub guests: usize,
    /// Heartbeat interval each guest asks for in its `init`.
    #[arg(long, value_name = "MS")]
    pub interval_ms: u32,
    /// Interval the challenges are expected at (the agent may raise the one asked for).
    #[arg(long, value_name = "MS")]
    pub expect_interval_ms: u64,
    /// Guests that go silent at random moments of the window after `start`.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub fail: usize,
    /// Length of the window in which the failures are placed.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub fail_window_ms: u64,
    /// Seed for the choice of failed guests and their moments.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
}

/// One guest made silent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    /// Its instance uuid.
    pub uuid: String,
    /// Wall clock (ms since the epoch) when the first challenge it left unanswered arrived.
    pub silent_at_ms: f64,
}

/// What the load process measured over the window between `start` and `stop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// Challenges that arrived at the guests.
    pub challenges: u64,
    /// Answers the guests sent.
    pub answers: u64,
    /// Challenge delay of the healthy guests, in ms.
    pub delay_ms: Spread,
    /// The guests made silent, with the moment each fell silent.
    pub failed: Vec<Failure>,
}

/// The uuid of guest `index` in a run identified by `run`.
pub fn guest_uuid(run: u32, index: usize) -> String {
    format!("{run:08x}-0000-4000-8000-{index:012x}")
}

/// State shared by the guest tasks (one thread, so plain cells).
struct Shared {
    expect: Duration,
    interval_ms: u32,
    recording: Cell<bool>,
    heartbeating: Cell<usize>,
    challenges: Cell<u64>,
    answers: Cell<u64>,
    window: RefCell<LoadResult>,
    delays: RefCell<Vec<f64>>,
    silent: RefCell<Vec<bool>>,
}

/// Runs the load process until its standard input ends.
pub async fn run_load(args: LoadArgs) -> Result<(), BenchError> {
    LocalSet::new().run_until(serve(args)).await
}

async fn serve(args: LoadArgs) -> Result<(), BenchError> {
    let run = fastrand::Rng::with_seed(args.seed).u32(..);
    let shared = Rc::new(Shared {
        expect: Duration::from_millis(args.expect_interval_ms),
        interval_ms: args.interval_ms,
        recording: Cell::new(false),
        heartbeating: Cell::new(0),
        challenges: Cell::new(0),
        answers: Cell::new(0),
        window: RefCell::default(),
        delays: RefCell::default(),
        silent: RefCell::new(vec![false; args.guests]),
    });
    let mut uuids = Vec::with_capacity(args.guests);
    for index in 0..args.guests {
        let uuid: Rc<str> = guest_uuid(run, index).into();
        let path = args.dir.join(format!("cgcs.heartbeat.{uuid}.sock"));
        let listener =
            UnixListener::bind(&path).map_err(io_err(format!("listen on {}", path.display())))?;
        tokio::task::spawn_local(serve_guest(listener, index, uuid.clone(), shared.clone()));
        uuids.push(uuid);
    }
    say(&format!("ready {}", args.guests));
    tokio::task::spawn_local(report_progress(shared.clone()));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim() {
            "start" => start_window(&shared, &args, &uuids),
            "stop" => shared.recording.set(false),
            _ => {}
        }
    }
    let mut result = shared.window.take();
    result.delay_ms = Spread::of(&mut shared.delays.borrow_mut());
    let json = serde_json::to_string(&result).unwrap_or_default();
    say(&format!("result {json}"));
    Ok(())
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn report_progress(shared: Rc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        say(&format!(
            "progress {} {} {}",
            shared.heartbeating.get(),
            shared.challenges.get(),
            shared.answers.get()
        ));
    }
}

/// Begins recording and schedules the failures at random moments of the fail window.
fn start_window(shared: &Rc<Shared>, args: &LoadArgs, uuids: &[Rc<str>]) {
    shared.recording.set(true);
    let mut rng = fastrand::Rng::with_seed(args.seed.wrapping_add(1));
    let mut order: Vec<usize> = (0..uuids.len()).collect();
    rng.shuffle(&mut order);
    for &index in order.iter().take(args.fail) {
        let after = Duration::from_millis(rng.u64(0..args.fail_window_ms.max(1)));
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(after).await;
            if let Some(flag) = shared.silent.borrow_mut().get_mut(index) {
                *flag = true;
            }
        });
    }
}

/// Serves one guest's channel socket: one connection after another.
async fn serve_guest(listener: UnixListener, index: usize, uuid: Rc<str>, shared: Rc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors, most likely: the controller sizes the load
                // processes to avoid it, and a later attempt may succeed.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut conn = Connection {
            index,
            uuid: &uuid,
            shared: &shared,
            last_challenge: None,
            answering: false,
            silence_recorded: false,
            sequence: 0,
            out: Vec::with_capacity(512),
        };
        conn.serve(stream).await;
        if conn.answering {
            shared.heartbeating.set(shared.heartbeating.get() - 1);
        }
    }
}

/// One connection of one emulated guest.
struct Connection<'a> {
    index: usize,
    uuid: &'a str,
    shared: &'a Shared,
    last_challenge: Option<Instant>,
    answering: bool,
    silence_recorded: bool,
    sequence: u32,
    out: Vec<u8>,
}

impl Connection<'_> {
    async fn serve(&mut self, mut stream: UnixStream) {
        let init = Message::Init(Init {
            invocation_id: self.index as u32 & tether_proto::MAX_INT,
            name: format!("bench-{}", self.index),
            heartbeat_interval_ms: self.shared.interval_ms,
            vote_secs: 9,
            shutdown_notice_secs: 9,
            suspend_notice_secs: 9,
            resume_notice_secs: 9,
            restart_secs: 121,
            corrective_action: CorrectiveAction::Reboot,
        });
        self.send(&init);
        let mut decoder = Decoder::new();
        let mut buf = [0u8; 2048];
        let mut challenges = Vec::new();
        loop {
            if !self.out.is_empty() {
                if stream.write_all(&self.out).await.is_err() {
                    return;
                }
                self.out.clear();
            }
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            decoder.feed(&buf[..n], |frame| {
                if let Ok(Message::Challenge {
                    heartbeat_challenge,
                }) = frame
                {
                    challenges.push(heartbeat_challenge);
                }
            });
            for challenge in challenges.drain(..) {
                self.on_challenge(challenge);
            }
        }
    }

    fn send(&mut self, message: &Message) {
        encode_into(&mut self.out, self.sequence, message);
        self.sequence = self.sequence.wrapping_add(1) & tether_proto::MAX_INT;
    }

    fn on_challenge(&mut self, challenge: u32) {
        let now = Instant::now();
        let shared = self.shared;
        let recording = shared.recording.get();
        let silent = shared
            .silent
            .borrow()
            .get(self.index)
            .copied()
            .unwrap_or(false);
        let previous = self.last_challenge.replace(now);
        shared.challenges.set(shared.challenges.get() + 1);
        if recording {
            shared.window.borrow_mut().challenges += 1;
        }
        if silent {
            self.fall_silent();
            return;
        }
        if let (Some(previous), true) = (previous, recording) {
            let gap = now.saturating_duration_since(previous).as_secs_f64();
            let delay_ms = (gap - shared.expect.as_secs_f64()) * 1000.0;
            shared.delays.borrow_mut().push(delay_ms);
        }
        self.send(&Message::ChallengeResponse(ChallengeResponse {
            heartbeat_response: challenge,
            heartbeat_health: Health::Healthy,
            corrective_action: CorrectiveAction::None,
            log_msg: String::new(),
        }));
        shared.answers.set(shared.answers.get() + 1);
        if recording {
            shared.window.borrow_mut().answers += 1;
        }
        if !self.answering {
            self.answering = true;
            shared.heartbeating.set(shared.heartbeating.get() + 1);
        }
    }

    /// Records the moment this guest first left a challenge unanswered.
    fn fall_silent(&mut self) {
        if self.silence_recorded {
            return;
        }
        self.silence_recorded = true;
        let silent_at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        self.shared.window.borrow_mut().failed.push(Failure {
            uuid: self.uuid.to_owned(),
            silent_at_ms,
        });
    }
}
