//! The VM's QMP server: QEMU's monitor protocol on `<uuid>.qmp`, as `-qmp
//! unix:<path>,server=on,wait=off` serves it.
//!
//! One client at a time (the next waits in the listen backlog). The server greets with
//! `{"QMP": {"version": ..., "capabilities": []}}`; until the client sends `qmp_capabilities`
//! every other command gets `CommandNotFound`, and no events are sent. Then: `query-status`,
//! `stop` / `cont` (events `STOP` / `RESUME`, sent before the reply as QEMU does),
//! `system_reset` (reply, then `RESET` twice: the host's reset and the firmware's own, as
//! seen from a real QEMU), and `quit` (reply, `SHUTDOWN`, then the VM is gone). Replies echo
//! the request's `id`; unknown commands get `CommandNotFound`; input that is not a JSON object
//! gets `GenericError`. Lines end with `\r\n`, as QEMU's do. Every command is recorded in the
//! VM's log for tests.

use std::io;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::fault::VmStatus;
use crate::vm::VmShared;

/// Longest request line accepted; longer ones get a `GenericError` and are skipped.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Serves monitor clients one after the other until the VM quits.
pub(crate) async fn serve(vm: Arc<VmShared>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if session(&vm, stream).await == End::Quit {
                    vm.stop();
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %e, "accepting a QMP client failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

#[derive(PartialEq)]
enum End {
    Closed,
    Quit,
}

/// A QMP event as QEMU writes it.
pub(crate) fn event(name: &str, data: Value) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    json!({
        "event": name,
        "data": data,
        "timestamp": {"seconds": now.as_secs(), "microseconds": now.subsec_micros()},
    })
}

/// Data of a `RESET` event; `guest` is false for the host's request, true for the firmware's.
pub(crate) fn reset_data(guest: bool) -> Value {
    let reason = if guest {
        "guest-reset"
    } else {
        "host-qmp-system-reset"
    };
    json!({"guest": guest, "reason": reason})
}

/// Data of the `SHUTDOWN` event sent on `quit`.
pub(crate) fn shutdown_data() -> Value {
    json!({"guest": false, "reason": "host-qmp-quit"})
}

struct Session<'a> {
    vm: &'a Arc<VmShared>,
    writer: OwnedWriteHalf,
    events: broadcast::Receiver<Value>,
    negotiated: bool,
}

async fn session(vm: &Arc<VmShared>, stream: UnixStream) -> End {
    let (read, writer) = stream.into_split();
    let mut lines = Lines::new(read);
    let mut s = Session {
        vm,
        writer,
        events: vm.events.subscribe(),
        negotiated: false,
    };
    let greeting = json!({"QMP": {
        "version": {"qemu": {"major": 10, "minor": 0, "micro": 2}, "package": "tether-sim"},
        "capabilities": [],
    }});
    if s.send(&greeting).await.is_err() {
        return End::Closed;
    }
    loop {
        tokio::select! {
            line = lines.next() => match line {
                Ok(Some(line)) => match s.request(line).await {
                    Ok(End::Quit) => return End::Quit,
                    Ok(End::Closed) => {}
                    Err(_) => return End::Closed,
                },
                Ok(None) | Err(_) => return End::Closed,
            },
            ev = s.events.recv(), if s.negotiated => match ev {
                Ok(ev) => if s.send(&ev).await.is_err() { return End::Closed },
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return End::Closed,
            },
        }
    }
}

impl Session<'_> {
    async fn send(&mut self, value: &Value) -> io::Result<()> {
        let mut bytes = value.to_string().into_bytes();
        bytes.extend_from_slice(b"\r\n");
        self.writer.write_all(&bytes).await
    }

    /// Writes the events published so far (those a command just caused).
    async fn flush_events(&mut self) -> io::Result<()> {
        loop {
            match self.events.try_recv() {
                Ok(ev) => self.send(&ev).await?,
                Err(TryRecvError::Lagged(_)) => {}
                Err(_) => return Ok(()),
            }
        }
    }

    async fn request(&mut self, line: Line) -> io::Result<End> {
        let parsed = match line {
            Line::Text(text) => parse(&text),
            Line::TooLong => Err((
                error("GenericError", "JSON parse error, request too long"),
                None,
            )),
        };
        let (command, mut reply, id) = match parsed {
            Ok(request) => {
                self.vm.record_qmp(&request.command);
                let reply = self.execute(&request.command);
                (request.command, reply, request.id)
            }
            Err((reply, id)) => (String::new(), reply, id),
        };
        if let Some(id) = id {
            reply["id"] = id;
        }
        if self.negotiated && matches!(command.as_str(), "stop" | "cont") {
            self.flush_events().await?;
        }
        self.send(&reply).await?;
        if command == "quit" && reply.get("return").is_some() {
            self.send(&event("SHUTDOWN", shutdown_data())).await?;
            return Ok(End::Quit);
        }
        if self.negotiated {
            self.flush_events().await?;
        }
        Ok(End::Closed)
    }

    /// Carries out one command and returns its reply (without `id`).
    fn execute(&mut self, command: &str) -> Value {
        if self.negotiated {
            return run(self.vm, command);
        }
        if command != "qmp_capabilities" {
            let desc = "Expecting capabilities negotiation with 'qmp_capabilities'";
            return error("CommandNotFound", desc);
        }
        self.negotiated = true;
        // Events from before the negotiation are not sent.
        self.events = self.events.resubscribe();
        ok(json!({}))
    }
}

