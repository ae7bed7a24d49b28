//! The connected phase of a supervisor: the event loop around one channel connection.
//!
//! Each turn of the loop waits for exactly one of: a registry command, the end of a running
//! recovery, the heartbeat timer, the not-heartbeating timer, the socket becoming readable
//! (only while the rate limits allow reading), the end of a throttle pause, or the socket
//! becoming writable (only while bytes wait). Nothing wakes the task otherwise.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tether_proto::{Message, Nack};
use tokio::net::UnixStream;
use tokio::time::{Instant, Sleep};

use super::link::{Link, ReadOutcome};
use super::{operation, Command, Supervisor};
use crate::fsm::{Input, Output};
use crate::journal::{Details, EventKind};
use crate::lifecycle::RunInput;

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The supervisor must return.
    Stop,
    /// Connect again at once (the socket was re-created).
    ReconnectNow,
    /// Connect again after the back-off.
    Retry,
}

/// A reason to close the channel, with what to do next.
type Close = (End, &'static str);

/// A timer that is re-armed only when its deadline changes. Its `Sleep` is allocated when
/// the timer is armed and freed when it is disarmed: every guest has up to five timers, and
/// most of them are idle most of the time.
pub(super) struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timer {
    pub(super) fn new() -> Timer {
        Timer { sleep: None }
    }

    /// The deadline it is armed for, if any.
    pub(super) fn armed(&self) -> Option<Instant> {
        self.sleep.as_ref().map(|sleep| sleep.deadline())
    }

    pub(super) fn set(&mut self, deadline: Option<Instant>) {
        match (deadline, self.sleep.as_mut()) {
            (None, _) => self.sleep = None,
            (Some(at), Some(sleep)) if sleep.deadline() != at => sleep.as_mut().reset(at),
            (Some(_), Some(_)) => {}
            (Some(at), None) => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Resolves once the deadline has passed; never while disarmed.
    pub(super) fn expired(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        })
    }
}

impl Supervisor {
    /// Runs one connection until it ends.
    pub(super) async fn session(&mut self, stream: UnixStream) -> End {
        let now = Instant::now();
        let mut link = Link::new(
            stream,
            self.settings.bytes_per_sec,
            self.settings.msgs_per_sec,
            now,
        );
        self.on_connected();
        let (mut beat, mut start, mut throttle) = (Timer::new(), Timer::new(), Timer::new());
        let (mut op_timer, mut episode_timer) = (Timer::new(), Timer::new());
        let (end, reason) = loop {
            beat.set(self.fsm.deadline());
            start.set(self.start_deadline(start.armed()));
            op_timer.set(self.operation_deadline());
            episode_timer.set(self.episode_deadline());
            self.refresh_status();
            let closed = tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Operate(op)) => {
                        self.begin_operation(*op, Some(&mut link), Instant::now());
                        self.flush(&mut link)
                    }
                    Some(Command::Recover(order)) => {
                        self.on_order(*order, Instant::now());
                        None
                    }
                    Some(Command::Reconnect) => Some((End::ReconnectNow, "channel socket re-created")),
                    Some(Command::Stop) | None => Some((End::Stop, "supervision stopped")),
                },
                done = self.recovery.finished() => {
                    self.on_recovery_done(done);
                    None
                }
                result = operation::acted(&mut self.operation), if self.operation_acting() => {
                    self.operation_input(RunInput::Acted(result), Some(&mut link), Instant::now());
                    self.flush(&mut link)
                }
                () = op_timer.expired(), if op_timer.armed().is_some() => {
                    self.operation_input(RunInput::Timer, Some(&mut link), Instant::now());
                    self.flush(&mut link)
                }
                () = episode_timer.expired(), if episode_timer.armed().is_some() => {
                    self.check_episode(Instant::now());
                    None
                }
                () = beat.expired(), if beat.armed().is_some() => {
                    self.step(&mut link, Input::Timer, Instant::now())
                }
                () = start.expired(), if start.armed().is_some() => {
                    Some((End::Retry, "connected but not heartbeating in time"))
                }
                ready = link.readable(), if throttle.armed().is_none() => match ready {
                    Ok(()) => self.read(&mut link, &mut throttle),
                    Err(_) => Some((End::Retry, "channel read failed")),
                },
                () = throttle.expired(), if throttle.armed().is_some() => {
                    throttle.set(None);
                    None
                }
                ready = link.writable(), if link.has_pending() => match ready {
                    Ok(()) => self.flush(&mut link),
                    Err(_) => Some((End::Retry, "channel write failed")),
                },
            };
            if let Some(close) = closed {
                break close;
            }
        };
        self.on_disconnected(reason);
        end
    }

    /// The not-heartbeating deadline: kept while the guest does not answer, cleared once it
    /// does, started afresh when it stops.
    fn start_deadline(&self, armed: Option<Instant>) -> Option<Instant> {
        if self.fsm.is_answering() {
            None
        } else {
            Some(armed.unwrap_or_else(|| Instant::now() + self.settings.start_timeout))
        }
    }

    /// Reads what is there and steps the state machine with every frame.
    fn read(&mut self, link: &mut Link, throttle: &mut Timer) -> Option<Close> {
        let now = Instant::now();
        let mut outputs = std::mem::take(&mut self.outputs);
        let fsm = &mut self.fsm;
        let outcome = link.read(now, |frame| {
            fsm.step(Input::Frame(frame), now, &mut outputs)
        });
        self.outputs = outputs;
        let close = self.carry_out(link, now);
        match outcome {
            _ if close.is_some() => close,
            Ok(ReadOutcome::Progress | ReadOutcome::Drained) => self.flush(link),
            Ok(ReadOutcome::Throttled(until)) => {
                throttle.set(Some(until));
                self.flush(link)
            }
            Ok(ReadOutcome::Closed) => Some((End::Retry, "guest side closed the channel")),
            Err(_) => Some((End::Retry, "channel read failed")),
        }
    }

    /// Steps the state machine with one input and carries out the result.
    fn step(&mut self, link: &mut Link, input: Input, now: Instant) -> Option<Close> {
        let mut outputs = std::mem::take(&mut self.outputs);
        self.fsm.step(input, now, &mut outputs);
        self.outputs = outputs;
        self.carry_out(link, now).or_else(|| self.flush(link))
    }

    fn flush(&mut self, link: &mut Link) -> Option<Close> {
        link.flush()
            .err()
            .map(|_| (End::Retry, "guest side stopped reading the channel"))
    }

    /// Carries out every queued output; returns a reason to close the channel, if any.
    fn carry_out(&mut self, link: &mut Link, now: Instant) -> Option<Close> {
        let mut outputs = std::mem::take(&mut self.outputs);
        let mut close = None;
        for output in outputs.drain(..) {
            match output {
                Output::Send(message) => link.queue(&message),
                Output::Refused { nack } => {
                    if self.refused(link, nack, now) {
                        close = Some((End::Retry, "too many refused messages from the guest"));
                    }
                }
                Output::Recover { action, cause } => self.recover(action, cause, now),
                Output::ActionAnswered(answer) => {
                    self.operation_input(RunInput::Answer(answer), Some(link), now);
                }
                started @ Output::Started { .. } => {
                    self.report(started, now);
                    self.operation_input(RunInput::GuestBack, Some(link), now);
                }
                other => self.report(other, now),
            }
        }
        self.outputs = outputs;
        close
    }

    /// Answers a refused message with a rate-limited `nack`; true when the guest has sent
    /// too many refused messages and its channel must be closed.
    fn refused(&mut self, link: &mut Link, nack: String, now: Instant) -> bool {
        self.protocol_errors += 1;
        if self.throttles.nacks.try_take_one(now) {
            let invocation_id = self.fsm.invocation_id();
            link.queue(&Message::Nack(Nack {
                invocation_id,
                log_msg: nack.clone(),
            }));
        }
        if let Some(suppressed) = self.throttles.protocol_journal.allow(now) {
            let details = Details {
                reason: Some(nack.clone()),
                suppressed: (suppressed > 0).then_some(suppressed),
                ..Details::default()
            };
            self.journal(EventKind::ProtocolError, details);
        }
        if let Some(suppressed) = self.throttles.protocol_log.allow(now) {
            tracing::warn!(instance = %self.uuid, nack, suppressed, "Refused a message from the guest");
        }
        !self.bad_msgs.try_take_one(now)
    }

    fn on_connected(&mut self) {
        self.fsm.reset();
        self.connected = true;
        self.connects = self.connects.saturating_add(1);
        self.bad_msgs =
            crate::limits::TokenBucket::new(1, self.settings.max_bad_msgs, Instant::now());
        self.chatter(EventKind::ChannelConnected, Details::default());
        tracing::debug!(instance = %self.uuid, "Connected to the guest channel");
    }

    fn on_disconnected(&mut self, reason: &'static str) {
        self.fsm.reset();
        self.connected = false;
        let details = Details {
            reason: Some(reason.to_owned()),
            ..Details::default()
        };
        self.chatter(EventKind::ChannelDisconnected, details);
        tracing::debug!(instance = %self.uuid, reason, "Disconnected from the guest channel");
        self.refresh_status();
    }
}
