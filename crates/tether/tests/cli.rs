//! The `tether` binary as a user runs it: real processes, real sockets, real signals.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{tether, Guard};
use tether_testkit::temp_dir;

fn poll_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.1 GET over a UNIX socket; returns (status, body).
fn get(socket: &Path, path: &str) -> Option<(u16, String)> {
    let mut stream = UnixStream::connect(socket).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid fits");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn demo_scenario_detects_and_recovers_every_fault_and_exits_zero() {
    let out = tether()
        .args([
            "demo",
            "--scenario",
            "--guests",
            "5",
            "--interval-ms",
            "400",
        ])
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.split("Summary").nth(1).expect("a summary");
    for fault in ["hang", "unhealthy", "crash"] {
        let line = summary.lines().find(|l| l.contains(fault)).expect(fault);
        assert!(
            line.contains("detected after") && line.contains("healthy again after"),
            "{line}"
        );
    }
    assert!(
        summary.contains("2 guests without a fault: 0 corrective actions"),
        "{summary}"
    );
    // The hang and the crash are lost; the agent leaves both to the controller, which orders
    // them (the unhealthy guest asks for its own action, also through the controller).
    let controller = stdout
        .lines()
        .find(|l| l.starts_with("Controller ("))
        .expect("the controller's summary");
    assert!(
        !controller.contains("(0 ordered by the controller)"),
        "{controller}"
    );
}

#[test]
fn host_help_documents_every_flag() {
    let out = tether()
        .args(["host", "--help"])
        .output()
        .expect("help runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--channel-dir",
        "--config",
        "--hypervisor",
        "--exec-template",
        "--qmp-template",
        "--miss-threshold",
        "--journal",
        "--api-socket",
        "--api-listen",
        "--max-recoveries",
        "--recovery-window-secs",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn run_as_tetherctl_the_binary_is_tether_ctl() {
    let dir = temp_dir();
    let link = dir.path().join("tetherctl");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tether"), &link).unwrap();
    let out = Command::new(&link)
        .args(["--controller", "http://127.0.0.1:9", "hosts"])
        .env("TETHER_TOKEN", "t0ken")
        .output()
        .expect("tetherctl runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "cannot reach the controller: {text}"
    );
    let help = Command::new(&link).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--controller") && help.contains("instances"),
        "{help}"
    );
}

#[test]
fn host_refuses_a_config_with_an_unknown_key_and_says_which() {
    let dir = temp_dir();
    let config = dir.path().join("host.toml");
    std::fs::write(&config, "channel_dir = \"/tmp\"\nmiss_treshold = 3\n").unwrap();
    let out = tether()
        .arg("host")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("miss_treshold"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn host_and_sim_processes_heartbeat_and_serve_the_api_until_sigterm() {
    let dir = temp_dir();
    let channels = dir.path().join("channels");
    let sim = tether()
        .args([
            "sim",
            "--guests",
            "3",
            "--interval-ms",
            "400",
            "--channel-dir",
        ])
        .arg(&channels)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sim starts");
    let mut sim = Guard(sim);
    let mut sim_out = BufReader::new(sim.0.stdout.take().expect("sim stdout"));
    let mut listing = String::new();
    for _ in 0..4 {
        sim_out.read_line(&mut listing).expect("sim prints its VMs");
    }
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("vm-")).count(),
        3,
        "{listing}"
    );

    let api = dir.path().join("host.sock");
    let journal = dir.path().join("journal.jsonl");
    let qmp = format!("{}/{{uuid}}.qmp", channels.display());
    let host = tether()
        .args([
            "host",
            "--hypervisor",
            "qmp",
            "--qmp-template",
            &qmp,
            "--channel-dir",
        ])
        .arg(&channels)
        .arg("--api-socket")
        .arg(&api)
        .arg("--journal")
        .arg(&journal)
        .stderr(Stdio::null())
        .spawn()
        .expect("host starts");
    let mut host = Guard(host);

    let body = poll_until("three guests heartbeat", Duration::from_secs(30), || {
        let (status, body) = get(&api, "/v1/instances")?;
        (status == 200 && body.matches("\"heartbeating\"").count() == 3).then_some(body)
    });
    let instances: serde_json::Value = serde_json::from_str(&body).unwrap();
    let uuid = instances[0]["uuid"].as_str().unwrap().to_owned();
    let (status, one) = get(&api, &format!("/v1/instances/{uuid}")).unwrap();
    assert_eq!(status, 200);
    assert!(one.contains(&uuid));
    let (status, missing) = get(&api, "/v1/instances/no-such-instance").unwrap();
    assert_eq!(status, 404);
    assert!(missing.contains("not_found"), "{missing}");

    // A fault injected through the simulator's stdin is seen and recovered by the agent.
    let stdin = sim.0.stdin.as_mut().unwrap();
    writeln!(stdin, "hang vm-1").unwrap();
    stdin.flush().unwrap();
    poll_until(
        "the hung guest is reset and heartbeats again",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&journal).ok()?;
            let done = text.lines().any(|l| l.contains("\"recovery_done\""));
            let (_, body) = get(&api, "/v1/instances")?;
            (done && body.matches("\"heartbeating\"").count() == 3).then_some(())
        },
    );

    sigterm(&host.0);
    let status = poll_until("the agent exits", Duration::from_secs(10), || {
        host.0.try_wait().ok()?
    });
    assert!(status.success(), "agent exit status {status}");
    assert!(!api.exists(), "the API socket is removed on shutdown");
    for line in std::fs::read_to_string(&journal).unwrap().lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            event["ts"].is_string() && event["instance"].is_string() && event["event"].is_string()
        );
    }
}
