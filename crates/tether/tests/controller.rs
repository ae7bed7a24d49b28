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
    let config = ControllerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        data_dir: data_dir.to_path_buf(),
        token: TOKEN.to_owned(),
        starlingx_listen: None,
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
