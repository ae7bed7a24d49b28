//! The heartbeat channel as a stream of [`LinkEvent`]s: up, down, frames received.
//!
//! Both kinds of channel are driven the same way, as a non-blocking file descriptor watched by
//! tokio's `AsyncFd`. They differ in how a missing host shows and how it comes back:
//!
//! * A virtio-serial port stays open. With no host on the other side `poll` reports `POLLHUP`
//!   for ever and reads return end of file, so on hangup the descriptor is taken out of the
//!   event loop and looked at with a zero-timeout `poll` on a timer ([`DEVICE_RECHECK`],
//!   doubling to [`RECHECK_CAP`]) until the hangup clears. The loop never spins on `POLLHUP`.
//! * A UNIX socket is closed on end of file or error and connected again on a timer
//!   ([`SOCKET_RETRY`], doubling to [`RECHECK_CAP`]).
//!
//! A link that goes down again within [`STABLE_AFTER`] of coming up keeps its longer back-off.
//! Output is queued in a buffer of at most [`MAX_PENDING`] bytes and written as the channel
//! takes it; a full buffer, or a channel that takes nothing for [`WRITE_STALL`], counts as a
//! channel that is down. Writes never block the daemon.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use tether_proto::{DecodeError, Decoder, Message};
use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, Ready};
use tokio::time::{sleep_until, Instant};

use crate::endpoint::Endpoint;
use crate::GuestError;

/// Largest amount of output queued for the channel.
pub const MAX_PENDING: usize = 8 * 1024;
/// How long queued output may wait for the channel to take any of it.
pub const WRITE_STALL: Duration = Duration::from_secs(5);
/// First wait before looking at a hung-up virtio port again.
pub const DEVICE_RECHECK: Duration = Duration::from_millis(250);
/// First wait before connecting to a socket again.
pub const SOCKET_RETRY: Duration = Duration::from_millis(100);
/// Longest wait between two looks at a channel that is down.
pub const RECHECK_CAP: Duration = Duration::from_secs(2);
/// A link up for this long resets its back-off when it goes down.
pub const STABLE_AFTER: Duration = Duration::from_secs(2);

/// What happened on the channel.
#[derive(Debug)]
pub enum LinkEvent {
    /// A host is there (again).
    Up,
    /// The host went away or the channel failed; it will be looked at again.
    Down(DownReason),
    /// Frames decoded from one read, in order.
    Frames(Vec<Result<Message, DecodeError>>),
}

