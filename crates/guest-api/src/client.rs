//! The Rust client: an application's connection to the guest daemon.
//!
//! [`Client`] is blocking and owns no thread. The application registers, then waits until
//! [`Client::fd`] is readable (with `poll`, an async reactor, or [`Client::run_once`]) and calls
//! [`Client::dispatch`], which hands every challenge, registration result and action to a
//! [`Handler`] and answers challenges itself. When the daemon goes away the handler hears
//! `register_state(false)`, and [`Client::tick`] (called by `run_once`) registers again every
//! [`RETRY`] until the daemon is back.
//!
//! The lower-level [`Client::read_events`] returns what arrived without calling anything, for
//! callers (such as the C API) that must not hold the client while their callbacks run.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::types::{Action, Event, Notify, Vote};
use crate::wire::{self, Body, Decoder, Frame};

/// Where the daemon listens by default.
pub const DEFAULT_SOCKET: &str = "/var/run/.guest_heartbeat_api";
/// How often [`Client::tick`] tries to register again while the daemon is away.
pub const RETRY: Duration = Duration::from_secs(1);

/// What an application registers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The application's name (at most 39 bytes are sent).
    pub name: String,
    /// How often the daemon challenges; at least 400 ms or the daemon refuses.
    pub heartbeat_interval_ms: u32,
    /// How long a vote may take, in seconds.
    pub vote_secs: u32,
    /// How long preparing for a shutdown may take, in seconds.
    pub shutdown_notice_secs: u32,
    /// How long preparing for a suspend may take, in seconds.
    pub suspend_notice_secs: u32,
    /// How long preparing for a resume may take, in seconds.
    pub resume_notice_secs: u32,
    /// What the host does when the application stops answering.
    pub corrective_action: Action,
}

/// An application's answer to a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// Whether the application is healthy.
    pub healthy: bool,
    /// What the host should do when unhealthy.
    pub corrective_action: Action,
    /// Why (at most 191 bytes are sent).
    pub log_msg: String,
}

/// Something that arrived from the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The registration was accepted (`true`) or refused, or the daemon went away (`false`).
    RegisterState(bool),
    /// A health check: answer with [`Client::respond_health`].
    Challenge(u32),
    /// An action: answer with [`Client::send_action_response`].
    ActionNotify {
        /// Echo it in the answer.
        invocation_id: u32,
        /// What happens.
        event: Event,
        /// Vote or notification.
        notify: Notify,
    },
}

/// The callbacks of an application.
pub trait Handler {
    /// Registration accepted (`true`), refused, or lost (`false`).
    fn register_state(&mut self, registered: bool);
    /// The application's health; called for every challenge and answered at once.
    fn health_check(&mut self) -> HealthReport;
    /// A lifecycle action; answer later with [`Client::send_action_response`].
    fn action_notify(&mut self, invocation_id: u32, event: Event, notify: Notify);
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon is not there (yet); try again later.
    #[error("the guest daemon is not reachable: {0}")]
    TryAgain(#[source] io::Error),
    /// Anything else.
    #[error("guest daemon connection failed: {0}")]
    Failed(#[source] io::Error),
    /// Not connected: register first.
    #[error("not connected to the guest daemon")]
    NotConnected,
}

fn classify(e: io::Error) -> ClientError {
    use io::ErrorKind::*;
    match e.kind() {
        NotFound | ConnectionRefused | BrokenPipe | ConnectionReset | WouldBlock => {
            ClientError::TryAgain(e)
        }
        _ => ClientError::Failed(e),
    }
}

/// An application's connection to the guest daemon.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    stream: Option<UnixStream>,
    decoder: Decoder,
    sequence: u32,
    registration: Option<Registration>,
    next_retry: Option<Instant>,
    /// A failed write dropped the socket; the next read reports the loss.
    lost: bool,
    scratch: Vec<u8>,
}

impl Client {
    /// A client for the daemon listening at `path` (not connected yet).
    pub fn new(path: impl AsRef<Path>) -> Client {
        Client {
            path: path.as_ref().to_owned(),
            stream: None,
            decoder: Decoder::new(),
            sequence: 0,
            registration: None,
            next_retry: None,
            lost: false,
            scratch: Vec::with_capacity(wire::FRAME_SIZE),
        }
    }

    /// Whether the socket is connected.
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// The socket to wait on for readability, while connected.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.stream.as_ref().map(|s| s.as_fd())
    }

