//! `tether bench host` as a user runs it: the real agent, load and null-agent processes on a
//! small scale. Asserts what must hold on any machine (every failure detected, no false
//! loss, the JSON complete), never a timing.

use std::process::Command;

use tether_testkit::temp_dir;

const KEYS: [&str; 18] = [
    "guests",
    "interval_ms",
    "duration_s",
    "miss_threshold",
    "agent_cpu_percent",
    "agent_rss_mib",
    "rtt_p50_ms",
    "rtt_p99_ms",
    "challenges_sent",
    "challenges_answered",
    "failed_injected",
    "failed_detected",
    "detect_p50_ms",
    "detect_p99_ms",
    "detect_max_ms",
    "false_losses",
    "baseline_cpu_percent",
    "cpu_ratio",
];

#[test]
fn a_small_host_bench_detects_every_failure_and_nothing_else() {
    let dir = temp_dir();
    let json = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["bench", "host", "--guests", "200", "--interval-ms", "400"])
        .args(["--duration", "5", "--fail", "3", "--baseline-duration", "2"])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| agent CPU |"), "{stdout}");
    assert!(stdout.contains("revision:"), "{stdout}");

    let text = std::fs::read_to_string(&json).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in KEYS {
        assert!(report.get(key).is_some(), "{key} missing from {text}");
    }
    let int = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {text}"))
    };
    assert_eq!(int("guests"), 200);
    assert_eq!(int("failed_injected"), 3, "{text}");
    assert_eq!(int("failed_detected"), 3, "{text}");
    assert_eq!(int("false_losses"), 0, "{text}");
    assert!(int("challenges_sent") > 0, "{text}");
    assert!(
        int("challenges_answered") <= int("challenges_sent"),
        "{text}"
    );
    assert!(int("challenges_answered") > 0, "{text}");
    assert!(report["machine"]["cores"].as_u64().unwrap() > 0, "{text}");
    assert!(report["cpu_ratio"].as_f64().unwrap() > 0.0, "{text}");
}

#[test]
fn a_bench_that_cannot_see_failures_detected_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args([
            "bench",
            "host",
            "--guests",
            "5",
            "--duration",
            "1",
            "--fail",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--duration"), "{stderr}");
}

#[test]
fn the_guest_bench_drives_the_real_daemon() {
    let dir = temp_dir();
    let json = dir.path().join("guest.json");
    let guest = tether_testkit::binary("tether-guest");
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["bench", "guest", "--heartbeats", "300", "--paced-secs", "1"])
        .arg("--guest-bin")
        .arg(&guest)
        .arg("--static-bin")
        .arg(dir.path().join("no-such-binary"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{output:?}");
    assert!(
        stdout.contains("missing: run scripts/build-static-guest"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&json).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["heartbeats"], 300, "{text}");
    assert!(report["rss_mib"].as_f64().unwrap() > 0.0, "{text}");
    assert!(report["cpu_ms_per_1000"].as_f64().unwrap() > 0.0, "{text}");
    assert!(report["static_size_mib"].is_null(), "{text}");
}
