//! QMP, QEMU's JSON monitor protocol: a client ([`QmpClient`]) and the backend built on it
//! ([`QmpBackend`]).
//!
//! QMP runs over a UNIX stream socket with one JSON object per line. On connect QEMU sends a
//! greeting (`{"QMP": {...}}`); the client must send `qmp_capabilities` before anything else.
//! Each command (`{"execute": ..., "arguments": ..., "id": ...}`) gets one reply, either
//! `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}`, with the `id` echoed.
//! Asynchronous events (`{"event": ..., "data": ..., "timestamp": ...}`) may arrive at any time,
//! also between a command and its reply; the client keeps them (a bounded number) for
//! [`QmpClient::next_event`]. Every step is bounded by the client's timeout, and every line by
//! [`MAX_LINE`], so a wedged or hostile monitor cannot hang or bloat the host agent.

mod backend;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

pub use backend::QmpBackend;

use crate::HypervisorError;

/// Time allowed for each step (connect, greeting, one command) unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest line accepted from the monitor, in bytes.
pub const MAX_LINE: usize = 256 * 1024;
/// Most events kept while nobody reads them; older ones are dropped first.
pub const MAX_QUEUED_EVENTS: usize = 256;

/// One connection to a QEMU monitor, past the capabilities handshake.
#[derive(Debug)]
pub struct QmpClient {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
    greeting: Value,
    next_id: u64,
    events: VecDeque<Value>,
    line: Vec<u8>,
}

/// A message read from the monitor.
enum Incoming {
    Event(Value),
    Reply(Map<String, Value>),
    Greeting(Value),
}

impl QmpClient {
    /// Connects to the monitor at `path` and completes the handshake, allowing
    /// [`DEFAULT_TIMEOUT`] for each step.
    pub async fn connect(path: impl AsRef<Path>) -> Result<QmpClient, HypervisorError> {
        QmpClient::connect_with_timeout(path, DEFAULT_TIMEOUT).await
    }