    /// The raw socket, or -1 while not connected.
    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_ref().map_or(-1, |s| s.as_raw_fd())
    }

    /// Connects if needed and sends the registration; the answer arrives as
    /// `register_state`. Remembered for automatic re-registration.
    pub fn register(&mut self, registration: &Registration) -> Result<(), ClientError> {
        self.registration = Some(registration.clone());
        self.next_retry = Some(Instant::now() + RETRY);
        if self.stream.is_none() {
            let stream = UnixStream::connect(&self.path).map_err(classify)?;
            stream.set_nonblocking(true).map_err(ClientError::Failed)?;
            self.stream = Some(stream);
            self.decoder = Decoder::new();
            self.lost = false;
        }
        let r = registration;
        self.send(Body::Init(wire::Init {
            name: r.name.clone(),
            heartbeat_interval_ms: r.heartbeat_interval_ms,
            vote_secs: r.vote_secs,
            shutdown_notice_secs: r.shutdown_notice_secs,
            suspend_notice_secs: r.suspend_notice_secs,
            resume_notice_secs: r.resume_notice_secs,
            corrective_action: r.corrective_action.wire(),
        }))
    }

    /// Sends the deregistration (`FINAL`) and stops re-registering. The socket stays open.
    pub fn deregister(&mut self, log_msg: &str) -> Result<(), ClientError> {
        self.registration = None;
        self.next_retry = None;
        self.send(Body::Final {
            log_msg: log_msg.to_owned(),
        })
    }

    /// Closes the socket and forgets the registration.
    pub fn close(&mut self) {
        self.stream = None;
        self.registration = None;
        self.next_retry = None;
    }

    /// Answers action `invocation_id`.
    pub fn send_action_response(
        &mut self,
        invocation_id: u32,
        event: Event,
        notify: Notify,
        vote: Vote,
        log_msg: &str,
    ) -> Result<(), ClientError> {
        self.send(Body::ActionResponse(wire::ActionResponse {
            invocation_id,
            event_type: event.wire(),
            notification_type: notify.wire(),
            vote_result: vote.wire(),
            log_msg: log_msg.to_owned(),
        }))
    }

    /// Answers challenge `challenge` with `report`.
    pub fn respond_health(
        &mut self,
        challenge: u32,
        report: &HealthReport,
    ) -> Result<(), ClientError> {
        self.send(Body::ChallengeResponse(wire::ChallengeResponse {
            heartbeat_response: challenge,
            health: u32::from(report.healthy),
            corrective_action: report.corrective_action.wire(),
            log_msg: report.log_msg.clone(),
        }))
    }

    fn send(&mut self, body: Body) -> Result<(), ClientError> {
        let stream = self.stream.as_mut().ok_or(ClientError::NotConnected)?;
        self.sequence = self.sequence.wrapping_add(1);
        self.scratch.clear();
        let frame = Frame {
            sequence: self.sequence,
            body,
        };
        wire::encode(&frame, &mut self.scratch);
        // A frame is far smaller than a socket buffer; one that does not fit at once means
        // the daemon is not reading: give up the connection rather than block.
        let error = match stream.write(&self.scratch) {
            Ok(n) if n == self.scratch.len() => return Ok(()),
            Ok(_) => ClientError::TryAgain(io::ErrorKind::WriteZero.into()),
            Err(e) => classify(e),
        };
        self.stream = None;
        self.lost = true;
        self.next_retry = self.registration.as_ref().map(|_| Instant::now());
        Err(error)
    }

    /// Reads what is available without blocking and returns what arrived. End of stream or a
    /// read error closes the socket and ends the list with `RegisterState(false)`; so does the
    /// first call after a failed write closed it.
    pub fn read_events(&mut self) -> Vec<ClientEvent> {
        let mut events = Vec::new();
        if std::mem::take(&mut self.lost) {
            events.push(ClientEvent::RegisterState(false));
        }
        let Some(stream) = self.stream.as_mut() else {
            return events;
        };
        let mut buf = [0u8; 4 * wire::FRAME_SIZE];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break self.lost(&mut events),
                Ok(n) => self.decoder.feed(&buf[..n], |frame| {
                    if let Ok(frame) = frame {
                        events.extend(event_of(frame.body));
                    }
                }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break self.lost(&mut events),
            }
        }
        events
    }

    fn lost(&mut self, events: &mut Vec<ClientEvent>) {
        self.stream = None;
        self.next_retry = self.registration.as_ref().map(|_| Instant::now());
        events.push(ClientEvent::RegisterState(false));
    }

    /// Reads what is available and hands it to `handler`, answering challenges.
    pub fn dispatch(&mut self, handler: &mut impl Handler) {
        for event in self.read_events() {
            match event {
                ClientEvent::RegisterState(state) => handler.register_state(state),
                ClientEvent::Challenge(challenge) => {
                    let report = handler.health_check();
                    // A failure here shows up as end of stream at the next read.
                    let _ = self.respond_health(challenge, &report);
                }
                ClientEvent::ActionNotify {
                    invocation_id,
                    event,
                    notify,
                } => handler.action_notify(invocation_id, event, notify),
            }
        }
    }

    /// Registers again when disconnected with a registration to restore and [`RETRY`] has
    /// passed since the last try. Returns whether a registration was sent.
    pub fn tick(&mut self) -> bool {
        let due = self.next_retry.is_some_and(|at| Instant::now() >= at);
        if self.stream.is_some() || !due {
            return false;
        }
        match self.registration.clone() {
            Some(registration) => self.register(&registration).is_ok(),
            None => false,
        }
    }

    /// Waits up to `timeout` for the daemon, dispatches, and re-registers when due.
    pub fn run_once(&mut self, handler: &mut impl Handler, timeout: Duration) {
        if self.lost {
            self.dispatch(handler);
        }
        self.tick();
        let Some(fd) = self.fd() else {
            std::thread::sleep(timeout.min(RETRY));
            return;
        };
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec::try_from(timeout).ok();
        if let Ok(n) = rustix::event::poll(&mut fds, timeout.as_ref()) {
            if n > 0 {
                self.dispatch(handler);
            }
        }
    }
}

fn event_of(body: Body) -> Option<ClientEvent> {
    match body {
        Body::InitAck { accepted } => Some(ClientEvent::RegisterState(accepted == 1)),
        Body::Challenge {
            heartbeat_challenge,
        } => Some(ClientEvent::Challenge(heartbeat_challenge)),
        Body::ActionNotify(n) => Some(ClientEvent::ActionNotify {
            invocation_id: n.invocation_id,
            event: Event::from_wire(n.event_type),
            notify: Notify::from_wire(n.notification_type),
        }),
        _ => None,
    }
}
