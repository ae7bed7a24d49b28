//! The QMP backend against the simulated VMs of `tether-sim`, through their real sockets.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tether_hypervisor::qmp::QmpClient;
use tether_hypervisor::{Action, Hypervisor, Instance, QmpBackend};
use tether_sim::{Sim, SimConfig, VmStatus};
use tether_testkit::{temp_dir, wait_for};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

async fn sim(dir: &std::path::Path) -> Sim {
    let mut config = SimConfig::new(dir.join("channels"), dir.join("private"));
    config.boot_delay = Duration::from_millis(20);
    Sim::start(config, 1).await.unwrap()
}

#[tokio::test]
async fn reboot_resets_and_resumes_a_paused_simulated_vm() {
    let dir = temp_dir();
    let sim = sim(dir.path()).await;
    let vm = &sim.vms()[0];
    let mut client = QmpClient::connect(vm.qmp_path()).await.unwrap();
    client.execute("stop", None).await.unwrap();
    assert_eq!(client.next_event().await.unwrap()["event"], "STOP");
    drop(client);
    wait_for("the monitor is free", Duration::from_secs(2), || {
        vm.status() == VmStatus::Paused
    })
    .await;

    let template = dir.path().join("channels/{uuid}.qmp").display().to_string();
    let instance = Instance {
        uuid: vm.uuid().to_owned(),
        name: vm.name().to_owned(),
    };
    QmpBackend::new(template)
        .apply(&instance, Action::Reboot)
        .await
        .unwrap();

    assert_eq!(vm.resets(), 1);
    assert_eq!(vm.status(), VmStatus::Running);
    let log = vm.qmp_log();
    assert_eq!(
        log[log.len() - 4..],
        ["qmp_capabilities", "system_reset", "query-status", "cont"]
    );
}

#[tokio::test]
async fn stop_quits_a_simulated_vm() {
    let dir = temp_dir();
    let sim = sim(dir.path()).await;
    let vm = &sim.vms()[0];
    let mut channel = UnixStream::connect(vm.channel_path()).await.unwrap();

    let template = dir.path().join("channels/{uuid}.qmp").display().to_string();
    let instance = Instance {
        uuid: vm.uuid().to_owned(),
        name: String::new(),
    };
    QmpBackend::new(template)
        .apply(&instance, Action::Stop)
        .await
        .unwrap();

    wait_for("the VM stops", Duration::from_secs(2), || {
        vm.status() == VmStatus::Stopped
    })
    .await;
    let mut buf = [0u8; 1024];
    let eof = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if channel.read(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        }
    });
    eof.await.expect("the channel ends when the VM quits");
    wait_for("the QMP socket is removed", Duration::from_secs(2), || {
        !vm.qmp_path().exists()
    })
    .await;
}