    /// Like [`QmpClient::connect`], allowing `timeout` for each step (and later each command).
    pub async fn connect_with_timeout(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<QmpClient, HypervisorError> {
        let path = path.as_ref().to_path_buf();
        let stream = tokio::time::timeout(timeout, UnixStream::connect(&path))
            .await
            .map_err(|_| timed_out("connect"))?
            .map_err(|source| io_error(&path, source))?;
        let (read, writer) = stream.into_split();
        let mut client = QmpClient {
            path,
            reader: BufReader::new(read),
            writer,
            timeout,
            greeting: Value::Null,
            next_id: 1,
            events: VecDeque::new(),
            line: Vec::new(),
        };
        client.greeting = client.read_greeting().await?;
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// The greeting QEMU sent (`{"QMP": {"version": ..., "capabilities": ...}}`).
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// Runs `command` and returns the value of its `return`.
    ///
    /// An `error` reply is [`HypervisorError::Refused`] (`class: desc`); no reply within the
    /// timeout is [`HypervisorError::Timeout`]. Events that arrive meanwhile are queued.
    /// After a timeout or an I/O error the connection's state is unknown: drop the client and
    /// connect again.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, HypervisorError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut bytes = request.to_string().into_bytes();
        bytes.push(b'\n');
        let limit = self.timeout;
        tokio::time::timeout(limit, async {
            self.writer
                .write_all(&bytes)
                .await
                .map_err(|e| io_error(&self.path, e))?;
            self.await_reply(command, id).await
        })
        .await
        .map_err(|_| timed_out(command))?
    }

    /// The next event: a queued one if any, else the next one to arrive (no time limit; wrap
    /// it in a timeout or a `select!` as needed — it is cancel-safe).
    pub async fn next_event(&mut self) -> Result<Value, HypervisorError> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            match self.read_message().await? {
                Incoming::Event(event) => return Ok(event),
                Incoming::Reply(_) | Incoming::Greeting(_) => {}
            }
        }
    }

    /// Takes the events queued so far, oldest first.
    pub fn take_events(&mut self) -> Vec<Value> {
        self.events.drain(..).collect()
    }

    async fn read_greeting(&mut self) -> Result<Value, HypervisorError> {
        let limit = self.timeout;
        tokio::time::timeout(limit, async {
            loop {
                match self.read_message().await? {
                    Incoming::Greeting(greeting) => return Ok(greeting),
                    Incoming::Event(event) => self.queue_event(event),
                    Incoming::Reply(_) => {
                        return Err(HypervisorError::Protocol(
                            "QMP reply before the greeting".to_owned(),
                        ))
                    }
                }
            }
        })
        .await
        .map_err(|_| timed_out("greeting"))?
    }

    async fn await_reply(&mut self, command: &str, id: u64) -> Result<Value, HypervisorError> {
        loop {
            let mut reply = match self.read_message().await? {
                Incoming::Reply(reply) => reply,
                Incoming::Event(event) => {
                    self.queue_event(event);
                    continue;
                }
                Incoming::Greeting(_) => continue,
            };
            match reply.get("id") {
                Some(got) if got.as_u64() != Some(id) => continue, // a late reply to an older command
                _ => {}
            }
            if let Some(value) = reply.remove("return") {
                return Ok(value);
            }
            return Err(refused(command, reply.get("error")));
        }
    }

    fn queue_event(&mut self, event: Value) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    async fn read_message(&mut self) -> Result<Incoming, HypervisorError> {
        loop {
            let line = self.read_line().await?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let value: Value = serde_json::from_slice(&line).map_err(|e| {
                HypervisorError::Protocol(format!("QMP sent a line that is not JSON: {e}"))
            })?;
            return classify(value);
        }
    }

    /// Reads one line (without its newline); cancel-safe, as the partial line stays in `self`.
    async fn read_line(&mut self) -> Result<Vec<u8>, HypervisorError> {
        loop {
            let buf = self
                .reader
                .fill_buf()
                .await
                .map_err(|e| io_error(&self.path, e))?;
            if buf.is_empty() {
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "QMP connection closed");
                return Err(io_error(&self.path, eof));
            }
            let (take, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(pos) => (pos, true),
                None => (buf.len(), false),
            };
            if self.line.len() + take > MAX_LINE {
                return Err(HypervisorError::Protocol(format!(
                    "QMP line longer than {MAX_LINE} bytes"
                )));
            }
            self.line.extend_from_slice(&buf[..take]);
            self.reader.consume(if done { take + 1 } else { take });
            if done {
                return Ok(std::mem::take(&mut self.line));
            }
        }
    }
}

fn classify(value: Value) -> Result<Incoming, HypervisorError> {
    let Value::Object(map) = value else {
        return Err(HypervisorError::Protocol(
            "QMP sent something other than a JSON object".to_owned(),
        ));
    };
    if map.contains_key("event") {
        Ok(Incoming::Event(Value::Object(map)))
    } else if map.contains_key("return") || map.contains_key("error") {
        Ok(Incoming::Reply(map))
    } else if map.contains_key("QMP") {
        Ok(Incoming::Greeting(Value::Object(map)))
    } else {
        Err(HypervisorError::Protocol(
            "QMP sent an object that is neither a reply nor an event".to_owned(),
        ))
    }
}

fn refused(command: &str, error: Option<&Value>) -> HypervisorError {
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (class, desc) = (text("class"), text("desc"));
    let message = match (class.is_empty(), desc.is_empty()) {
        (true, true) => "an error without a description".to_owned(),
        (false, true) => class,
        (true, false) => desc,
        (false, false) => format!("{class}: {desc}"),
    };
    HypervisorError::Refused {
        command: command.to_owned(),
        message,
    }
}

fn io_error(path: &Path, source: io::Error) -> HypervisorError {
    HypervisorError::Io {
        target: path.display().to_string(),
        source,
    }
}

fn timed_out(command: &str) -> HypervisorError {
    HypervisorError::Timeout {
        command: command.to_owned(),
    }
}

/// Whether `error` means the monitor went away (EOF, reset), as it does right after `quit`.
pub(crate) fn is_disconnect(error: &HypervisorError) -> bool {
    matches!(error, HypervisorError::Io { source, .. } if matches!(
        source.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    ))
}
