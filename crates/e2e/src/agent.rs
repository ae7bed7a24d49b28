//! The real host agent (`tether host`) as a test fixture: started on a channel folder with the
//! QMP backend, read through its journal and its HTTP API.
//!
//! [`Agent::start`] runs the binary with `--channel-dir`, `--hypervisor qmp`, `--qmp-template
//! '<channel dir>/{uuid}.qmp'`, `--miss-threshold`, `--journal` and `--api-socket`, its log
//! going to a file. [`Agent::terminate`] sends SIGTERM and waits; dropping a running agent kills
//! it. If the test is panicking, the journal and the log are printed first.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::qemu::{print_log, read_lossy};

/// How long the agent may take to exit after SIGTERM.
pub const TERM_GRACE: Duration = Duration::from_secs(10);

/// Why the agent could not be started or asked.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A file or the process could not be created.
    #[error("Cannot start {}", .path.display())]
    Spawn {
        /// The binary or log file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The API socket could not be used.
    #[error("HTTP API on {}", .path.display())]
    Api {
        /// The API socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The API answered something that is not HTTP with a JSON body.
    #[error("Malformed API response: {0}")]
    Response(String),
}

/// One line of the agent's journal.
#[derive(Debug, Clone)]
pub struct JournalEvent {
    /// The `instance` field (the VM's UUID).
    pub instance: String,
    /// The `event` field (`heartbeat_started`, `heartbeat_lost`, ...).
    pub event: String,
    /// The whole line.
    pub raw: Value,
}

/// A running `tether host`.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    journal: PathBuf,
    api_socket: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Starts `binary host ...` watching `channel_dir`; its journal, API socket and log go into
    /// `work_dir` (`journal.jsonl`, `api.sock`, `agent.log`). The journal file is shared by
    /// successive agents started on the same `work_dir`, as it would be on a real host.
    pub fn start(
        binary: &Path,
        channel_dir: &Path,
        work_dir: &Path,
        miss_threshold: u32,
    ) -> Result<Agent, AgentError> {
        let spawn_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AgentError::Spawn { path, source }
        };
        let journal = work_dir.join("journal.jsonl");
        let api_socket = work_dir.join("api.sock");
        let log = work_dir.join("agent.log");
        let log_file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(spawn_error(&log))?;
        let qmp_template = format!("{}/{{uuid}}.qmp", channel_dir.display());
        let child = Command::new(binary)
            .arg("host")
            .arg("--channel-dir")
            .arg(channel_dir)
            .args(["--hypervisor", "qmp", "--qmp-template", &qmp_template])
            .args(["--miss-threshold", &miss_threshold.to_string()])
            .arg("--journal")
            .arg(&journal)
            .arg("--api-socket")
            .arg(&api_socket)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(spawn_error(&log))?)
            .stderr(log_file)
            .spawn()
            .map_err(spawn_error(binary))?;
        Ok(Agent {
            child,
            journal,
            api_socket,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the agent has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits up to [`TERM_GRACE`] for the agent to exit (then kills it).
    /// Returns the exit status, or `None` if it had to be killed.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.exit_status() {
            return Some(status);
        }
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// Every journal line so far (lines that are not JSON objects are skipped).
    pub fn journal(&self) -> Vec<JournalEvent> {
        self.journal_since(0)
    }

    /// The journal's current length, to pass to [`Agent::journal_since`] later.
    pub fn journal_mark(&self) -> u64 {
        std::fs::metadata(&self.journal)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Journal lines written after `mark` (all of them if the file was truncated since).
    pub fn journal_since(&self, mark: u64) -> Vec<JournalEvent> {
        let text = read_lossy(&self.journal);
        let start = usize::try_from(mark).unwrap_or(0);
        let tail = text.get(start..).unwrap_or(&text);
        tail.lines().filter_map(parse_event).collect()
    }

    /// The events recorded for `instance` (after `mark`), in order.
    pub fn events_of(&self, instance: &str, mark: u64) -> Vec<String> {
        let events = self.journal_since(mark).into_iter();
        events
            .filter(|e| e.instance == instance)
            .map(|e| e.event)
            .collect()
    }

    /// `GET path` on the API socket: the status code and the JSON body.
    pub fn get(&self, path: &str) -> Result<(u16, Value), AgentError> {
        http_get(&self.api_socket, path)
    }

    /// `POST path` with a JSON `body` on the agent's API socket: status and JSON body.
    pub fn post(&self, path: &str, body: &str) -> Result<(u16, Value), AgentError> {
        http_request(&self.api_socket, "POST", path, body)
    }

    /// The API socket's path.
    pub fn api_socket(&self) -> &Path {
        &self.api_socket
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log("host agent journal", &self.journal);
            print_log("host agent log", &self.log);
        }
        if self.exit_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_event(line: &str) -> Option<JournalEvent> {
    let raw: Value = serde_json::from_str(line).ok()?;
    let field = |name: &str| {
        raw.get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Some(JournalEvent {
        instance: field("instance"),
        event: field("event"),
        raw,
    })
}

/// A one-shot HTTP/1.1 GET over a UNIX socket (`Connection: close`).
pub fn http_get(socket: &Path, path: &str) -> Result<(u16, Value), AgentError> {
    http_request(socket, "GET", path, "")
}

/// A one-shot HTTP/1.1 request with a JSON body over a UNIX socket (`Connection: close`).
pub fn http_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, Value), AgentError> {
    let io = |source| AgentError::Api {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    stream
        .take(4 * 1024 * 1024)
        .read_to_end(&mut response)
        .map_err(io)?;
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> Result<(u16, Value), AgentError> {
    let text = String::from_utf8_lossy(response);
    let malformed = || AgentError::Response(text.chars().take(200).collect());
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body).ok_or_else(malformed)?
    } else {
        body.to_string()
    };
    if body.trim().is_empty() {
        return Ok((status, Value::Null));
    }
    let value = serde_json::from_str(&body).map_err(|_| malformed())?;
    Ok((status, value))
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_with_length_or_chunks_parse() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n[{\"a\":1}]";
        assert_eq!(
            parse_response(plain).unwrap(),
            (200, serde_json::json!([{"a": 1}]))
        );
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"e\"\r\n4\r\n:\"x\"\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (404, serde_json::json!({"e": "x"}))
        );
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(empty).unwrap(), (204, Value::Null));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn journal_lines_give_instance_and_event() {
        let e = parse_event(r#"{"ts":"t","instance":"u-1","event":"heartbeat_started"}"#).unwrap();
        assert_eq!(
            (e.instance.as_str(), e.event.as_str()),
            ("u-1", "heartbeat_started")
        );
        assert!(parse_event("not json").is_none());
    }

    #[test]
    fn http_get_talks_to_a_unix_socket_server() {
        let tmp = tether_testkit::temp_dir();
        let path = tmp.path().join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let n = stream.read(&mut request).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]")
                .unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        assert_eq!(
            http_get(&path, "/v1/instances").unwrap(),
            (200, serde_json::json!([]))
        );
        assert!(server
            .join()
            .unwrap()
            .starts_with("GET /v1/instances HTTP/1.1\r\n"));
    }
}
