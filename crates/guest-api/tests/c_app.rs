//! The sample C application, built with the system C compiler against the committed header
//! and the built library, heartbeats through a real daemon to the host double; real processes,
//! real sockets, real clock.

#![allow(clippy::unwrap_used)]

#[path = "../../guest/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{HostConn, HostDouble, Running};
use rustix::process::{kill_process, Pid, Signal};
use tether_guest::{Daemon, GuestConfig, Options};
use tether_proto::{
    ActionNotify, ActionResponse, ChallengeResponse, CorrectiveAction, EventType, Health, Message,
    NotificationType, VoteResult,
};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::time::{sleep, timeout, Instant};

const PATIENCE: Duration = Duration::from_secs(20);

/// `target/<profile>`, where cargo puts `libguest_heartbeat_api.so` (built now if stale).
fn lib_dir() -> PathBuf {
    tether_testkit::library_dir("tether-guest-api")
}

/// Compiles the sample application into `dir`.
fn build_sample(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("sample_guest_app");
    let lib = lib_dir();
    assert!(
        lib.join("libguest_heartbeat_api.so").exists(),
        "no library in {}",
        lib.display()
    );
    let status = std::process::Command::new("cc")
        .args([
            "-std=c99",
            "-D_DEFAULT_SOURCE",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
        ])
        .arg(&out)
        .arg(root.join("examples/c/sample_guest_app.c"))
        .arg("-I")
        .arg(root.join("include"))
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lguest_heartbeat_api")
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed");
    out
}

/// A daemon serving the application API at `dir/api.sock`, heartbeating to `host`.
fn start_daemon(host: &HostDouble, dir: &Path) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let daemon = Daemon::new(Options {
        device: host.path.clone(),
        name: "vm-apps".into(),
        config: GuestConfig::default(),
        api_socket: Some(dir.join("api.sock")),
    });
    let task = tokio::spawn(daemon.run(async move {
        let _ = stopped.await;
    }));
    Running {
        stop: Some(stop),
        task,
    }
}

struct App {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl App {
    fn spawn(bin: &Path, dir: &Path, name: &str, interval: &str, action: &str) -> App {
        let mut child = Command::new(bin)
            .args([name, dir.to_str().unwrap(), interval, action])
            .env("GUEST_HEARTBEAT_API_SOCKET", dir.join("api.sock"))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the sample application");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        App { child, lines }
    }

