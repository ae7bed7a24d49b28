//! The controller end to end: a real controller (SQLite in a temp dir, HTTP on loopback), a
//! host agent linked to it, simulated VMs running the real guest daemon, and the `tether ctl`
//! binary reading it all back.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Rig, LONG};
use serde_json::Value;
use tether_controller::{Controller, ControllerConfig};
use tether_guest::GuestConfig;
use tether_proto::CorrectiveAction;
use tether_sim::Fault;
use tether_testkit::wait_for;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "s3cret-token-for-tests";

struct RunningController {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start_controller(data_dir: &Path, port: u16) -> RunningController {
    start_controller_with(data_dir, port, None).await
}

/// A controller that also sends events to the VIM at `vim_url`, if given.
async fn start_controller_with(
    data_dir: &Path,
    port: u16,
    vim_url: Option<String>,
) -> RunningController {
    let config = ControllerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        data_dir: data_dir.to_path_buf(),
        token: TOKEN.to_owned(),
        starlingx_listen: None,
        vim_url,
        tls: None,
        webhook_ca: None,
        host_ca: None,
    };
    let mut controller = Controller::open(config).expect("the controller opens its store");
    let addr = controller.bind().await.expect("the controller binds");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        controller
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("the controller serves");
    });
    RunningController { addr, stop, task }
}

impl RunningController {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the controller task ends");
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Runs `tether ctl --json` with `args`; the exit code and the parsed JSON it printed.
fn ctl(url: &str, token_file: &Path, args: &[&str]) -> (i32, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["ctl", "--controller", url, "--token-file"])
        .arg(token_file)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), value)
}

fn ctl_table(url: &str, token_file: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["ctl", "--controller", url, "--token-file"])
        .arg(token_file)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_guest_reaches_the_controller_once_across_restarts_and_ctl_shows_it() {
    let mut rig = Rig::start(2, CorrectiveAction::Reboot, 1).await;
    let data_dir = rig.dir.path().join("controller");
    let token_file = rig.dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let controller = start_controller(&data_dir, 0).await;
    let url = controller.url();

    // Restart the agent linked to the controller.
    rig.stop_agent().await;
    rig.config.controller = Some(url.clone());
    rig.config.controller_token_file = Some(token_file.clone());
    rig.config.host_name = Some("compute-0".into());
    rig.start_agent();
    rig.wait_all_heartbeating().await;

    wait_for("the controller knows both guests", LONG, || {
        let (code, list) = ctl(&url, &token_file, &["instances", "--host", "compute-0"]);
        code == 0
            && list
                .as_array()
                .is_some_and(|l| l.len() == 2 && l.iter().all(|i| i["state"] == "heartbeating"))
    })
    .await;

    let hung = rig.vm(0).clone();
    hung.set_fault(Fault::Hang);
    let lost_at_controller = |url: &str| {
        let (_, events) = ctl(
            url,
            &token_file,
            &[
                "events",
                "--instance",
                hung.uuid(),
                "--type",
                "heartbeat_lost",
            ],
        );
        events.as_array().map_or(0, Vec::len)
    };
    wait_for("the loss reaches the controller", LONG, || {
        lost_at_controller(&url) == 1
    })
    .await;
    wait_for("the hung guest is recovered", LONG, || hung.resets() == 1).await;

    // Controller restart on the same data: nothing lost, nothing twice.
    controller.stop().await;
    let controller = start_controller(&data_dir, 0).await;
    let url = controller.url();
    assert_eq!(lost_at_controller(&url), 1);

    // Host agent restart pointing at the new address: it replays nothing twice.
    rig.stop_agent().await;
    rig.config.controller = Some(url.clone());
    rig.start_agent();
    rig.wait_all_heartbeating().await;
    wait_for("the restarted agent registers again", LONG, || {
        let (_, host) = ctl(&url, &token_file, &["hosts", "show", "compute-0"]);
        host["acked_seq"].as_u64().unwrap_or(0) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lost_at_controller(&url), 1);
    let (_, all) = ctl(
        &url,
        &token_file,
        &["events", "--host", "compute-0", "--limit", "1000"],
    );
    let seqs: Vec<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    let mut sorted = seqs.clone();
    sorted.dedup();
    assert_eq!(seqs, sorted, "no event stored twice");
    assert_eq!(seqs.first(), Some(&1));

    // The human table and the exit statuses.
    let (code, table) = ctl_table(&url, &token_file, &["instances"]);
    assert_eq!(code, 0, "{table}");
    assert!(table.starts_with("UUID"), "{table}");
    assert!(table.contains(hung.uuid()), "{table}");
    let (code, _) = ctl_table(&url, &token_file, &["instances", "show", "no-such-uuid"]);
    assert_eq!(code, 3);
    let wrong = rig.dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let (code, text) = ctl_table(&url, &wrong, &["hosts"]);
    assert_eq!(code, 4, "{text}");
    let (code, _) = ctl_table("http://127.0.0.1:9", &token_file, &["hosts"]);
    assert_eq!(code, 1);

    rig.stop_agent().await;
    controller.stop().await;
}

/// A webhook receiver: answers 500 to its first `failures` requests, 200 after; records each
/// request's `Idempotency-Key`, its body and the status it was answered.
#[derive(Clone, Default)]
struct Receiver {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, Value, u16)>>>,
}

