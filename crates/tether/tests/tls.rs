//! TLS between the host agent and the controller, end to end: a controller serving HTTPS
//! in-process (certificates from throwaway CAs made when the test runs), the `tether host`
//! binary as a real process reporting to it and serving its own API over HTTPS, simulated VMs
//! running the real guest daemon, and the `tether ctl` binary reading it back and rebooting a
//! VM through both links; then the flags and files that must be refused.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{read_journal, tether, Guard, Rig, LONG};
use serde_json::Value;
use tether_controller::{Controller, ControllerConfig, ServerCert};
use tether_proto::CorrectiveAction;
use tether_sim::Fault;
use tether_testkit::pki::{TestCa, TestPki};
use tether_testkit::{temp_dir, wait_for};
use tokio::sync::oneshot;

const TOKEN: &str = "s3cret-token-for-tls-tests";
const HOST: &str = "compute-tls";

/// A controller serving HTTPS on loopback with `pki`'s certificate, trusting `host_ca` for
/// host agents' APIs; stops when dropped.
async fn start_controller(
    data_dir: &Path,
    pki: &TestPki,
    host_ca: &Path,
) -> (SocketAddr, oneshot::Sender<()>) {
    let config = ControllerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.to_path_buf(),
        token: TOKEN.to_owned(),
        starlingx_listen: None,
        vim_url: None,
        tls: Some(ServerCert {
            cert: pki.cert.clone(),
            key: pki.key.clone(),
        }),
        webhook_ca: None,
        host_ca: Some(host_ca.to_path_buf()),
    };
    let mut controller = Controller::open(config).unwrap();
    let addr = controller.bind().await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(controller.run(async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// `tether host` for the rig's VMs, reporting to `url` trusting `ca`, with `extra` flags; its
/// log goes to `log`.
fn start_host(rig: &Rig, url: &str, ca: &Path, extra: &[&Path], log: &Path) -> Guard {
    let config = &rig.config;
    let child = tether()
        .arg("host")
        .args(extra)
        .arg("--channel-dir")
        .arg(&config.channel_dir)
        .args(["--hypervisor", "qmp", "--miss-threshold", "1"])
        .arg("--qmp-template")
        .arg(config.qmp_template.as_deref().unwrap())
        .arg("--journal")
        .arg(&config.journal)
        .arg("--api-socket")
        .arg(&config.api_socket)
        .args(["--controller", url, "--host-name", HOST])
        .arg("--controller-ca")
        .arg(ca)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Guard(child)
}

/// Stops a host agent with SIGTERM and waits for it to exit.
fn stop_host(mut host: Guard) {
    let pid = host.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = host.0.wait().unwrap();
    assert!(status.success(), "host agent exit status {status}");
}

/// `tether ctl` with `args`; the exit code, stdout and stderr.
fn ctl(url: &str, token_file: &Path, args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = tether()
        .args(["ctl", "--controller", url, "--token-file"])
        .arg(token_file)
        .args(args)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (status.code().unwrap_or(-1), text(stdout), text(stderr))
}

fn ctl_json(url: &str, token_file: &Path, ca: &Path, args: &[&str]) -> Value {
    let ca = ca.to_string_lossy();
    let mut all = vec!["--ca-file", &ca, "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = ctl(url, token_file, &all);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

/// The seqs the controller holds for the host.
fn controller_seqs(url: &str, token_file: &Path, ca: &Path) -> Vec<u64> {
    let args = ["events", "--host", HOST, "--limit", "1000"];
    let events = ctl_json(url, token_file, ca, &args);
    let mut seqs: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    seqs.sort_unstable();
    seqs
}

fn journal_seqs(journal: &Path) -> Vec<u64> {
    read_journal(journal)
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect()
}

fn write_token(dir: &Path) -> PathBuf {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    token_file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reports_over_tls_only_once_it_trusts_the_controller_and_loses_nothing() {
    let mut rig = Rig::start(2, CorrectiveAction::Reboot, 1).await;
    rig.stop_agent().await; // the real process takes over
    let dir = rig.dir.path().to_path_buf();
    let token_file = write_token(&dir);
    let pki = TestCa::new("controller CA").write(&dir, "", &["127.0.0.1"]);
    let wrong = TestCa::new("some other CA").write(&dir, "wrong-", &["127.0.0.1"]);
    let hosts_pki = TestCa::new("hosts' CA").write(&dir, "host-", &["127.0.0.1"]);
    let (addr, _stop) = start_controller(&dir.join("controller"), &pki, &hosts_pki.ca).await;
    let url = format!("https://{addr}");

    // Trusting the wrong CA: the agent works, journals, and says why it cannot report.
    let log = dir.join("host-wrong-ca.log");
    let token = [Path::new("--token-file"), &token_file];
    let host = start_host(&rig, &url, &wrong.ca, &token, &log);
    let hung = rig.vm(0).clone();
    wait_for("the agent heartbeats both guests", LONG, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.matches("Heartbeat started").count() == 2
    })
    .await;
    hung.set_fault(Fault::Hang);
    wait_for("the hung guest is recovered", LONG, || hung.resets() == 1).await;
    wait_for("the agent logs the untrusted certificate", LONG, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("TLS certificate is not trusted") && text.contains("UnknownIssuer")
    })
    .await;
    let hosts = ctl_json(&url, &token_file, &pki.ca, &["hosts"]);
    assert_eq!(hosts, Value::Array(Vec::new()), "nothing registered");
    stop_host(host);
    let journaled = journal_seqs(&rig.config.journal);
    assert!(journaled.len() >= 4, "{journaled:?}");

    // Restarted with the controller's CA: it registers and every journaled event arrives. It
    // serves its own API over HTTPS now.
    let log = dir.join("host-right-ca.log");
    let api = [
        Path::new("--api-listen"),
        Path::new("127.0.0.1:0"),
        Path::new("--api-tls-cert"),
        &hosts_pki.cert,
        Path::new("--api-tls-key"),
        &hosts_pki.key,
    ];
    let host = start_host(&rig, &url, &pki.ca, &[&token[..], &api[..]].concat(), &log);
    wait_for("every journaled event reaches the controller", LONG, || {
        let held = controller_seqs(&url, &token_file, &pki.ca);
        journaled.iter().all(|seq| held.contains(seq))
    })
    .await;
    let held = controller_seqs(&url, &token_file, &pki.ca);
    let mut unique = held.clone();
    unique.dedup();
    assert_eq!(held, unique, "no event stored twice");
    let lost = ctl_json(
        &url,
        &token_file,
        &pki.ca,
        &[
            "events",
            "--instance",
            hung.uuid(),
            "--type",
            "heartbeat_lost",
        ],
    );
    assert_eq!(lost.as_array().map(Vec::len), Some(1), "{lost}");

    // tether ctl over TLS: a table with --ca-file; refused without it or over plain HTTP.
    let ca = pki.ca.to_string_lossy().into_owned();
    let (code, table, err) = ctl(&url, &token_file, &["--ca-file", &ca, "hosts"]);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains(HOST), "{table}");
    let (code, _, err) = ctl(&url, &token_file, &["hosts"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--ca-file") && err.contains("UnknownIssuer"),
        "{err}"
    );
    let (code, _, err) = ctl(&format!("http://{addr}"), &token_file, &["hosts"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("400") && err.contains("https://"), "{err}");

    // A reboot through the controller, which calls the agent's API over HTTPS.
    let shown = ctl_json(&url, &token_file, &pki.ca, &["hosts", "show", HOST]);
    let api_url = shown["api_url"].as_str().unwrap_or_default();
    assert!(api_url.starts_with("https://127.0.0.1:"), "{shown}");
    let vm = rig.vm(1).clone();
    let args = ["--ca-file", &ca, "instance", "reboot", vm.uuid()];
    let (code, steps, err) = ctl(&url, &token_file, &args);
    assert_eq!(code, 0, "{steps}{err}");
    assert!(steps.contains("reboot: done"), "{steps}");
    wait_for("the rebooted VM was reset", LONG, || vm.resets() == 1).await;
    stop_host(host);
}

/// Runs `tether` with `args` to its end (it must not start serving); exit code and stderr.
fn refused(args: &[&str]) -> (i32, String) {
    let output = tether().args(args).stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().unwrap_or(-1), stderr)
}

#[test]
fn bad_tls_flags_and_files_are_refused_with_the_reason() {
    let dir = temp_dir();
    let pki = TestCa::new("CA").write(dir.path(), "", &["127.0.0.1"]);
    let token_file = write_token(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n@@@\n").unwrap();
    let data = dir.path().join("data");
    let journal = dir.path().join("journal.jsonl");
    let api = dir.path().join("host.sock");
    let channels = dir.path().join("channels");
    std::fs::create_dir_all(&channels).unwrap();
    let p = |path: &Path| path.to_string_lossy().into_owned();
    let (token, ca, cert, key, bad) = (
        p(&token_file),
        p(&pki.ca),
        p(&pki.cert),
        p(&pki.key),
        p(&garbage),
    );
    let controller = |extra: &[&str]| {
        let mut args = vec!["controller", "--listen", "127.0.0.1:0", "--data-dir"];
        let data = p(&data);
        args.extend([data.as_str(), "--token-file", token.as_str()]);
        args.extend_from_slice(extra);
        refused(&args)
    };
    let host = |extra: &[&str]| {
        let (journal, api, channels) = (p(&journal), p(&api), p(&channels));
        let mut args = vec!["host", "--journal", &journal, "--api-socket", &api];
        args.extend([
            "--channel-dir",
            channels.as_str(),
            "--token-file",
            token.as_str(),
        ]);
        args.extend_from_slice(extra);
        refused(&args)
    };
    let missing = p(&dir.path().join("missing.pem"));
    let cases = [
        (controller(&["--tls-cert", &cert]), "--tls-key"),
        (controller(&["--tls-key", &key]), "--tls-cert"),
        (
            controller(&["--tls-cert", &missing, "--tls-key", &key]),
            "missing.pem",
        ),
        (
            controller(&["--tls-cert", &cert, "--tls-key", &bad]),
            "not valid PEM",
        ),
        (
            controller(&["--tls-cert", &key, "--tls-key", &cert]),
            "no PEM certificate",
        ),
        (controller(&["--webhook-ca", &bad]), "webhook subscribers"),
        (controller(&["--host-ca", &missing]), "host agents"),
        (
            host(&["--controller", "http://127.0.0.1:9", "--controller-ca", &ca]),
            "https://",
        ),
        (
            host(&[
                "--controller",
                "https://127.0.0.1:9",
                "--controller-ca",
                &bad,
            ]),
            "garbage.pem",
        ),
        (
            host(&[
                "--controller",
                "https://127.0.0.1:9",
                "--controller-ca",
                &missing,
            ]),
            "missing.pem",
        ),
        (host(&["--controller", "ftp://127.0.0.1:9"]), "https://"),
        (host(&["--api-tls-cert", &cert]), "go together"),
        (
            host(&["--api-tls-cert", &cert, "--api-tls-key", &key]),
            "api_listen",
        ),
        (
            host(&[
                "--api-listen",
                "127.0.0.1:0",
                "--api-tls-cert",
                &cert,
                "--api-tls-key",
                &bad,
            ]),
            "garbage.pem is not valid PEM",
        ),
    ];
    for ((code, stderr), says) in cases {
        assert_eq!(code, 2, "{says}: {stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
    let ctl = |url: &str, ca: &str| {
        refused(&[
            "ctl",
            "--controller",
            url,
            "--token-file",
            &token,
            "--ca-file",
            ca,
            "hosts",
        ])
    };
    for ((code, stderr), says) in [
        (ctl("https://127.0.0.1:9", &bad), "garbage.pem"),
        (ctl("http://127.0.0.1:9", &ca), "https://"),
    ] {
        assert_eq!(code, 2, "{says}: {stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
    assert!(!data.join("controller.db").exists());
}
