//! `tether sim`: simulated VMs for tests, benchmarks and trying out `tether host`.
//!
//! Each VM listens on its channel socket and QMP socket exactly as QEMU does and runs the real
//! guest daemon inside. Commands on standard input inject faults (`hang vm-3`, `unhealthy vm-2
//! disk full`, …; `list` shows the VMs); the VMs run until SIGINT or SIGTERM, also after
//! standard input closes.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tether_guest::GuestConfig;
use tether_proto::CorrectiveAction;
use tether_sim::{command, Sim, SimConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::ConfigProblem;

/// Flags of `tether sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Directory for the channel sockets: point `tether host --channel-dir` here.
    #[arg(long)]
    channel_dir: PathBuf,
    /// Directory for the QMP sockets `<uuid>.qmp` (default: the channel directory).
    #[arg(long)]
    qmp_dir: Option<PathBuf>,
    /// Directory for the VMs' private files (default: `<channel-dir>/.sim`).
    #[arg(long)]
    private_dir: Option<PathBuf>,
    /// Number of VMs.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    guests: u32,
    /// The guests' configuration, a `guest_heartbeat.conf` (default: built-in defaults).
    #[arg(long)]
    guest_config: Option<PathBuf>,
    /// Heartbeat interval the guests ask for, in milliseconds (overrides the file).
    #[arg(long, value_parser = clap::value_parser!(u32).range(400..))]
    interval_ms: Option<u32>,
    /// Corrective action the guests ask for: reboot, stop or log (overrides the file).
    #[arg(long, value_parser = parse_action)]
    corrective_action: Option<CorrectiveAction>,
}

fn parse_action(text: &str) -> Result<CorrectiveAction, String> {
    match text.parse() {
        Ok(a @ (CorrectiveAction::Reboot | CorrectiveAction::Stop | CorrectiveAction::Log)) => {
            Ok(a)
        }
        _ => Err(format!("{text:?} is not one of reboot, stop, log")),
    }
}

/// Starts the VMs and serves commands until a signal.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    crate::logging::init("warn");
    let mut guest = match &args.guest_config {
        Some(path) => GuestConfig::load(path).map_err(|e| ConfigProblem(crate::chain(&e)))?,
        None => GuestConfig::default(),
    };
    if let Some(ms) = args.interval_ms {
        guest.heartbeat_interval_ms = ms;
    }
    if let Some(action) = args.corrective_action {
        guest.corrective_action = action;
    }
    let private_dir = args
        .private_dir
        .clone()
        .unwrap_or_else(|| args.channel_dir.join(".sim"));
    let qmp_dir = args
        .qmp_dir
        .clone()
        .unwrap_or_else(|| args.channel_dir.clone());
    let config = SimConfig {
        guest,
        ..SimConfig::new(&args.channel_dir, private_dir)
    };
    let count = usize::try_from(args.guests).context("Too many guests")?;
    let sim = Sim::start_with_qmp_dir(config, count, &qmp_dir)
        .await
        .context("Cannot start the simulated VMs")?;
    print!("{}", sim.listing());
    println!("commands: {}", command::USAGE);

    serve_commands(&sim).await;
    sim.shutdown().await;
    Ok(())
}

async fn serve_commands(sim: &Sim) {
    let signal = crate::shutdown::signalled();
    tokio::pin!(signal);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = &mut signal => return,
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => println!("{}", answer(sim, &line).await),
                Ok(None) | Err(_) => stdin_open = false,
            },
        }
    }
}

async fn answer(sim: &Sim, line: &str) -> String {
    match command::parse(line) {
        Ok(cmd) => match sim.apply(&cmd).await {
            Ok(text) => text.trim_end().to_owned(),
            Err(e) => format!("error: {}", crate::chain(&e)),
        },
        Err(e) => format!("error: {e}"),
    }
}