/// Carries out a command after capabilities negotiation.
fn run(vm: &Arc<VmShared>, command: &str) -> Value {
    match command {
        "qmp_capabilities" => error(
            "CommandNotFound",
            "Capabilities negotiation is already complete, command ignored",
        ),
        "query-status" => {
            let status = vm.status();
            ok(json!({
                "status": status.as_str(),
                "running": status == VmStatus::Running,
                "singlestep": false,
            }))
        }
        "stop" | "cont" => {
            let pause = command == "stop";
            if vm.set_paused(pause) {
                let name = if pause { "STOP" } else { "RESUME" };
                let _ = vm.events.send(event(name, json!({})));
            }
            ok(json!({}))
        }
        "system_reset" => match vm.reset() {
            Ok(()) => ok(json!({})),
            Err(e) => error("GenericError", &e.to_string()),
        },
        "quit" => ok(json!({})),
        other => error(
            "CommandNotFound",
            &format!("The command {other} has not been found"),
        ),
    }
}

fn ok(value: Value) -> Value {
    json!({ "return": value })
}

fn error(class: &str, desc: &str) -> Value {
    json!({"error": {"class": class, "desc": desc}})
}

/// A request that names a command.
struct Request {
    command: String,
    id: Option<Value>,
}

/// Parses one request line; on failure, the error reply and the id to echo (if any).
fn parse(text: &[u8]) -> Result<Request, (Value, Option<Value>)> {
    let value: Value = serde_json::from_slice(text).map_err(|e| {
        (
            error("GenericError", &format!("JSON parse error, {e}")),
            None,
        )
    })?;
    let Value::Object(mut map) = value else {
        return Err((
            error("GenericError", "QMP input must be a JSON object"),
            None,
        ));
    };
    let id = map.remove("id");
    let fail = |desc: &str| (error("GenericError", desc), id.clone());
    let command = match map.get("execute") {
        None => return Err(fail("QMP input lacks member 'execute'")),
        Some(Value::String(command)) => command.clone(),
        Some(_) => return Err(fail("QMP input member 'execute' must be a string")),
    };
    if !matches!(map.get("arguments"), None | Some(Value::Object(_))) {
        return Err(fail("QMP input member 'arguments' must be an object"));
    }
    if let Some(key) = unexpected_member(&map) {
        return Err(fail(&format!("QMP input member '{key}' is unexpected")));
    }
    Ok(Request { command, id })
}

fn unexpected_member(map: &Map<String, Value>) -> Option<&str> {
    map.keys()
        .map(String::as_str)
        .find(|k| !matches!(*k, "execute" | "arguments" | "control"))
}

/// One request line, or the news that a line was too long.
enum Line {
    Text(Vec<u8>),
    TooLong,
}

/// Reads request lines with a bounded buffer; cancel-safe (the partial line stays here).
struct Lines {
    reader: BufReader<OwnedReadHalf>,
    line: Vec<u8>,
    too_long: bool,
}

impl Lines {
    fn new(read: OwnedReadHalf) -> Lines {
        Lines {
            reader: BufReader::new(read),
            line: Vec::new(),
            too_long: false,
        }
    }

    /// The next non-blank line, or `None` at EOF.
    async fn next(&mut self) -> io::Result<Option<Line>> {
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                return Ok(None);
            }
            let (take, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(pos) => (pos, true),
                None => (buf.len(), false),
            };
            if self.line.len() + take > MAX_REQUEST {
                self.too_long = true;
                self.line.clear();
            } else if !self.too_long {
                self.line.extend_from_slice(&buf[..take]);
            }
            self.reader.consume(take + usize::from(done));
            if !done {
                continue;
            }
            let line = std::mem::take(&mut self.line);
            if std::mem::take(&mut self.too_long) {
                return Ok(Some(Line::TooLong));
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(Line::Text(line)));
            }
        }
    }
}
