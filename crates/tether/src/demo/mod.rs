//! `tether demo`: a host agent and simulated VMs in one process, with a live table.
//!
//! Every simulated VM runs the real guest daemon behind a QEMU stand-in, with an event
//! script that votes on lifecycle operations; the agent discovers their channel sockets,
//! heartbeats them, and recovers them through real QMP. With `--scenario` the demo hangs one
//! guest, makes another unhealthy and crashes a third, waits until the agent has detected and
//! recovered each; then a guest vetoes a stop, and another is rebooted, paused and unpaused
//! with notice before and after and no false heartbeat loss; it prints a summary and exits.
//! Without it the demo runs until Ctrl-C. A controller runs beside them (its SQLite database
//! in the demo's directory, its API on a free loopback port) and the agent reports to it, so
//! `tether ctl` can be tried against the URL and token file the demo prints.

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

    let controller = start_controller(&dir).await?;
    let mut config = agent_config(&dir, &channel_dir)?;
    config.controller = Some(controller.url.clone());
    config.controller_token_file = Some(controller.token_file.clone());
    config.host_name = Some("demo-host".into());
    // The controller calls the agent back here to order recoveries (built-in mode).
    config.api_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let hypervisor = tether_host::build_hypervisor(&config)?;
    let agent = HostAgent::new(config, hypervisor).context("Cannot start the host agent")?;
    let view = agent.view();
    let operations = agent.operations();
    let (stop_agent, stopped) = oneshot::channel::<()>();
    let agent_task = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));

    let journal = dir.join("journal.jsonl");
    let tty = std::io::stdout().is_terminal();
    if !tty {
        println!("{}\n", controller.hint());
    }
    let screen = Screen::new(tty, controller.hint());
    let outcome = if args.scenario {
        scenario::run(&sim, &view, &operations, &screen, &journal).await
    } else {
        watch_until_signal(&sim, &view, &screen, &journal).await;
        Ok(())
    };

    let _ = stop_agent.send(());
    let _ = agent_task.await;
    sim.shutdown().await;
    if args.scenario && outcome.is_ok() {
        controller.summary().await;
    }
    controller.stop().await;
    outcome
}

/// The demo's controller.
struct DemoController {
    url: String,
    token_file: PathBuf,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl DemoController {
    /// What to type to look at it.
    fn hint(&self) -> String {
        format!(
            "Controller: {url} (token in {token}). Try:\n  \
             tether ctl --controller {url} --token-file {token} instances\n  \
             tether ctl --controller {url} --token-file {token} events --follow",
            url = self.url,
            token = self.token_file.display()
        )
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }

    /// Prints what the controller learned from the agent, read back through its API.
    async fn summary(&self) {
        let token = std::fs::read_to_string(&self.token_file).unwrap_or_default();
        let Ok(client) = crate::ctl::ControllerClient::new(&self.url, token) else {
            return;
        };
        let instances = client.get("/v1/instances?host=demo-host").await;
        let events = client.get("/v1/events?host=demo-host&limit=1000").await;
        let (Ok(instances), Ok(events)) = (instances, events) else {
            println!("Controller: could not be read back");
            return;
        };
        let events = events["events"].as_array().cloned().unwrap_or_default();
        let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
        let ordered = events
            .iter()
            .filter(|e| e["event"] == "recovery_started" && e["details"]["by"] == "controller")
            .count();
        println!(
            "Controller ({}): {} instances of demo-host, {} events stored: {} heartbeat_lost, \
             {} guest_unhealthy, {} recovery_done ({} ordered by the controller), \
             {} operation_finished",
            self.url,
            instances.as_array().map_or(0, Vec::len),
            events.len(),
            count("heartbeat_lost"),
            count("guest_unhealthy"),
            count("recovery_done"),
            ordered,
            count("operation_finished"),
        );
    }
}

/// Starts a controller on a free loopback port with a fresh token, its data under `dir`.
async fn start_controller(dir: &Path) -> anyhow::Result<DemoController> {
    let token = random_token().context("Cannot make a token for the demo's controller")?;
    let token_file = dir.join("token");
    std::fs::write(&token_file, &token)
        .with_context(|| format!("Cannot write {}", token_file.display()))?;
    let config = tether_controller::ControllerConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.join("controller"),
        token,
        starlingx_listen: None,
        vim_url: None,
        tls: None,
        webhook_ca: None,
        host_ca: None,
    };
    let mut controller =
        tether_controller::Controller::open(config).context("Cannot open the demo's controller")?;
    let addr = controller
        .bind()
        .await
        .context("Cannot start the demo's controller")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let result = controller
            .run(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %crate::chain(&e), "The demo's controller failed");
        }
    });
    Ok(DemoController {
        url: format!("http://{addr}"),
        token_file,
        stop,
        task,
    })
}

/// 128 bits from the kernel's random source, as hex.
fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
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
    footer: String,
}

impl Screen {
    fn new(tty: bool, footer: String) -> Self {
        Screen { tty, footer }
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
        if self.tty {
            text.push('\n');
            text.push_str(&self.footer);
            text.push('\n');
        }
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