    async fn expect_line(&mut self, wanted: &str) {
        let found = timeout(PATIENCE, async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                if line == wanted {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "the application never printed {wanted:?}");
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.child.id().unwrap() as i32).unwrap();
        kill_process(pid, signal).unwrap();
    }
}

/// Challenges every 100 ms until a response satisfies `ok`; returns it.
async fn until(
    conn: &mut HostConn,
    what: &str,
    ok: impl Fn(&ChallengeResponse) -> bool,
) -> ChallengeResponse {
    let deadline = Instant::now() + PATIENCE;
    let mut value = 0;
    loop {
        value += 1;
        let r = conn.challenge(value).await;
        if ok(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "never {what}; last {r:?}");
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_c_sample_registers_goes_unhealthy_on_its_trigger_and_deregisters() {
    let dir = tether_testkit::temp_dir();
    let bin = build_sample(dir.path());
    let host = HostDouble::bind(dir.path());
    let daemon = start_daemon(&host, dir.path());
    let mut conn = host.accept().await;
    conn.register().await;
    let mut app = App::spawn(&bin, dir.path(), "capp", "400", "stop");
    app.expect_line("register_state true").await;
    let healthy = |r: &ChallengeResponse| r.heartbeat_health == Health::Healthy;
    until(&mut conn, "healthy", healthy).await;

    std::fs::write(dir.path().join("capp_unhealthy"), "capp: queue stuck\n").unwrap();
    let r = until(&mut conn, "unhealthy", |r| {
        r.heartbeat_health == Health::Unhealthy
    })
    .await;
    assert_eq!(r.corrective_action, CorrectiveAction::Stop);
    assert_eq!(r.log_msg, "capp: queue stuck");
    // Held back while the same failure goes on.
    let r = conn.challenge(1000).await;
    assert_eq!(
        (r.heartbeat_health, r.corrective_action),
        (Health::Unhealthy, CorrectiveAction::None)
    );

    // Deregistering removes its verdict.
    std::fs::write(dir.path().join("capp_deregister"), "").unwrap();
    app.expect_line("deregistered").await;
    let status = timeout(PATIENCE, app.child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    let r = until(&mut conn, "healthy again", healthy).await;
    assert_eq!(r.log_msg, "");
    daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_killed_app_is_removed_and_a_frozen_one_times_out_then_recovers() {
    let dir = tether_testkit::temp_dir();
    let bin = build_sample(dir.path());
    let host = HostDouble::bind(dir.path());
    let daemon = start_daemon(&host, dir.path());
    let mut conn = host.accept().await;
    conn.register().await;
    let healthy = |r: &ChallengeResponse| r.heartbeat_health == Health::Healthy;

    let mut doomed = App::spawn(&bin, dir.path(), "doomed", "400", "log");
    doomed.expect_line("register_state true").await;
    std::fs::write(dir.path().join("doomed_unhealthy"), "doomed is sick\n").unwrap();
    let r = until(&mut conn, "unhealthy", |r| r.log_msg == "doomed is sick").await;
    assert_eq!(r.corrective_action, CorrectiveAction::Log);
    doomed.signal(Signal::KILL);
    until(&mut conn, "healthy after the kill", healthy).await;

    let mut frozen = App::spawn(&bin, dir.path(), "frozen", "400", "reboot");
    frozen.expect_line("register_state true").await;
    until(&mut conn, "healthy", healthy).await;
    frozen.signal(Signal::STOP);
    let stopped = Instant::now();
    let text = "Application frozen heartbeat timeout 800 ms.";
    let r = until(&mut conn, "timed out", |r| r.log_msg == text).await;
    assert_eq!(r.heartbeat_health, Health::Unhealthy);
    assert_eq!(r.corrective_action, CorrectiveAction::Reboot);
    assert!(Instant::now() - stopped >= Duration::from_millis(400));
    frozen.signal(Signal::CONT);
    until(&mut conn, "healthy after SIGCONT", healthy).await;
    daemon.shutdown().await.unwrap();
}

/// Sends `action_notify` for `event` and returns the `action_response` (other messages are
/// skipped).
async fn ask(
    conn: &mut HostConn,
    event: EventType,
    notification: NotificationType,
) -> ActionResponse {
    conn.send(Message::ActionNotify(ActionNotify {
        invocation_id: 99,
        event_type: event,
        notification_type: notification,
        timeout_ms: 10_000,
    }))
    .await;
    loop {
        if let (Message::ActionResponse(r), _) = conn.recv().await {
            return r;
        }
    }
}

#[tokio::test]
async fn the_c_sample_votes_no_on_its_trigger_and_completes_notifications() {
    let dir = tether_testkit::temp_dir();
    let bin = build_sample(dir.path());
    let host = HostDouble::bind(dir.path());
    let daemon = start_daemon(&host, dir.path());
    let mut conn = host.accept().await;
    conn.register().await;
    let mut app = App::spawn(&bin, dir.path(), "capp", "400", "reboot");
    app.expect_line("register_state true").await;

    std::fs::write(dir.path().join("capp_vote_no_to_stop"), "").unwrap();
    conn.challenge(1).await;
    let r = ask(&mut conn, EventType::Stop, NotificationType::Revocable).await;
    app.expect_line("action_notify stop revocable").await;
    assert_eq!(
        (r.invocation_id, r.vote_result, r.log_msg.as_str()),
        (99, VoteResult::Reject, "capp votes no to stop")
    );
    conn.challenge(2).await;
    let r = ask(&mut conn, EventType::Reboot, NotificationType::Revocable).await;
    assert_eq!(
        (r.vote_result, r.log_msg.as_str()),
        (VoteResult::Accept, "")
    );
    conn.challenge(3).await;
    let r = ask(&mut conn, EventType::Stop, NotificationType::Irrevocable).await;
    app.expect_line("action_notify stop irrevocable").await;
    assert_eq!(r.vote_result, VoteResult::Complete);
    daemon.shutdown().await.unwrap();
}
