//! `tether`: one binary for the host agent, the simulator, the demo, the benchmarks and the
//! operator's CLI (`tether ctl`), as subcommands.
//!
//! Run as `tetherctl` (a link to this binary), it is `tether ctl`.
//!
//! Exit status: 0 on success or a clean shutdown, 1 when the command failed at run time, 2 for
//! bad flags or configuration (clap's own convention for usage errors); `tether ctl` adds 3
//! (no such host or instance) and 4 (token refused).

mod bench_cmd;
mod controller_cmd;
mod ctl;
mod demo;
mod host_cmd;
mod logging;
mod shutdown;
mod sim_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// High availability for KVM/QEMU VMs and the applications inside them.
#[derive(Debug, Parser)]
#[command(name = "tether", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the compute host agent: discover guest channels, heartbeat every guest, recover
    /// failed ones through the hypervisor.
    Host(Box<host_cmd::HostCmd>),
    /// Run a host agent and simulated VMs in one process and watch heartbeats, failures and
    /// recoveries live.
    Demo(demo::DemoArgs),
    /// Run simulated VMs (QEMU stand-ins with the real guest daemon inside) until Ctrl-C;
    /// faults are injected by commands on standard input.
    Sim(sim_cmd::SimArgs),
    /// Measure the host agent and the guest daemon against their targets and a baseline.
    Bench(bench_cmd::BenchCmd),
    /// Run the controller: the store of every host agent, guest and event, and its API.
    Controller(controller_cmd::ControllerCmd),
    /// Ask a controller about hosts, instances and events, and change reporting.
    Ctl(ctl::CtlArgs),
}

/// The command line, with `ctl` put first when the binary runs as `tetherctl` (a link to it).
fn args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name().map(|n| n.to_owned()));
    if name.is_some_and(|n| n == "tetherctl") {
        args.insert(1, "ctl".into());
    }
    args
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(args());
    if matches!(cli.command, Command::Host(_) | Command::Bench(_)) {
        // One socket per guest: thousands of guests need more than the usual 1,024 files.
        tether_bench::raise_nofile_limit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tether: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Host(cmd) => cmd.run().await,
            Command::Demo(args) => demo::run(args).await,
            Command::Sim(args) => sim_cmd::run(args).await,
            Command::Bench(cmd) => cmd.run().await,
            Command::Controller(cmd) => cmd.run().await,
            Command::Ctl(args) => ctl::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether: {e:#}");
            let status = ctl::exit_status(&e)
                .unwrap_or_else(|| e.downcast_ref::<ConfigProblem>().map_or(1, |_| 2));
            ExitCode::from(status)
        }
    }
}

pub(crate) use tether_host::error_chain as chain;

/// Bad flags or configuration: reported with exit status 2.
#[derive(Debug)]
pub(crate) struct ConfigProblem(pub(crate) String);

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigProblem {}
