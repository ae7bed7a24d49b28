//! `tether demo`: a host agent and simulated VMs in one process, with a live table.
//!
//! Every simulated VM runs the real guest daemon behind a QEMU stand-in, with an event
//! script that votes on lifecycle operations; the agent discovers their channel sockets,
//! heartbeats them, and recovers them through real QMP. With `--scenario` the demo hangs one
//! guest, makes another unhealthy and crashes a third, waits until the agent has detected and
//! recovered each; then a guest vetoes a stop, and another is rebooted, paused and unpaused
//! with notice before and after and no false heartbeat loss; it prints a summary and exits.
//! Without it the demo runs until Ctrl-C.

mod scenario;
mod table;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser};
use tether_guest::GuestConfig;
use tether_host::{AgentView, HostAgent, HostArgs, HostConfig};
use tether_proto::CorrectiveAction;
use tether_sim::{Sim, SimConfig};
use tokio::sync::oneshot;

/// Flags of `tether demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of simulated VMs.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=200))]
    guests: u16,
    /// Hang one guest, make one unhealthy and crash one; exit once all are recovered.
    #[arg(long)]
    scenario: bool,
    /// Heartbeat interval the guests ask for, in milliseconds (at least 400).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(400..))]
    interval_ms: u32,
    /// Keep the demo's sockets and journal in this directory instead of a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Parses the agent's own flags, so the demo configures it exactly as an operator would.
#[derive(Debug, Parser)]
struct AgentFlags {
    #[command(flatten)]
    args: HostArgs,
}

/// Runs the demo until the scenario ends or Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::logging::init("error");
    let temp;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile_dir()?;
            temp.path().to_path_buf()
        }
    };
    let channel_dir = dir.join("channels");
    let private_dir = dir.join("vms");
    for d in [&channel_dir, &private_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("Cannot create {}", d.display()))?;
    }

    let guest = GuestConfig {
        heartbeat_interval_ms: args.interval_ms,
        corrective_action: CorrectiveAction::Reboot,
        ..GuestConfig::default()
    };
    let sim_config = SimConfig {
        channel_dir: channel_dir.clone(),
        private_dir,
        guest,
        boot_delay: Duration::from_millis(300),
        event_script: true,
    };
    let sim = Sim::start(sim_config, usize::from(args.guests))
        .await
        .context("Cannot start the simulated VMs")?;

    let config = agent_config(&dir, &channel_dir)?;
    let hypervisor = tether_host::build_hypervisor(&config)?;
    let agent = HostAgent::new(config, hypervisor).context("Cannot start the host agent")?;
    let view = agent.view();
    let operations = agent.operations();
    let (stop_agent, stopped) = oneshot::channel::<()>();
    let agent_task = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));

    let journal = dir.join("journal.jsonl");
    let screen = Screen::new(std::io::stdout().is_terminal());
    let outcome = if args.scenario {
        scenario::run(&sim, &view, &operations, &screen, &journal).await
    } else {
        watch_until_signal(&sim, &view, &screen, &journal).await;
        Ok(())
    };

    let _ = stop_agent.send(());
    let _ = agent_task.await;
    sim.shutdown().await;
    outcome
}

fn agent_config(dir: &Path, channel_dir: &Path) -> anyhow::Result<HostConfig> {
    let qmp_template = channel_dir.join("{uuid}.qmp");
    let flags = AgentFlags::try_parse_from([
        "tether-host".as_ref(),
        "--channel-dir".as_ref(),
        channel_dir.as_os_str(),
        "--hypervisor".as_ref(),
        "qmp".as_ref(),
        "--qmp-template".as_ref(),
        qmp_template.as_os_str(),
        "--journal".as_ref(),
        dir.join("journal.jsonl").as_os_str(),
        "--api-socket".as_ref(),
        dir.join("host.sock").as_os_str(),
    ])
    .context("Cannot configure the demo's host agent")?;
    let mut config = HostConfig::default();
    flags.args.apply(&mut config);
    Ok(config)
}

fn tempfile_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("tether-demo-")
        .tempdir_in("/tmp")
        .context("Cannot create a temporary directory")
}

async fn watch_until_signal(sim: &Sim, view: &AgentView, screen: &Screen, journal: &Path) {
    let signal = crate::shutdown::signalled();
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(screen.refresh());
    loop {
        tokio::select! {
            _ = &mut signal => break,
            _ = tick.tick() => screen.draw(sim, view, journal, "Running until Ctrl-C."),
        }
    }
}

/// Where the table goes: redrawn in place on a terminal, printed now and then elsewhere.
pub(crate) struct Screen {
    tty: bool,
}

impl Screen {
    fn new(tty: bool) -> Self {
        Screen { tty }
    }

    pub(crate) fn refresh(&self) -> Duration {
        if self.tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(2)
        }
    }

    pub(crate) fn draw(&self, sim: &Sim, view: &AgentView, journal: &Path, note: &str) {
        let statuses = view.instances();
        let rows: Vec<table::Row<'_>> = sim
            .vms()
            .iter()
            .map(|vm| table::Row {
                status: statuses.iter().find(|s| s.uuid == vm.uuid()),
                vm: vm.name(),
                uuid: vm.uuid(),
                fault: scenario::describe_fault(&vm.fault()),
            })
            .collect();
        let mut text = String::new();
        if self.tty {
            text.push_str("\x1b[H\x1b[2J");
        }
        text.push_str(
            "tether demo: a host agent heartbeating simulated VMs over their channel sockets\n\n",
        );
        text.push_str(&table::render(&rows));
        text.push_str("\nRecent events:\n");
        for line in recent_events(journal, 8) {
            text.push_str("  ");
            text.push_str(&line);
            text.push('\n');
        }
        text.push('\n');
        text.push_str(note);
        text.push('\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// The last `n` journal events as short lines (`12:00:01.250 vm-3 heartbeat_lost …`).
fn recent_events(journal: &Path, n: usize) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(journal) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .filter_map(|l| scenario::describe_event(l))
        .collect()
}
