//! Shared pieces of the host agent's integration tests: the agent on a temp directory, a
//! recording hypervisor double, the scripted guest double, and journal readers.

#![allow(dead_code)]

pub mod controller_double;
pub mod guest_double;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tether_host::journal::EventKind;
use tether_host::{AgentView, HostAgent, HostConfig, HostError, InstanceStatus};
use tether_hypervisor::{Action, BoxFuture, Hypervisor, HypervisorError, Instance};
use tether_testkit::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)]
pub use guest_double::{uuid, GuestDouble, Mode};

/// A hypervisor double: records every action it is asked for, optionally takes time or fails.
#[derive(Default)]
pub struct RecordingHypervisorDouble {
    calls: Mutex<Vec<(String, Action)>>,
    delay: Mutex<Duration>,
    fail: Mutex<bool>,
}

impl RecordingHypervisorDouble {
    pub fn calls(&self) -> Vec<(String, Action)> {
        self.calls.lock().unwrap().clone()
    }

    pub fn calls_for(&self, uuid: &str) -> Vec<Action> {
        self.calls()
            .into_iter()
            .filter(|(u, _)| u == uuid)
            .map(|(_, a)| a)
            .collect()
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    pub fn set_fail(&self, fail: bool) {
        *self.fail.lock().unwrap() = fail;
    }
}

impl Hypervisor for RecordingHypervisorDouble {
    fn name(&self) -> &'static str {
        "recording-double"
    }

    fn apply<'a>(
        &'a self,
        instance: &'a Instance,
        action: Action,
    ) -> BoxFuture<'a, Result<(), HypervisorError>> {
        self.calls
            .lock()
            .unwrap()
            .push((instance.uuid.clone(), action));
        let delay = *self.delay.lock().unwrap();
        let fail = *self.fail.lock().unwrap();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if fail {
                return Err(HypervisorError::Refused {
                    command: format!("{action} {}", instance.uuid),
                    message: "double told to fail".into(),
                });
            }
            Ok(())
        })
    }
}

/// A host agent running on a temporary directory.
pub struct Harness {
    pub dir: TempDir,
    pub channels: PathBuf,
    pub config: HostConfig,
    pub hypervisor: Arc<RecordingHypervisorDouble>,
    pub view: AgentView,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), HostError>>>,
}

/// The agent's settings for a test under `dir`.
pub fn test_config(dir: &Path) -> HostConfig {
    HostConfig {
        channel_dir: dir.join("channels"),
        journal: dir.join("journal.jsonl"),
        api_socket: dir.join("api.sock"),
        ..HostConfig::default()
    }
}

/// The host name the agent reports under in the controller link tests.
pub const HOST: &str = "compute-test";

/// Points `config` at the controller at `url` with `token` (written to a file beside the
/// journal), and serves the API on a loopback port.
pub fn link_to(config: &mut HostConfig, url: &str, token: &str) {
    let token_file = config.journal.with_file_name("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    config.controller = Some(url.to_owned());
    config.controller_token_file = Some(token_file);
    config.host_name = Some(HOST.to_owned());
    config.api_listen = Some("127.0.0.1:0".parse().unwrap());
}

impl Harness {
    /// Starts an agent with the test defaults changed by `tweak`.
    pub fn start(tweak: impl FnOnce(&mut HostConfig)) -> Harness {
        let mut harness = Harness::prepare(tweak);
        harness.restart_agent();
        harness
    }

    /// Sets up the directory and configuration without starting an agent.
    pub fn prepare(tweak: impl FnOnce(&mut HostConfig)) -> Harness {
        let dir = tether_testkit::temp_dir();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        std::fs::create_dir_all(&config.channel_dir).unwrap();
        Harness {
            channels: config.channel_dir.clone(),
            dir,
            config,
            hypervisor: Arc::new(RecordingHypervisorDouble::default()),
            view: AgentView::default(),
            stop: None,
            task: None,
        }
    }

    /// Starts a (new) agent on the same directory and hypervisor double.
    pub fn restart_agent(&mut self) {
        assert!(self.task.is_none(), "stop the running agent first");
        let agent = HostAgent::new(self.config.clone(), self.hypervisor.clone()).unwrap();
        self.view = agent.view();
        let (stop, stopped) = oneshot::channel();
        self.task = Some(tokio::spawn(agent.run(async {
            let _ = stopped.await;
        })));
        self.stop = Some(stop);
    }

    /// Stops the agent and waits for `run` to return.
    pub async fn stop_agent(&mut self) {
        let _ = self.stop.take().expect("agent running").send(());
        let result = self.task.take().unwrap().await.unwrap();
        result.unwrap();
    }

    pub fn guest(&self, n: u32, interval_ms: u32) -> GuestDouble {
        let action = tether_proto::CorrectiveAction::Reboot;
        GuestDouble::start(&self.channels, &uuid(n), interval_ms, action)
    }

    pub fn status(&self, uuid: &str) -> Option<InstanceStatus> {
        self.view.instance(uuid)
    }

    pub fn state(&self, uuid: &str) -> String {
        self.status(uuid)
            .map_or_else(|| "-".into(), |s| s.state.to_string())
    }

    /// Waits (in tokio time) until `uuid` is in `state`.
    pub async fn wait_state(&self, uuid: &str, state: &str, within: Duration) {
        let what = format!("{uuid} is {state}");
        tether_testkit::wait_for(&what, within, || self.state(uuid) == state).await;
    }

    /// Every journal line, parsed and checked against the pinned format.
    pub fn journal(&self) -> Vec<Value> {
        read_journal(&self.config.journal)
    }

    /// Journal events of one kind for one instance.
    pub fn events(&self, uuid: &str, kind: EventKind) -> Vec<Value> {
        self.journal()
            .into_iter()
            .filter(|e| e["instance"] == uuid && e["event"] == kind.as_str())
            .collect()
    }
}

/// Reads a journal, asserting that every line is a JSON object with a `seq` one above the
/// line before, a well-formed `ts`, an `instance` and a pinned `event` name.
pub fn read_journal(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    let mut last_seq = 0;
    text.lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let seq = event["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("no seq: {line}"));
            assert_eq!(seq, last_seq + 1, "seq out of order: {line}");
            last_seq = seq;
            let ts = event["ts"]
                .as_str()
                .unwrap_or_else(|| panic!("no ts: {line}"));
            assert!(is_rfc3339_utc_ms(ts), "bad ts {ts}");
            assert!(event["instance"].is_string(), "no instance: {line}");
            let name = event["event"]
                .as_str()
                .unwrap_or_else(|| panic!("no event: {line}"));
            assert!(names.contains(&name), "unknown event {name}");
            event
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn is_rfc3339_utc_ms(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Sends one HTTP/1.1 request over the API socket; returns the status code and JSON body.
pub async fn http(socket: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}