impl Receiver {
    async fn start(failures: usize) -> (Receiver, SocketAddr) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::default();
        let seen = receiver.seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut data = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break (String::new(), Vec::new());
                    }
                    data.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&data).into_owned();
                    if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                        let length = header(head, "content-length")
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if rest.len() >= length {
                            break (head.to_owned(), rest.as_bytes()[..length].to_vec());
                        }
                    }
                };
                let key = header(&head, "idempotency-key").unwrap_or_default();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let status = {
                    let mut seen = seen.lock().unwrap();
                    let status = if seen.len() < failures { 500 } else { 200 };
                    seen.push((key, body, status));
                    status
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        });
        (receiver, addr)
    }

    fn seen(&self) -> Vec<(String, Value, u16)> {
        self.seen.lock().unwrap().clone()
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loss_reaches_a_failing_webhook_once_and_ctl_reboots_with_live_steps() {
    let mut rig = Rig::start(2, CorrectiveAction::Reboot, 1).await;
    let token_file = rig.dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let controller = start_controller(&rig.dir.path().join("controller"), 0).await;
    let url = controller.url();
    let (receiver, receiver_addr) = Receiver::start(2).await;
    let secret_file = rig.dir.path().join("hook-secret");
    std::fs::write(&secret_file, "0123456789abcdef0123\n").unwrap();
    let hook_url = format!("http://{receiver_addr}/hook");
    let secret_arg = secret_file.to_string_lossy().into_owned();
    let (code, hook) = ctl(
        &url,
        &token_file,
        &["webhooks", "add", &hook_url, "--secret-file", &secret_arg],
    );
    assert_eq!(code, 0, "{hook}");
    let hook_id = hook["id"].to_string().trim_matches('"').to_owned();
    assert!(hook.get("secret").is_none(), "{hook}");

    rig.stop_agent().await;
    rig.config.controller = Some(url.clone());
    rig.config.controller_token_file = Some(token_file.clone());
    rig.config.host_name = Some("compute-1".into());
    rig.config.api_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    rig.start_agent();
    rig.wait_all_heartbeating().await;

    let hung = rig.vm(0).clone();
    hung.set_fault(Fault::Hang);
    let lost = |seen: &[(String, Value, u16)]| {
        seen.iter()
            .filter(|(_, body, status)| {
                *status == 200
                    && body["event"] == "heartbeat_lost"
                    && body["instance"] == hung.uuid()
            })
            .count()
    };
    wait_for("the loss reaches the webhook", LONG, || {
        lost(&receiver.seen()) == 1
    })
    .await;
    let seen = receiver.seen();
    let (first_key, first_body, first_status) = seen[0].clone();
    assert_eq!(first_status, 500);
    assert!(
        seen.iter()
            .any(|(k, b, s)| *s == 200 && *k == first_key && *b == first_body),
        "the refused delivery was retried with the same key and body"
    );
    let mut delivered: Vec<&String> = seen
        .iter()
        .filter(|(_, _, s)| *s == 200)
        .map(|(k, _, _)| k)
        .collect();
    let count = delivered.len();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), count, "each key delivered once");

    // The agent left the recovery to the controller, which ordered it.
    wait_for("the controller reboots the hung guest", LONG, || {
        hung.resets() == 1
    })
    .await;
    let (code, decisions) = ctl(&url, &token_file, &["instances", "recoveries", hung.uuid()]);
    assert_eq!(code, 0, "{decisions}");
    assert_eq!(decisions[0]["decision"], "ordered", "{decisions}");
    let (_, started) = ctl(
        &url,
        &token_file,
        &[
            "events",
            "--instance",
            hung.uuid(),
            "--type",
            "recovery_started",
        ],
    );
    assert_eq!(started[0]["details"]["by"], "controller", "{started}");

    let (code, status) = ctl(&url, &token_file, &["webhooks", "show", &hook_id]);
    assert_eq!(code, 0, "{status}");
    assert!(status["delivered"].as_u64().unwrap_or(0) >= 1, "{status}");
    let (code, audit) = ctl(&url, &token_file, &["audit"]);
    assert_eq!(code, 0, "{audit}");
    assert!(audit.get("hosts_checked").is_some(), "{audit}");

    // A reboot through the controller, followed live by tether ctl.
    let vm = rig.vm(1).clone();
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["ctl", "--controller", &url, "--token-file"])
        .arg(&token_file)
        .args(["instance", "reboot", vm.uuid()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in ["vote", "notify", "act", "reboot: done"] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    wait_for("the rebooted VM was reset", LONG, || vm.resets() == 1).await;

    rig.stop_agent().await;
    controller.stop().await;
}

/// `tether controller --vim-url URL` as a process: a bad URL is refused naming the flag, a
/// good one is taken and `tether ctl vim` shows the transmitter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vim_url_flag_is_checked_and_ctl_vim_shows_the_transmitter() {
    let dir = tether_testkit::temp_dir();
    let data_dir = dir.path().join("controller");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let controller = |listen: &str, vim_url: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
        command
            .args(["controller", "--listen", listen, "--data-dir"])
            .arg(&data_dir)
            .args(["--vim-url", vim_url])
            .env("TETHER_TOKEN", TOKEN);
        command
    };
    for (url, words) in [
        ("ftp://vim:30002", "is not an http://host[:port] URL"),
        (
            "http://vim:30002/nfvi-plugins",
            "is not an http://host[:port] URL",
        ),
        ("https://vim:30002", "plain HTTP"),
    ] {
        let output = controller("127.0.0.1:0", url).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert!(
            stderr.contains("--vim-url") && stderr.contains(words),
            "{stderr}"
        );
    }
    assert!(!data_dir.exists(), "nothing is created for a bad URL");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = controller(&listen, "http://127.0.0.1:9/")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{listen}");
    wait_for("ctl vim shows the VIM", LONG, || {
        ctl(&url, &token_file, &["vim"]).1["url"] == "http://127.0.0.1:9"
    })
    .await;
    let (code, vim) = ctl(&url, &token_file, &["vim"]);
    assert_eq!(code, 0);
    assert_eq!(
        vim,
        serde_json::json!({"url": "http://127.0.0.1:9", "last_event_id": 0, "behind": 0,
                           "last_error": null, "last_error_at": null})
    );
    let (code, table) = ctl_table(&url, &token_file, &["vim"]);
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("http://127.0.0.1:9"), "{table}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The whole chain: a real guest's heartbeat starts and then hangs; its host agent reports to
/// the controller, which tells the VIM (a receiver in this test, as the StarlingX VIM cannot
/// run here) that heartbeating started with the guest's restart time, then stopped, then
/// failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_guest_reaches_the_vim_as_started_stopped_and_failed() {
    let (vim, vim_addr) = Receiver::start(0).await;
    let guest = GuestConfig {
        heartbeat_interval_ms: 1000,
        corrective_action: CorrectiveAction::Reboot,
        restart_secs: 300,
        ..GuestConfig::default()
    };
    let mut rig = Rig::with_guest(1, 1, Duration::from_millis(100), |_| guest).await;
    let token_file = rig.dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let data_dir = rig.dir.path().join("controller");
    let controller = start_controller_with(&data_dir, 0, Some(format!("http://{vim_addr}"))).await;
    rig.stop_agent().await;
    rig.config.controller = Some(controller.url());
    rig.config.controller_token_file = Some(token_file);
    rig.config.host_name = Some("compute-0".into());
    rig.start_agent();
    rig.wait_all_heartbeating().await;

    let vm = rig.vm(0).clone();
    let told = || -> Vec<Value> {
        let seen = vim.seen().into_iter().map(|(_, body, _)| body);
        seen.filter(|b| b["uuid"] == vm.uuid()).collect()
    };
    let service = |b: &Value| b["event-data"]["services"][0].clone();
    wait_for("the VIM hears the heartbeat start", LONG, || {
        told().iter().any(|b| service(b)["status"] == "enabled")
    })
    .await;
    let started = told()
        .into_iter()
        .find(|b| service(b)["status"] == "enabled");
    let started = service(&started.unwrap());
    assert_eq!(
        started["restart-timeout"], "301",
        "the guest sends RESTART + 1"
    );
    assert_eq!(started["state"], "enabled");

    vm.set_fault(Fault::Hang);
    wait_for("the VIM hears the failure", LONG, || {
        told().iter().any(|b| b["event-type"] == "alarm")
    })
    .await;
    let told = told();
    let stopped = told.iter().position(|b| service(b)["status"] == "disabled");
    let failed = told
        .iter()
        .position(|b| b["event-type"] == "alarm")
        .unwrap();
    assert_eq!(stopped, Some(failed - 1), "stopped, then failed: {told:?}");
    assert_eq!(service(&told[failed])["state"], "failed");
    assert_eq!(service(&told[failed])["repair-action"], "reboot");
    assert_eq!(told[failed]["hostname"], "compute-0");

    rig.stop_agent().await;
    controller.stop().await;
}
