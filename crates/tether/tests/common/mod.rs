#![allow(dead_code)] // each test file uses part of the rig

//! The rig of the end-to-end tests: the real host agent against simulated VMs that run the
//! real guest daemon, over real channel sockets and real QMP, in one process.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tether_guest::GuestConfig;
use tether_host::operations::Operations;
use tether_host::{build_hypervisor, AgentView, GuestState, HostAgent, HostConfig, HypervisorKind};
use tether_proto::CorrectiveAction;
use tether_sim::{Sim, SimConfig, SimVm};
use tether_testkit::{temp_dir, wait_for, TempDir};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const INTERVAL_MS: u32 = 400;
pub const LONG: Duration = Duration::from_secs(30);

/// Simulated VMs plus a running host agent, all under one temp dir.
pub struct Rig {
    pub dir: TempDir,
    pub sim: Sim,
    pub config: HostConfig,
    agent: Option<RunningAgent>,
}

struct RunningAgent {
    view: AgentView,
    operations: Operations,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Rig {
    pub async fn start(guests: usize, action: CorrectiveAction, miss_threshold: u32) -> Rig {
        let guest = GuestConfig {
            heartbeat_interval_ms: INTERVAL_MS,
            corrective_action: action,
            ..GuestConfig::default()
        };
        let boot_delay = Duration::from_millis(100);
        Rig::with_guest(guests, miss_threshold, boot_delay, |_| guest).await
    }

    /// VMs that take `boot_delay` to boot, whose guests run the configuration `guest` makes
    /// (it may put files in the rig's temp dir, which it is given).
    pub async fn with_guest(
        guests: usize,
        miss_threshold: u32,
        boot_delay: Duration,
        guest: impl FnOnce(&Path) -> GuestConfig,
    ) -> Rig {
        let dir = temp_dir();
        let guest = guest(dir.path());
        let channel_dir = dir.path().join("channels");
        let sim_config = SimConfig {
            guest,
            boot_delay,
            ..SimConfig::new(&channel_dir, dir.path().join("vms"))
        };
        let sim = Sim::start(sim_config, guests)
            .await
            .expect("simulated VMs start");
        let config = HostConfig {
            channel_dir: channel_dir.clone(),
            hypervisor: HypervisorKind::Qmp,
            qmp_template: Some(format!("{}/{{uuid}}.qmp", channel_dir.display())),
            miss_threshold,
            journal: dir.path().join("journal.jsonl"),
            api_socket: dir.path().join("host.sock"),
            ..HostConfig::default()
        };
        let mut rig = Rig {
            dir,
            sim,
            config,
            agent: None,
        };
        rig.start_agent();
        rig
    }

    pub fn start_agent(&mut self) {
        let hypervisor = build_hypervisor(&self.config).expect("hypervisor backend");
        let agent = HostAgent::new(self.config.clone(), hypervisor).expect("agent starts");
        let view = agent.view();
        let operations = agent.operations();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            agent
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("agent runs cleanly");
        });
        self.agent = Some(RunningAgent {
            view,
            operations,
            stop,
            task,
        });
    }

    pub async fn stop_agent(&mut self) {
        let agent = self.agent.take().expect("an agent runs");
        let _ = agent.stop.send(());
        agent.task.await.expect("agent task ends");
    }

    pub fn view(&self) -> &AgentView {
        &self.agent.as_ref().expect("an agent runs").view
    }

    pub fn operations(&self) -> &Operations {
        &self.agent.as_ref().expect("an agent runs").operations
    }

    pub fn vm(&self, index: usize) -> &SimVm {
        &self.sim.vms()[index]
    }

    pub fn state(&self, vm: &SimVm) -> Option<GuestState> {
        self.view().instance(vm.uuid()).map(|s| s.state)
    }

    pub async fn wait_all_heartbeating(&self) {
        wait_for("every guest heartbeats", LONG, || {
            self.sim
                .vms()
                .iter()
                .all(|vm| self.state(vm) == Some(GuestState::Heartbeating))
        })
        .await;
    }

    pub fn journal(&self) -> Vec<Value> {
        read_journal(&self.config.journal)
    }

    /// The journal event names for one instance, in order.
    pub fn events_of(&self, vm: &SimVm) -> Vec<String> {
        self.journal()
            .iter()
            .filter(|e| e["instance"] == vm.uuid())
            .filter_map(|e| e["event"].as_str().map(str::to_owned))
            .collect()
    }

    pub fn count(&self, event: &str) -> usize {
        self.journal()
            .iter()
            .filter(|e| e["event"] == event)
            .count()
    }
}

/// The `tether` binary under test.
pub fn tether() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
}

/// Kills the child when a test ends, passed or not.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn read_journal(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line {l:?}: {e}")))
        .collect()
}
