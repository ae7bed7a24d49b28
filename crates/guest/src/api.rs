//! The local application API socket (I/O around [`crate::apps`]).
//!
//! [`ApiServer::bind`] removes a stale socket file and listens. An accept task hands each new
//! connection to its own task, which reads at most [`READ_CHUNK`] bytes at a time through a
//! frame [`Decoder`] and writes the frames queued for it (at most [`OUTPUT_QUEUE`]; a client
//! that does not read is cut off when its queue is full). Everything they see reaches the
//! daemon's task through one bounded channel; there [`ApiServer::handle`] feeds the
//! [`Supervisor`], carries out its actions and turns what the heartbeat machine must know (the
//! applications' health, who was asked about an action and what they answered) into its
//! [`Event`]s. Dropping the server stops every task and removes the socket file.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use guest_heartbeat_api::wire::{self, Body, Decoder, Frame, FrameError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::apps::{ApiAction, ApiEvent, ConnId, CutOff, Supervisor};
use crate::fsm::Event;
use crate::ratelimit::RateLimit;
use crate::vote::Answer;

/// Bytes read from a connection at a time.
pub const READ_CHUNK: usize = 4 * wire::FRAME_SIZE;
/// Frames waiting to be written to one connection.
pub const OUTPUT_QUEUE: usize = 16;
/// Events waiting for the daemon's task.
const INPUT_QUEUE: usize = 256;

/// What a connection task reports.
enum Input {
    Connected(ConnId, mpsc::Sender<Body>, JoinHandle<()>),
    Frame(ConnId, Result<Frame, FrameError>),
    Closed(ConnId),
}

struct Handle {
    output: mpsc::Sender<Body>,
    task: JoinHandle<()>,
}

/// The listening API socket and its connections.
pub struct ApiServer {
    path: PathBuf,
    supervisor: Supervisor,
    input: mpsc::Receiver<Input>,
    accept: JoinHandle<()>,
    conns: HashMap<ConnId, Handle>,
    logs: RateLimit,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("path", &self.path)
            .finish()
    }
}

