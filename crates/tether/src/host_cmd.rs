//! `tether host`: the compute host agent, run until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Args;
use tether_host::{build_hypervisor, HostAgent, HostArgs, HostConfig, HostError};

use crate::ConfigProblem;

/// Flags of `tether host`; every key of the configuration file has one.
#[derive(Debug, Args)]
pub struct HostCmd {
    #[command(flatten)]
    args: HostArgs,
}

impl HostCmd {
    /// Loads the configuration, applies the flags, and runs the agent until a signal.
    pub async fn run(self) -> anyhow::Result<()> {
        crate::logging::init("info");
        let mut config = match self.args.config_path() {
            Some(path) => HostConfig::load(path).map_err(|e| ConfigProblem(crate::chain(&e)))?,
            None => HostConfig::default(),
        };
        self.args.apply(&mut config);
        let hypervisor = build_hypervisor(&config).map_err(|e| ConfigProblem(crate::chain(&e)))?;
        let agent = match HostAgent::new(config, hypervisor) {
            Ok(agent) => agent,
            // Bad flags or files (an unreadable CA, …) exit with the configuration status.
            Err(e @ HostError::Config(_)) => return Err(ConfigProblem(crate::chain(&e)).into()),
            Err(e) => return Err(anyhow::Error::new(e).context("Cannot start the host agent")),
        };
        agent
            .run(crate::shutdown::signalled())
            .await
            .context("Host agent failed")
    }
}
