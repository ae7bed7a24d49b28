//! One supervisor task per guest: connects to its channel, drives the heartbeat state machine,
//! and carries out what the machine decides.
//!
//! The task alternates between two phases. *Connecting*: connect to the channel socket as a
//! client (QEMU listens), waiting 1 s, 2 s, … up to 60 s between failed attempts; `ENOENT`
//! means the socket file went away and ends the supervisor. *Connected* (`session.rs`): read,
//! decode and step the state machine, send what it says, and close the channel when the peer
//! closes it, the guest abuses it, or it has not heartbeated for `start_timeout`. A recovery
//! runs as a future inside the task, in both phases, so it never blocks the heartbeat of this
//! or any other guest. The registry talks to the task through [`Command`]s.

mod link;
mod mailbox;
mod operation;
mod order;
mod report;
mod session;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tether_hypervisor::Hypervisor;
use tether_proto::EventType;
use tokio::net::UnixStream;
use tokio::time::Instant;

use crate::deferral::{DeferralPolicy, Episode};
use crate::fsm::{HeartbeatFsm, Output};
use crate::journal::Journal;
use crate::lifecycle::{RunInput, Scope};
use crate::limits::TokenBucket;
use crate::operations::Operations;
use crate::recovery::{Recovery, RecoveryHistory, RecoveryLimit};
use crate::status::{Reporting, StatusCell};

/// Longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest a single `connect` may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping supervisor waits for a recovery in flight.
const RECOVERY_GRACE: Duration = Duration::from_secs(10);

/// Agent-wide settings every supervisor reads.
pub(crate) struct Settings {
    pub miss_threshold: u32,
    pub min_interval_ms: u32,
    pub start_timeout: Duration,
    pub bytes_per_sec: u32,
    pub msgs_per_sec: u32,
    pub max_bad_msgs: u32,
    pub recovery_limit: RecoveryLimit,
    pub hypervisor: Arc<dyn Hypervisor>,
    pub journal: Journal,
    pub operations: Operations,
    /// Whether failures may lead to corrective actions (host-wide and per instance).
    pub reporting: Reporting,
    /// When failures are left to the controller.
    pub deferral: DeferralPolicy,
}

pub(crate) use mailbox::{mailbox, Inbox, Mailbox};
pub(crate) use order::{Order, OrderOutcome};

/// What the registry or the API tells a supervisor.
#[derive(Debug)]
pub(crate) enum Command {
    /// The socket file was (re)created: drop any connection and connect again now.
    Reconnect,
    /// The socket file is gone or the agent stops: finish and return.
    Stop,
    /// Run a lifecycle operation (already filed with [`Operations::begin`]).
    Operate(Box<Operate>),
    /// Carry out a recovery the controller decided.
    Recover(Box<Order>),
}

/// A lifecycle operation for a supervisor to run. [`Command`] carries it (and an [`Order`])
/// boxed, so that a command stays two words however much those carry: the common commands
/// (reconnect, stop) are then cheap to queue in every guest's mailbox.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Operate {
    /// The operation id.
    pub id: String,
    /// What to do.
    pub event: EventType,
    /// How much of the sequence to run.
    pub scope: Scope,
}

/// What a finished supervisor hands back to the registry.
#[derive(Debug)]
pub(crate) struct Ended {
    pub uuid: Arc<str>,
    pub history: RecoveryHistory,
}

/// Waits between connection attempts: 1 s, doubling up to 60 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: Duration::from_secs(1),
        }
    }

    fn reset(&mut self) {
        self.next = Duration::from_secs(1);
    }

    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        wait
    }
}

/// How a connection attempt ended.
enum Connect {
    Connected(UnixStream),
    Gone,
    Stop,
}

/// The state of one guest's supervisor task.
pub(crate) struct Supervisor {
    settings: Arc<Settings>,
    uuid: Arc<str>,
    path: PathBuf,
    commands: Inbox,
    status: StatusCell,
    fsm: HeartbeatFsm,
    recovery: Recovery,
    backoff: Backoff,
    throttles: report::Throttles,
    bad_msgs: TokenBucket,
    outputs: Vec<Output>,
    connected: bool,
    connects: u32,
    protocol_errors: u64,
    /// Rare state, boxed so that the task stays small while it is `None`.
    operation: Option<Box<operation::Current>>,
    episode: Option<Box<Episode>>,
}

