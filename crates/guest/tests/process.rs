//! The built `tether-guest` binary as a real process: signals, exit statuses and the one-line
//! error messages an operator sees.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::HostDouble;
use rustix::process::{kill_process, Pid, Signal};
use tether_proto::{Exit, Message};

const BIN: &str = env!("CARGO_BIN_EXE_tether-guest");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run tether-guest")
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("guest_heartbeat.conf");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn sigterm_sends_exit_and_stops_with_status_0() {
    let dir = tether_testkit::temp_dir();
    let config = write_config(dir.path(), "HB_INTERVAL=1000\n");
    let host = HostDouble::bind(dir.path());
    let device = host.path.display().to_string();
    let api = dir.path().join("api.sock").display().to_string();
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "--config",
            &config,
            "--device",
            &device,
            "--name",
            "proc-vm",
            "--api-socket",
            &api,
        ])
        .env_remove("JOURNAL_STREAM")
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start tether-guest");
    let mut conn = host.accept().await;
    let init = conn.register().await;
    assert_eq!(init.name, "proc-vm");
    conn.challenge(99).await;
    let pid = Pid::from_raw(child.id().unwrap() as i32).unwrap();
    kill_process(pid, Signal::TERM).unwrap();
    let exit = Message::Exit(Exit {
        log_msg: "Exiting...".into(),
    });
    assert_eq!(conn.recv().await.0, exit);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the daemon stops in time")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_bad_config_value_is_one_line_naming_key_value_and_rule() {
    let dir = tether_testkit::temp_dir();
    let config = write_config(dir.path(), "# ok so far\nVOTE=8\nHB_INTERVAL=300\n");
    let output = run(&["--config", &config, "--device", "/dev/null"]);
    assert_eq!(output.status.code(), Some(2));
    let expected = format!(
        "tether-guest: {config}: HB_INTERVAL=300 is invalid: must be an integer of at least 400 (ms)"
    );
    assert_eq!(stderr_lines(&output), [expected]);
    let config = write_config(dir.path(), "CORRECTIVE_ACTION=explode\n");
    let output = run(&["--config", &config]);
    assert_eq!(output.status.code(), Some(2));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0]
        .ends_with("CORRECTIVE_ACTION=explode is invalid: must be one of reboot, stop, log"));
}

#[test]
fn a_missing_explicit_config_and_bad_flags_are_status_2() {
    let output = run(&["--config", "/nonexistent/guest_heartbeat.conf"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr_lines(&output),
        ["tether-guest: Configuration file /nonexistent/guest_heartbeat.conf does not exist"]
    );
    let output = run(&["--frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr_lines(&output),
        ["tether-guest: unknown option --frobnicate (see --help)"]
    );
}

#[test]
fn a_missing_device_is_status_6_with_one_line() {
    let dir = tether_testkit::temp_dir();
    let config = write_config(dir.path(), "");
    let device = dir.path().join("no-such-port");
    let output = run(&[
        "--config",
        &config,
        "--device",
        &device.display().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(6));
    let expected = format!("tether-guest: Device {} does not exist", device.display());
    assert_eq!(stderr_lines(&output), [expected]);
}

#[test]
fn help_and_version_go_to_stdout_with_status_0() {
    let output = run(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "--config FILE",
        "--device PATH",
        "--name NAME",
        "6  the device does not exist",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}");
    }
    let output = run(&["--version"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("tether-guest 0."));
}
