//! A small blocking QMP client for tests: the test's own line to a VM's monitor.
//!
//! Each test VM gets a second QMP socket for the test, so the test can freeze the vCPUs
//! (`stop`), ask for the run state or end QEMU while the host agent uses the first socket for
//! its recoveries. Events that arrive between a command and its reply are kept in
//! [`Qmp::events`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

/// Longest line read from the monitor.
const MAX_LINE: u64 = 1024 * 1024;

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Connecting, reading or writing failed (includes timeouts).
    #[error("QMP I/O on {}", .path.display())]
    Io {
        /// The monitor socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU closed the connection.
    #[error("QMP connection to {} closed", .0.display())]
    Closed(PathBuf),
    /// A line was not JSON or not the expected shape.
    #[error("Unexpected QMP message: {0}")]
    Unexpected(String),
    /// QEMU answered with an error.
    #[error("QMP command {command} failed: {reply}")]
    Refused {
        /// The command.
        command: String,
        /// The `error` object.
        reply: Value,
    },
}

/// One connection to a monitor, past the capabilities handshake.
#[derive(Debug)]
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects and negotiates capabilities; every read and write may take up to `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let io = |source| QmpError::Io {
            path: path.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let reader = BufReader::new(stream);
        let mut qmp = Qmp {
            path: path.to_path_buf(),
            reader,
            writer,
            events: Vec::new(),
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Unexpected(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let line = format!("{request}\n");
        let io = |source| QmpError::Io {
            path: self.path.clone(),
            source,
        };
        self.writer.write_all(line.as_bytes()).map_err(io)?;
        loop {
            let mut message = self.read_message()?;
            if message.get("event").is_some() {
                self.events.push(message);
            } else if let Some(value) = message.get_mut("return") {
                return Ok(value.take());
            } else if let Some(error) = message.get("error") {
                return Err(QmpError::Refused {
                    command: command.to_string(),
                    reply: error.clone(),
                });
            } else {
                return Err(QmpError::Unexpected(message.to_string()));
            }
        }
    }

    /// The VM's run state from `query-status` (`running`, `paused`, `shutdown`, ...).
    pub fn status(&mut self) -> Result<String, QmpError> {
        let reply = self.execute("query-status", None)?;
        match reply.get("status").and_then(Value::as_str) {
            Some(status) => Ok(status.to_string()),
            None => Err(QmpError::Unexpected(reply.to_string())),
        }
    }

    /// Events received so far, oldest first.
    pub fn events(&self) -> &[Value] {
        &self.events
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Closed(self.path.clone()));
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Unexpected(line.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A scripted monitor double: greets, then answers each request line with the next reply.
    fn monitor(dir: &Path, replies: &'static [&'static str]) -> PathBuf {
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            for reply in replies {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    return;
                }
                w.write_all(reply.as_bytes()).unwrap();
            }
        });
        path
    }

    #[test]
    fn commands_get_their_replies_and_events_are_kept() {
        let tmp = tether_testkit::temp_dir();
        let path = monitor(
            tmp.path(),
            &[
                "{\"return\": {}}\n",
                "{\"event\": \"STOP\", \"data\": {}}\n{\"return\": {\"status\": \"paused\"}}\n",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\n",
            ],
        );
        let mut qmp = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(qmp.status().unwrap(), "paused");
        assert_eq!(qmp.events().len(), 1);
        assert_eq!(qmp.events()[0]["event"], "STOP");
        let err = qmp.execute("cont", None).unwrap_err();
        assert!(matches!(err, QmpError::Refused { .. }), "{err}");
        // The double hung up: either the write or the read notices.
        let err = qmp.status().unwrap_err();
        assert!(
            matches!(err, QmpError::Closed(_) | QmpError::Io { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_silent_monitor_times_out() {
        let tmp = tether_testkit::temp_dir();
        let path = tmp.path().join("qmp.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let err = Qmp::connect(&path, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, QmpError::Io { .. }), "{err}");
    }
}
