//! `tether bench`: measured figures beside their targets and baselines (see
//! `docs/performance.md`). `host` and `guest` are for people; `load` and `null-agent` are the
//! helper processes the host bench starts itself, hidden from the help.

use std::path::Path;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use tether_bench::report::{self, Context};
use tether_bench::sys::{git_revision, Machine};
use tether_bench::{GuestBenchArgs, HostBenchArgs, LoadArgs, NullAgentArgs};

use crate::ConfigProblem;

/// Flags of `tether bench`.
#[derive(Debug, Args)]
pub struct BenchCmd {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// The host agent against N emulated guests, and a bare epoll echo as the baseline:
    /// CPU, memory, challenge delay, detection latency, false losses.
    Host(HostBenchArgs),
    /// The tether-guest daemon: resident memory, CPU per 1,000 heartbeats, binary size.
    Guest(GuestBenchArgs),
    /// Emulated guests on channel sockets (started by `bench host`).
    #[command(hide = true)]
    Load(LoadArgs),
    /// The baseline's bare epoll echo (started by `bench host`).
    #[command(hide = true)]
    NullAgent(NullAgentArgs),
}

impl BenchCmd {
    /// Runs the chosen bench; the measuring ones print a Markdown table on stdout.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.what {
            BenchWhat::Load(args) => Ok(tether_bench::run_load(args).await?),
            BenchWhat::NullAgent(args) => {
                tokio::task::spawn_blocking(move || tether_bench::run_null_agent(args)).await??;
                Ok(())
            }
            BenchWhat::Host(args) => {
                let exe = std::env::current_exe().context("Cannot find the tether binary")?;
                let context = context();
                let json = args.json.clone();
                let result = tokio::task::spawn_blocking(move || {
                    tether_bench::run_host_bench(&exe, &args, context)
                })
                .await?;
                report::progress_done();
                let report = result.map_err(settings_are_config)?;
                print!("{}", report::host_markdown(&report));
                write_json(json.as_deref(), &report)
            }
            BenchWhat::Guest(args) => {
                let exe = std::env::current_exe().context("Cannot find the tether binary")?;
                let context = context();
                let json = args.json.clone();
                let result = tokio::task::spawn_blocking(move || {
                    tether_bench::run_guest_bench(&exe, &args, context)
                })
                .await?;
                report::progress_done();
                let report = result?;
                print!("{}", report::guest_markdown(&report));
                write_json(json.as_deref(), &report)
            }
        }
    }
}

fn settings_are_config(e: tether_bench::BenchError) -> anyhow::Error {
    match e {
        tether_bench::BenchError::Settings(_) => ConfigProblem(e.to_string()).into(),
        other => other.into(),
    }
}

fn context() -> Context {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    // The checkout the bench runs in, else the one the binary was built in.
    let mut revision =
        std::env::current_dir().map_or_else(|_| "unknown".into(), |d| git_revision(&d));
    if revision == "unknown" {
        if let Some(dir) = std::env::current_exe()
            .ok()
            .as_deref()
            .and_then(Path::parent)
        {
            revision = git_revision(dir);
        }
    }
    Context {
        machine: Machine::detect(),
        command,
        git_revision: revision,
    }
}

fn write_json(path: Option<&Path>, report: &impl serde::Serialize) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("Cannot write {}", path.display()))
}
