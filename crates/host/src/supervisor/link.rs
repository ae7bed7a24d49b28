//! One connection to a guest's channel socket: bounded, rate-limited reads and queued writes.
//!
//! Reads wait for readiness and then copy into a stack buffer, so an idle guest holds no read
//! buffer at all; only the decoder's bounded partial frame and a small write buffer live with
//! the connection. Every read is charged to two token buckets (bytes and messages per second):
//! when either is empty the supervisor stops reading this guest until it refills, which bounds
//! the CPU a flooding guest can cost and leaves the other guests untouched. Writes are encoded
//! into one buffer and written without blocking; a guest that stops reading until that buffer
//! passes [`MAX_PENDING`] is disconnected. The buffer is freed whenever it has been written out
//! (one small allocation per heartbeat, against 100–200 bytes held by each of thousands of
//! idle guests).

use std::future::Future;
use std::io;

use tether_proto::{encode_into, DecodeError, Decoder, Message, MAX_MSG_SIZE};
use tokio::net::UnixStream;
use tokio::time::Instant;

use crate::limits::TokenBucket;

/// Largest single read.
const READ_CHUNK: usize = 2 * MAX_MSG_SIZE;
/// Reads per readiness wake-up before the supervisor looks at its timers again.
const READS_PER_WAKE: usize = 4;
/// Unsent bytes tolerated before the guest is taken as not reading.
pub const MAX_PENDING: usize = 16 * 1024;
/// Room made in an empty write buffer: a challenge or an `init_ack` with its framing fits.
const QUEUE_RESERVE: usize = 128;

/// What a read attempt came to.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Bytes were read and fed to the decoder (more may be waiting).
    Progress,
    /// Nothing more to read now.
    Drained,
    /// A rate limit is exhausted: do not read again before this instant.
    Throttled(Instant),
    /// The guest side closed the connection.
    Closed,
}

/// The connection and its per-connection buffers and limits.
#[derive(Debug)]
pub struct Link {
    stream: UnixStream,
    decoder: Decoder,
    out: Vec<u8>,
    sequence: u32,
    bytes: TokenBucket,
    msgs: TokenBucket,
}

impl Link {
    /// Wraps a fresh connection with full buckets.
    pub fn new(stream: UnixStream, bytes_per_sec: u32, msgs_per_sec: u32, now: Instant) -> Link {
        Link {
            stream,
            decoder: Decoder::new(),
            out: Vec::new(),
            sequence: 0,
            bytes: TokenBucket::new(bytes_per_sec, bytes_per_sec, now),
            msgs: TokenBucket::new(msgs_per_sec, msgs_per_sec, now),
        }
    }

    /// Waits until the socket may be readable. Polls the stream's own readiness slot rather
    /// than awaiting `UnixStream::readable`, whose future carries a waiter of its own (about
    /// 150 bytes, held in every guest's task while it waits).
    pub fn readable(&self) -> impl Future<Output = io::Result<()>> + '_ {
        std::future::poll_fn(|cx| self.stream.poll_read_ready(cx))
    }

    /// Waits until the socket may be writable (as [`Link::readable`] does).
    pub fn writable(&self) -> impl Future<Output = io::Result<()>> + '_ {
        std::future::poll_fn(|cx| self.stream.poll_write_ready(cx))
    }

    /// Reads what the limits allow, handing every completed frame to `on_frame`.
    pub fn read(
        &mut self,
        now: Instant,
        mut on_frame: impl FnMut(Result<Message, DecodeError>),
    ) -> io::Result<ReadOutcome> {
        let mut buf = [0u8; READ_CHUNK];
        for _ in 0..READS_PER_WAKE {
            let allowed = self.bytes.available(now).min(READ_CHUNK as u64);
            if allowed == 0 || self.msgs.available(now) == 0 {
                let until = self.bytes.ready_at(now).max(self.msgs.ready_at(now));
                return Ok(ReadOutcome::Throttled(until));
            }
            // `allowed` is at most READ_CHUNK, so the cast cannot truncate.
            let n = match self.stream.try_read(&mut buf[..allowed as usize]) {
                Ok(0) => return Ok(ReadOutcome::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.bytes.take(n as u64, now);
            let mut frames = 0u64;
            self.decoder.feed(&buf[..n], |frame| {
                frames += 1;
                on_frame(frame);
            });
            self.msgs.take(frames, now);
        }
        Ok(ReadOutcome::Progress)
    }

    /// Encodes `message` into the write buffer.
    pub fn queue(&mut self, message: &Message) {
        if self.out.capacity() == 0 {
            self.out.reserve(QUEUE_RESERVE);
        }
        self.sequence = self.sequence.wrapping_add(1) & tether_proto::MAX_INT;
        encode_into(&mut self.out, self.sequence, message);
    }

    /// Whether bytes wait to be written.
    pub fn has_pending(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes what the socket takes now; fails when the guest has stopped reading.
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.try_write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.out.is_empty() {
            // An idle guest holds no write buffer: the next message allocates one again.
            self.out = Vec::new();
        } else if self.out.len() > MAX_PENDING {
            return Err(io::Error::other("the guest side stopped reading"));
        }
        Ok(())
    }
}
