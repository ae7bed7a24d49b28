//! The QMP client and backend against a small QMP server on a real UNIX socket.
//!
//! The server below follows QEMU's monitor protocol: greeting, capabilities first, replies
//! with the request's `id`, and an unrelated event written before every reply, as QEMU may.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tether_hypervisor::qmp::QmpClient;
use tether_hypervisor::{Action, Hypervisor, HypervisorError, Instance, QmpBackend};
use tether_testkit::{temp_dir, TempDir};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

const UUID: &str = "8c3f1f6e-2a41-4e0b-9a55-0d2a3b1c9e77";
const SHORT: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    RefuseReset,
    /// Answers the handshake, then nothing.
    Silent,
    /// Never sends the greeting.
    Mute,
    /// Sends a greeting line longer than any client should buffer.
    Flood,
}

struct Server {
    _dir: TempDir,
    template: String,
    path: PathBuf,
    commands: Arc<Mutex<Vec<String>>>,
    paused: Arc<Mutex<bool>>,
}

impl Server {
    fn start(mode: Mode, paused: bool) -> Server {
        let dir = temp_dir();
        let path = dir.path().join(format!("{UUID}.qmp"));
        let listener = UnixListener::bind(&path).unwrap();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let paused = Arc::new(Mutex::new(paused));
        let (c, p) = (commands.clone(), paused.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                serve(stream, mode, &c, &p).await;
            }
        });
        let template = dir.path().join("{uuid}.qmp").display().to_string();
        Server {
            _dir: dir,
            template,
            path,
            commands,
            paused,
        }
    }

    fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

async fn send(w: &mut (impl AsyncWriteExt + Unpin), value: &Value) {
    let _ = w.write_all(format!("{value}\r\n").as_bytes()).await;
}

async fn serve(
    stream: UnixStream,
    mode: Mode,
    commands: &Mutex<Vec<String>>,
    paused: &Mutex<bool>,
) {
    let (r, mut w) = stream.into_split();
    match mode {
        Mode::Mute => return std::future::pending().await,
        Mode::Flood => {
            let _ = w.write_all(&vec![b'x'; 400 * 1024]).await;
            return std::future::pending().await;
        }
        _ => {}
    }
    let greeting = json!({"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 2}, "package": ""}, "capabilities": []}});
    send(&mut w, &greeting).await;
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let request: Value = serde_json::from_str(&line).unwrap();
        let name = request["execute"].as_str().unwrap_or("").to_owned();
        commands.lock().unwrap().push(name.clone());
        if mode == Mode::Silent && name != "qmp_capabilities" {
            continue;
        }
        send(
            &mut w,
            &json!({"event": "NOISE", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}),
        )
        .await;
        let mut reply = match (name.as_str(), mode) {
            ("system_reset", Mode::RefuseReset) => {
                json!({"error": {"class": "GenericError", "desc": "reset is not possible now"}})
            }
            ("query-status", _) => {
                let p = *paused.lock().unwrap();
                json!({"return": {"status": if p { "paused" } else { "running" }, "running": !p, "singlestep": false}})
            }
            ("cont", _) => {
                *paused.lock().unwrap() = false;
                json!({"return": {}})
            }
            ("qmp_capabilities" | "system_reset" | "quit", _) => json!({"return": {}}),
            _ => {
                json!({"error": {"class": "CommandNotFound", "desc": format!("The command {name} has not been found")}})
            }
        };
        if let Some(id) = request.get("id") {
            reply["id"] = id.clone();
        }
        send(&mut w, &reply).await;
        if name == "quit" {
            return;
        }
    }
}

fn instance() -> Instance {
    Instance {
        uuid: UUID.to_owned(),
        name: "vm-1".to_owned(),
    }
}

#[tokio::test]
async fn reboot_resets_a_running_vm() {
    let server = Server::start(Mode::Normal, false);
    let backend = QmpBackend::new(server.template.clone());
    backend.apply(&instance(), Action::Reboot).await.unwrap();
    assert_eq!(
        server.commands(),
        ["qmp_capabilities", "system_reset", "query-status"]
    );
    assert_eq!(backend.name(), "qmp");
}

#[tokio::test]
async fn reboot_resumes_a_paused_vm() {
    let server = Server::start(Mode::Normal, true);
    QmpBackend::new(server.template.clone())
        .apply(&instance(), Action::Reboot)
        .await
        .unwrap();
    assert_eq!(
        server.commands(),
        ["qmp_capabilities", "system_reset", "query-status", "cont"]
    );
    assert!(!*server.paused.lock().unwrap());
}

#[tokio::test]
async fn stop_quits_and_log_touches_nothing() {
    let server = Server::start(Mode::Normal, false);
    let backend = QmpBackend::new(server.template.clone());
    backend.apply(&instance(), Action::Log).await.unwrap();
    assert!(server.commands().is_empty());
    backend.apply(&instance(), Action::Stop).await.unwrap();
    assert_eq!(server.commands(), ["qmp_capabilities", "quit"]);
}

#[tokio::test]
async fn an_error_reply_is_refused() {
    let server = Server::start(Mode::RefuseReset, false);
    let result = QmpBackend::new(server.template.clone())
        .apply(&instance(), Action::Reboot)
        .await;
    match result {
        Err(HypervisorError::Refused { command, message }) => {
            assert_eq!(command, "system_reset");
            assert_eq!(message, "GenericError: reset is not possible now");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

async fn expect_timeout(mode: Mode, step: &str) {
    let server = Server::start(mode, false);
    let backend = QmpBackend::new(server.template.clone()).with_timeout(SHORT);
    let started = tokio::time::Instant::now();
    match backend.apply(&instance(), Action::Reboot).await {
        Err(HypervisorError::Timeout { command }) => assert_eq!(command, step),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    expect_timeout(Mode::Silent, "system_reset").await;
}

#[tokio::test]
async fn a_server_that_never_greets_times_out() {
    expect_timeout(Mode::Mute, "greeting").await;
}

#[tokio::test]
async fn an_endless_line_is_a_protocol_error() {
    let server = Server::start(Mode::Flood, false);
    let result = QmpClient::connect_with_timeout(&server.path, SHORT).await;
    assert!(
        matches!(result, Err(HypervisorError::Protocol(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_missing_socket_is_an_io_error() {
    let backend = QmpBackend::new("/nonexistent/{uuid}.qmp".to_owned());
    let result = backend.apply(&instance(), Action::Reboot).await;
    assert!(
        matches!(result, Err(HypervisorError::Io { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn the_client_keeps_events_and_answers_commands() {
    let server = Server::start(Mode::Normal, true);
    let mut client = QmpClient::connect(Path::new(&server.path)).await.unwrap();
    assert_eq!(client.greeting()["QMP"]["version"]["qemu"]["major"], 10);
    let status = client.execute("query-status", None).await.unwrap();
    assert_eq!(status["status"], "paused");
    let unknown = client.execute("frobnicate", Some(json!({"x": 1}))).await;
    assert!(
        matches!(unknown, Err(HypervisorError::Refused { .. })),
        "{unknown:?}"
    );
    // One NOISE event was written before each of the three replies.
    assert_eq!(client.next_event().await.unwrap()["event"], "NOISE");
    assert_eq!(client.take_events().len(), 2);
}
