//! A hundred simulated VMs in one process, each heartbeating with its own host double.

#![allow(clippy::unwrap_used)]

mod common;

use common::{start, Heard, HostDouble};
use std::time::Duration;
use tether_sim::VmStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_vms_heartbeat_side_by_side() {
    let (dir, sim) = start(100).await;
    let mut hosts = Vec::new();
    for vm in sim.vms() {
        let path = vm.channel_path();
        hosts.push(tokio::spawn(
            async move { HostDouble::handshake(&path).await },
        ));
    }
    let mut connected = Vec::new();
    for host in hosts {
        connected.push(host.await.unwrap());
    }
    for (round, (host, _)) in connected.iter_mut().enumerate() {
        let challenge = 1000 + round as u32;
        host.challenge(challenge).await;
        host.expect_response(challenge).await;
    }

    let vms = sim.vms().to_vec();
    sim.shutdown().await;
    for ((host, _), vm) in connected.iter_mut().zip(&vms) {
        assert_eq!(host.hear(Duration::from_secs(2)).await, Heard::Eof);
        assert_eq!(vm.status(), VmStatus::Stopped);
    }
    let left = std::fs::read_dir(dir.path().join("channels"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "channel and QMP sockets are removed");
}