impl Supervisor {
    /// A supervisor for the channel at `path`, continuing the guest's recovery `history`.
    pub(crate) fn new(
        settings: Arc<Settings>,
        uuid: Arc<str>,
        path: PathBuf,
        commands: Inbox,
        status: StatusCell,
        history: RecoveryHistory,
    ) -> Supervisor {
        let seed = fastrand::u64(..);
        Supervisor {
            fsm: HeartbeatFsm::new(settings.miss_threshold, seed)
                .with_min_interval(settings.min_interval_ms),
            recovery: Recovery::new(settings.recovery_limit, history),
            bad_msgs: TokenBucket::new(1, settings.max_bad_msgs, Instant::now()),
            throttles: report::Throttles::new(),
            backoff: Backoff::new(),
            outputs: Vec::with_capacity(4),
            connected: false,
            connects: 0,
            protocol_errors: 0,
            operation: None,
            episode: None,
            settings,
            uuid,
            path,
            commands,
            status,
        }
    }

    /// Runs until stopped or until the socket file is gone.
    ///
    /// Not an `async fn`: one of those keeps its by-value arguments twice in its future (as
    /// passed and as moved into the body), which doubled the supervisor's state in every
    /// guest's task. The `async move` block keeps `self` once.
    #[allow(clippy::manual_async_fn)] // an `async fn` would store `self` twice, see above
    pub(crate) fn run(mut self) -> impl std::future::Future<Output = Ended> + Send {
        async move {
            let mut wait = None;
            loop {
                let stream = match self.connect(wait).await {
                    Connect::Connected(stream) => stream,
                    Connect::Gone | Connect::Stop => break,
                };
                match self.session(stream).await {
                    session::End::Stop => break,
                    session::End::ReconnectNow => wait = None,
                    session::End::Retry => wait = Some(self.backoff.next()),
                }
            }
            self.finish_recovery().await;
            self.finish_operation().await;
            Ended {
                uuid: self.uuid,
                history: self.recovery.into_history(),
            }
        }
    }

    /// Connects, first waiting `wait` if given, retrying with back-off.
    async fn connect(&mut self, mut wait: Option<Duration>) -> Connect {
        loop {
            if let Some(wait) = wait {
                match self.pause(wait).await {
                    Some(Command::Stop) => return Connect::Stop,
                    Some(Command::Reconnect) => self.backoff.reset(),
                    Some(Command::Recover(order)) => self.on_order(*order, Instant::now()),
                    Some(Command::Operate(_)) | None => {}
                }
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.path)).await {
                Ok(Ok(stream)) => return Connect::Connected(stream),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Connect::Gone,
                Ok(Err(e)) => self.log_connect_failure(&e.to_string()),
                Err(_) => self.log_connect_failure("timed out"),
            }
            wait = Some(self.backoff.next());
        }
    }

    /// Sleeps `wait` while finishing recoveries and running operations; returns early with
    /// a registry command.
    async fn pause(&mut self, wait: Duration) -> Option<Command> {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        let (mut op_timer, mut episode_timer) = (session::Timer::new(), session::Timer::new());
        loop {
            op_timer.set(self.operation_deadline());
            episode_timer.set(self.episode_deadline());
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Operate(op)) => self.begin_operation(*op, None, Instant::now()),
                    Some(Command::Recover(order)) => self.on_order(*order, Instant::now()),
                    other => return Some(other.unwrap_or(Command::Stop)),
                },
                () = episode_timer.expired(), if episode_timer.armed().is_some() => {
                    self.check_episode(Instant::now());
                }
                done = self.recovery.finished() => self.on_recovery_done(done),
                result = operation::acted(&mut self.operation), if self.operation_acting() => {
                    self.operation_input(RunInput::Acted(result), None, Instant::now());
                }
                () = op_timer.expired(), if op_timer.armed().is_some() => {
                    self.operation_input(RunInput::Timer, None, Instant::now());
                }
                () = &mut sleep => return None,
            }
            self.refresh_status();
        }
    }

    /// Gives an operation's action in flight a little time to finish before the supervisor
    /// returns (a stopped VM closes its channel before QEMU's answer may be read).
    async fn finish_operation(&mut self) {
        if !self.operation_acting() {
            return;
        }
        if let Ok(result) =
            tokio::time::timeout(RECOVERY_GRACE, operation::acted(&mut self.operation)).await
        {
            self.operation_input(RunInput::Acted(result), None, Instant::now());
        }
    }

    fn log_connect_failure(&mut self, error: &str) {
        if let Some(suppressed) = self.throttles.connect_log.allow(Instant::now()) {
            tracing::info!(instance = %self.uuid, path = %self.path.display(), error,
                suppressed, "Cannot connect to the guest channel; retrying with back-off");
        }
    }

    /// Gives a running recovery a little time to finish before the supervisor returns.
    async fn finish_recovery(&mut self) {
        if !self.recovery.is_running() {
            return;
        }
        match tokio::time::timeout(RECOVERY_GRACE, self.recovery.finished()).await {
            Ok(done) => self.on_recovery_done(done),
            Err(_) => tracing::warn!(instance = %self.uuid,
                "Stopped supervising while a recovery was still running; its outcome is unknown"),
        }
    }
}