impl ApiServer {
    /// Listens on `path` (a stale socket file there is removed first).
    pub fn bind(path: &Path) -> std::io::Result<ApiServer> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        let (tx, input) = mpsc::channel(INPUT_QUEUE);
        Ok(ApiServer {
            path: path.to_owned(),
            supervisor: Supervisor::new(fastrand::u64(..)),
            input,
            accept: tokio::spawn(accept_loop(listener, tx)),
            conns: HashMap::new(),
            logs: RateLimit::new(30, std::time::Duration::from_secs(60)),
        })
    }

    /// The next thing to handle: input from a connection, or a supervision deadline.
    pub async fn event(&mut self) -> ApiEvent {
        let deadline = self.supervisor.next_deadline();
        tokio::select! {
            input = self.input.recv() => match input {
                Some(Input::Connected(id, output, task)) => {
                    self.conns.insert(id, Handle { output, task });
                    ApiEvent::Connected(id)
                }
                Some(Input::Frame(id, Ok(frame))) => ApiEvent::Frame(id, frame.body),
                Some(Input::Frame(id, Err(e))) => ApiEvent::Dropped(id, e),
                Some(Input::Closed(id)) => ApiEvent::Closed(id),
                // The accept task holds a sender for as long as the server lives.
                None => std::future::pending().await,
            },
            () = crate::daemon::sleep_until_some(deadline) => ApiEvent::Tick,
        }
    }

    /// Handles `event`; returns what the heartbeat machine must hear of it, in order (the
    /// applications' health last, when it changed).
    pub fn handle(&mut self, event: ApiEvent) -> Vec<Event> {
        let now = Instant::now();
        let mut changed = false;
        let mut events = Vec::new();
        let mut actions: VecDeque<ApiAction> = self.supervisor.handle(event, now).into();
        while let Some(action) = actions.pop_front() {
            match action {
                ApiAction::Asked { run, apps } => events.push(Event::AppsAsked { run, apps }),
                ApiAction::Voted {
                    run,
                    conn,
                    name,
                    answer,
                } => {
                    self.log_vote(&name, &answer, now);
                    events.push(Event::AppVoted { run, conn, answer });
                }
                ApiAction::Send(id, body) => {
                    if !self.send(id, body) {
                        // The client does not read (or is gone): cut it off like any other.
                        self.disconnect(id, CutOff::Stalled, now);
                        actions.extend(self.supervisor.handle(ApiEvent::Closed(id), now));
                    }
                }
                ApiAction::Disconnect(id, why) => self.disconnect(id, why, now),
                ApiAction::HealthChanged => changed = true,
                other => self.log(other, now),
            }
        }
        if changed {
            events.push(Event::AppsChanged(self.supervisor.health()));
        }
        events
    }

    /// Queues `body` for connection `id`; false when its queue is full.
    fn send(&mut self, id: ConnId, body: Body) -> bool {
        match self.conns.get(&id) {
            Some(conn) => conn.output.try_send(body).is_ok(),
            None => true,
        }
    }

    fn disconnect(&mut self, id: ConnId, why: CutOff, now: Instant) {
        if let Some(conn) = self.conns.remove(&id) {
            conn.task.abort();
        }
        if let Some(left_out) = self.logs.check(now) {
            tracing::warn!(connection = id, reason = ?why, left_out, "application connection cut off");
        }
    }

    fn log(&mut self, action: ApiAction, now: Instant) {
        let Some(left_out) = self.logs.check(now) else {
            return;
        };
        match action {
            ApiAction::Registered(name, ms) => {
                tracing::info!(app = %name, interval_ms = ms, left_out, "application registered");
            }
            ApiAction::Refused(name, ms) => {
                tracing::warn!(app = %name, interval_ms = ms, left_out, "application registration refused");
            }
            ApiAction::Left(name, why) => {
                tracing::info!(app = %name, reason = %why, left_out, "application deregistered");
            }
            ApiAction::TimedOut(_, text) => tracing::warn!(left_out, "{text}"),
            ApiAction::Recovered(name) => {
                tracing::info!(app = %name, left_out, "application answers again");
            }
            ApiAction::StrayAnswer(name, id) => {
                tracing::info!(app = %name, invocation_id = id, left_out, "ignoring an action answer that matches no question");
            }
            _ => {}
        }
    }

    fn log_vote(&mut self, name: &str, answer: &Answer, now: Instant) {
        let Some(left_out) = self.logs.check(now) else {
            return;
        };
        match answer {
            Answer::Accept(note) => {
                tracing::info!(app = %name, reason = %note, left_out, "application accepts the action");
            }
            Answer::Reject(reason) => {
                tracing::info!(app = %name, %reason, left_out, "application rejects the action");
            }
            Answer::Silent(why) => {
                tracing::warn!(app = %name, reason = %why, left_out, "application gave no answer to the action; counted as accept");
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.accept.abort();
        for conn in self.conns.values() {
            conn.task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, tx: mpsc::Sender<Input>) {
    let mut next_id: ConnId = 0;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        next_id += 1;
        let (output, queue) = mpsc::channel(OUTPUT_QUEUE);
        let task = tokio::spawn(connection(next_id, stream, queue, tx.clone()));
        if tx
            .send(Input::Connected(next_id, output, task))
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn connection(
    id: ConnId,
    stream: UnixStream,
    mut queue: mpsc::Receiver<Body>,
    tx: mpsc::Sender<Input>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut out = Vec::with_capacity(wire::FRAME_SIZE);
    let mut sequence = 0u32;
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut frames = Vec::new();
                decoder.feed(&buf[..n], |f| frames.push(f));
                for frame in frames {
                    if tx.send(Input::Frame(id, frame)).await.is_err() {
                        return;
                    }
                }
            }
            Some(body) = queue.recv() => {
                sequence = sequence.wrapping_add(1);
                out.clear();
                wire::encode(&Frame { sequence, body }, &mut out);
                if writer.write_all(&out).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = tx.send(Input::Closed(id)).await;
}
