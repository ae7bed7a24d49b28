//! `tether controller`: the cloud-wide controller, run until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tether_controller::recovery::policy::RecoveryPolicy;
use tether_controller::{
    read_token, Controller, ControllerConfig, ControllerError, ServerCert, TOKEN_ENV,
};

use crate::ConfigProblem;

/// Flags of `tether controller`.
#[derive(Debug, Args)]
pub struct ControllerCmd {
    /// Address of the HTTP API.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:2400")]
    listen: SocketAddr,
    /// Directory of the database (`controller.db`, created when missing).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// File holding the API token that host agents and operators must send (else the
    /// `TETHER_TOKEN` environment variable).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Also serve the StarlingX guestAgent-compatible API here (StarlingX uses
    /// 127.0.0.1:2410). It has no authentication: loopback or a management network only.
    #[arg(long, value_name = "ADDR:PORT")]
    starlingx_listen: Option<SocketAddr>,
    /// Send heartbeat and lifecycle events to this StarlingX VIM plugin API, as the
    /// guestAgent does (`http://host[:port]`; StarlingX: http://127.0.0.1:30002).
    #[arg(long, value_name = "URL")]
    vim_url: Option<String>,
    /// Recoveries the controller orders per instance within the window; the next failure
    /// makes the guest unrecoverable.
    #[arg(long, value_name = "N", default_value_t = 3)]
    recovery_max: u32,
    /// The window recoveries are counted in, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    recovery_window_secs: u64,
    /// Least time between an instance's first two recoveries, in seconds; doubles with each
    /// further one, up to --recovery-backoff-max-secs.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    recovery_backoff_secs: u64,
    /// Longest wait between two recoveries of an instance, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    recovery_backoff_max_secs: u64,
    /// Serve the API over HTTPS only, presenting this certificate chain (PEM, leaf first);
    /// needs --tls-key. The StarlingX listener stays plain HTTP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that https:// webhook subscribers must be signed by
    /// [default: the system's root certificates].
    #[arg(long, value_name = "FILE")]
    webhook_ca: Option<PathBuf>,
    /// CA certificates (PEM) that host agents serving their API over HTTPS
    /// (--api-tls-cert) must be signed by [default: the system's root certificates].
    #[arg(long, value_name = "FILE")]
    host_ca: Option<PathBuf>,
}

impl ControllerCmd {
    /// Opens the store and serves the API until a signal.
    pub async fn run(self) -> anyhow::Result<()> {
        crate::logging::init("info");
        let env = std::env::var(TOKEN_ENV).ok();
        let policy = self.recovery_policy()?;
        let token = read_token(self.token_file.as_deref(), env.as_deref())
            .map_err(|e| ConfigProblem(crate::chain(&e)))?;
        let config = ControllerConfig {
            listen: self.listen,
            data_dir: self.data_dir,
            token,
            starlingx_listen: self.starlingx_listen,
            vim_url: self.vim_url,
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| ServerCert { cert, key }),
            webhook_ca: self.webhook_ca,
            host_ca: self.host_ca,
        };
        let controller = Controller::open(config)
            .map_err(|e| {
                let flag = match e {
                    ControllerError::VimUrl(_) => "--vim-url: ",
                    _ => "",
                };
                ConfigProblem(format!("{flag}{}", crate::chain(&e)))
            })?
            .with_recovery_policy(policy);
        controller
            .run(crate::shutdown::signalled())
            .await
            .context("Controller failed")
    }

    fn recovery_policy(&self) -> Result<RecoveryPolicy, ConfigProblem> {
        if self.recovery_max == 0 || self.recovery_window_secs == 0 {
            let problem = "--recovery-max and --recovery-window-secs must be at least 1";
            return Err(ConfigProblem(problem.to_owned()));
        }
        if self.recovery_backoff_max_secs < self.recovery_backoff_secs {
            let problem = "--recovery-backoff-max-secs must not be below --recovery-backoff-secs";
            return Err(ConfigProblem(problem.to_owned()));
        }
        Ok(RecoveryPolicy {
            max: self.recovery_max,
            window: Duration::from_secs(self.recovery_window_secs),
            backoff: Duration::from_secs(self.recovery_backoff_secs),
            backoff_max: Duration::from_secs(self.recovery_backoff_max_secs),
        })
    }
}