/// Why the channel went down.
#[derive(Debug, thiserror::Error)]
pub enum DownReason {
    /// The host closed the channel.
    #[error("Host closed the channel")]
    Closed,
    /// Reading failed.
    #[error("Read failed")]
    Read(#[source] io::Error),
    /// Writing failed.
    #[error("Write failed")]
    Write(#[source] io::Error),
    /// The channel took no output for [`WRITE_STALL`].
    #[error("Channel took no output for {WRITE_STALL:?}")]
    Stalled,
    /// More than [`MAX_PENDING`] bytes were waiting to be written.
    #[error("More than {MAX_PENDING} bytes of output waiting")]
    Overflow,
}

/// One heartbeat channel and its reconnection.
#[derive(Debug)]
pub struct Link {
    endpoint: Endpoint,
    watched: Option<AsyncFd<OwnedFd>>,
    parked: Option<OwnedFd>,
    retry_at: Instant,
    backoff: Duration,
    up_since: Instant,
    out: Vec<u8>,
    stalled_since: Option<Instant>,
    failed: Option<DownReason>,
    decoder: Decoder,
}

impl Link {
    /// Opens the channel; the flag says whether a host is there now.
    pub async fn open(endpoint: Endpoint) -> Result<(Link, bool), GuestError> {
        let now = Instant::now();
        let mut link = Link {
            backoff: first_wait(&endpoint),
            endpoint,
            watched: None,
            parked: None,
            retry_at: now,
            up_since: now,
            out: Vec::new(),
            stalled_since: None,
            failed: None,
            decoder: Decoder::new(),
        };
        match &link.endpoint {
            Endpoint::Device(path) => link.parked = Some(open_device(path)?),
            Endpoint::Socket(path) => match connect(path).await {
                Ok(fd) => link.parked = Some(fd),
                Err(e) if !retriable(&e) => {
                    let path = path.clone();
                    return Err(GuestError::Open { path, source: e });
                }
                Err(_) => {}
            },
        }
        let up = link.parked.is_some() && link.try_up().await?;
        if !up {
            link.retry_at = now + link.backoff;
        }
        Ok((link, up))
    }

    /// Whether a host is there.
    pub fn is_up(&self) -> bool {
        self.watched.is_some()
    }

    /// Queues `bytes` for the host and writes what the channel takes now. Returns false when
    /// the channel is down (the bytes are dropped).
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        if self.watched.is_none() || self.failed.is_some() {
            return false;
        }
        if self.out.len() + bytes.len() > MAX_PENDING {
            self.failed = Some(DownReason::Overflow);
            return false;
        }
        self.out.extend_from_slice(bytes);
        if let Some(fd) = &self.watched {
            if let Err(e) = write_some(fd.get_ref(), &mut self.out, &mut self.stalled_since) {
                self.failed = Some(DownReason::Write(e));
            }
        }
        true
    }

    /// Waits for the next event. Cancel-safe: nothing is lost when the future is dropped.
    pub async fn event(&mut self) -> Result<LinkEvent, GuestError> {
        loop {
            if let Some(reason) = self.failed.take() {
                self.go_down();
                return Ok(LinkEvent::Down(reason));
            }
            if self.watched.is_none() {
                sleep_until(self.retry_at).await;
                if self.try_up().await? {
                    return Ok(LinkEvent::Up);
                }
                self.backoff = (self.backoff * 2).min(RECHECK_CAP);
                self.retry_at = Instant::now() + self.backoff;
                continue;
            }
            // Readiness does not count against tokio's budget; this does, so that even a
            // descriptor that stays ready can never keep the task from yielding.
            tokio::task::consume_budget().await;
            if let Some(frames) = self.io_step().await {
                return Ok(LinkEvent::Frames(frames));
            }
        }
    }

    /// Writes queued output for at most `limit` (used for the last message before exit).
    pub async fn flush(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.out.is_empty() && self.failed.is_none() {
            let Some(fd) = &self.watched else { return };
            let mut guard = tokio::select! {
                guard = fd.writable() => match guard {
                    Ok(guard) => guard,
                    Err(_) => return,
                },
                () = sleep_until(deadline) => return,
            };
            match write_some(fd.get_ref(), &mut self.out, &mut self.stalled_since) {
                Ok(()) if !self.out.is_empty() => guard.clear_ready(),
                Ok(()) => {}
                Err(_) => return,
            }
        }
    }

    /// Waits for the channel once; returns decoded frames if a read brought any.
    async fn io_step(&mut self) -> Option<Vec<Result<Message, DecodeError>>> {
        let fd = self.watched.as_ref()?;
        let interest = if self.out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        let stall = self.stalled_since.map(|since| since + WRITE_STALL);
        let mut guard = tokio::select! {
            guard = fd.ready(interest) => match guard {
                Ok(guard) => guard,
                Err(e) => {
                    self.failed = Some(DownReason::Read(e));
                    return None;
                }
            },
            () = sleep_until_some(stall) => {
                self.failed = Some(DownReason::Stalled);
                return None;
            }
        };
        let ready = guard.ready();
        if ready.is_writable() || ready.is_write_closed() {
            match write_some(fd.get_ref(), &mut self.out, &mut self.stalled_since) {
                Ok(()) if !self.out.is_empty() => guard.clear_ready_matching(Ready::WRITABLE),
                Ok(()) => {}
                Err(e) => self.failed = Some(DownReason::Write(e)),
            }
        }
        if !(ready.is_readable() || ready.is_read_closed()) || self.failed.is_some() {
            return None;
        }
        let mut buf = [0u8; 1024];
        match rustix::io::read(fd.get_ref(), &mut buf[..]) {
            Ok(0) => self.failed = Some(DownReason::Closed),
            Ok(n) => {
                let mut frames = Vec::new();
                self.decoder.feed(&buf[..n], |frame| frames.push(frame));
                return Some(frames);
            }
            // A hangup that reads as "nothing yet" is still a hangup: waiting on it would spin.
            Err(Errno::AGAIN) if ready.is_read_closed() => self.failed = Some(DownReason::Closed),
            Err(Errno::AGAIN) => guard.clear_ready_matching(Ready::READABLE),
            Err(Errno::INTR) => {}
            Err(e) => self.failed = Some(DownReason::Read(e.into())),
        }
        None
    }

    /// Brings a parked descriptor (or a new connection) into the event loop if a host is
    /// there.
    async fn try_up(&mut self) -> Result<bool, GuestError> {
        let fd = match (&self.endpoint, self.parked.take()) {
            (Endpoint::Device(_), Some(fd)) => {
                if hung_up(&fd) {
                    self.parked = Some(fd);
                    return Ok(false);
                }
                fd
            }
            (Endpoint::Socket(_), Some(fd)) => fd,
            (Endpoint::Socket(path), None) => match connect(path).await {
                Ok(fd) => fd,
                Err(_) => return Ok(false),
            },
            (Endpoint::Device(path), None) => open_device(path)?,
        };
        let watched = crate::sys::watch(fd).map_err(GuestError::Watch)?;
        self.watched = Some(watched);
        self.up_since = Instant::now();
        Ok(true)
    }

    fn go_down(&mut self) {
        let now = Instant::now();
        self.backoff = if now >= self.up_since + STABLE_AFTER {
            first_wait(&self.endpoint)
        } else {
            (self.backoff * 2).min(RECHECK_CAP)
        };
        self.retry_at = now + self.backoff;
        if let (Some(fd), Endpoint::Device(_)) = (self.watched.take(), &self.endpoint) {
            self.parked = Some(fd.into_inner());
        }
        self.out.clear();
        self.stalled_since = None;
        self.decoder.reset();
    }
}

fn first_wait(endpoint: &Endpoint) -> Duration {
    match endpoint {
        Endpoint::Device(_) => DEVICE_RECHECK,
        Endpoint::Socket(_) => SOCKET_RETRY,
    }
}

fn open_device(path: &Path) -> Result<OwnedFd, GuestError> {
    let flags = OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    rustix::fs::open(path, flags, Mode::empty()).map_err(|e| GuestError::Open {
        path: path.to_owned(),
        source: e.into(),
    })
}

async fn connect(path: &Path) -> io::Result<OwnedFd> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    Ok(stream.into_std()?.into())
}

/// Errors after which connecting again later may work.
fn retriable(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | NotFound | WouldBlock | ConnectionReset
    )
}

/// Whether the port's other side is gone (no host, or an error on the descriptor).
fn hung_up(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::IN | PollFlags::OUT)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&zero)) {
        Ok(_) => fds[0]
            .revents()
            .intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL),
        Err(_) => true,
    }
}

/// Writes as much of `out` as the descriptor takes now; keeps track of the stall clock.
fn write_some(
    fd: &OwnedFd,
    out: &mut Vec<u8>,
    stalled_since: &mut Option<Instant>,
) -> io::Result<()> {
    while !out.is_empty() {
        match rustix::io::write(fd, out) {
            Ok(0) | Err(Errno::AGAIN) => break,
            Ok(n) => {
                out.drain(..n);
                *stalled_since = None;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !out.is_empty() && stalled_since.is_none() {
        *stalled_since = Some(Instant::now());
    }
    Ok(())
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
