//! `tether controller`: the cloud-wide controller, run until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tether_controller::{read_token, Controller, ControllerConfig, ServerCert, TOKEN_ENV};

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
    /// The VIM to report events to (not supported yet: refused when given).
    #[arg(long, value_name = "URL")]
    vim_url: Option<String>,
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
        if let Some(url) = &self.vim_url {
            let problem = format!("--vim-url {url}: reporting to a VIM is not built yet");
            return Err(ConfigProblem(problem).into());
        }
        let env = std::env::var(TOKEN_ENV).ok();
        let token = read_token(self.token_file.as_deref(), env.as_deref())
            .map_err(|e| ConfigProblem(crate::chain(&e)))?;
        let config = ControllerConfig {
            listen: self.listen,
            data_dir: self.data_dir,
            token,
            starlingx_listen: self.starlingx_listen,
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| ServerCert { cert, key }),
            webhook_ca: self.webhook_ca,
            host_ca: self.host_ca,
        };
        let controller = Controller::open(config).map_err(|e| ConfigProblem(crate::chain(&e)))?;
        controller
            .run(crate::shutdown::signalled())
            .await
            .context("Controller failed")
    }
}
