//! TLS at the controller: its API served over HTTPS, and whom its outgoing calls trust.
//!
//! With a certificate and key ([`ControllerConfig::tls`]) the native API, host agents'
//! ingestion included, is served over HTTPS only, through a
//! [`TlsListener`](tether_tls::TlsListener) (handshakes run per connection with a time limit).
//! The StarlingX listener stays plain HTTP: it serves loopback or a management network.
//! Webhook subscribers at `https://` URLs are verified against the CA file
//! [`ControllerConfig::webhook_ca`] when one is given, else against the system's roots, loaded
//! at the first delivery; host agents serving their API at an `https://` URL, against
//! [`ControllerConfig::host_ca`] or the system's roots.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use tether_tls::{ClientConfig, ServerConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{ControllerConfig, ControllerError};

/// The TLS settings of a controller, loaded from their files.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loaded {
    /// The API's server configuration; `None`: plain HTTP.
    pub server: Option<Arc<ServerConfig>>,
    /// Whom webhook deliveries trust; `None`: the system's roots.
    pub webhook_ca: Option<Arc<ClientConfig>>,
    /// Whom calls to host agents' `https://` APIs trust; `None`: the system's roots.
    pub host_ca: Option<Arc<ClientConfig>>,
}

/// Loads the certificate, key and CA files named in `config`.
pub(crate) fn load(config: &ControllerConfig) -> Result<Loaded, ControllerError> {
    let server = match &config.tls {
        Some(files) => Some(files.load().map_err(ControllerError::Tls)?),
        None => None,
    };
    let ca = |path: &Option<PathBuf>| match path {
        Some(path) => tether_tls::client_config(Some(path)).map(Some),
        None => Ok(None),
    };
    Ok(Loaded {
        server,
        webhook_ca: ca(&config.webhook_ca).map_err(ControllerError::WebhookCa)?,
        host_ca: ca(&config.host_ca).map_err(ControllerError::HostCa)?,
    })
}

/// Serves `app` on `listener` (over TLS when `server` is given) in a task, until `signal`.
pub(crate) fn serve(
    listener: TcpListener,
    server: Option<Arc<ServerConfig>>,
    app: Router,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<io::Result<()>>, ControllerError> {
    tether_tls::serve(listener, server, app, signal).map_err(ControllerError::Serve)
}
