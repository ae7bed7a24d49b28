//! The controller: the cloud-wide view of every host agent and every guest.
//!
//! Host agents register with the controller and send it their journal events; the controller
//! keeps hosts, instances and the event log in a [`Store`] (SQLite by default) and serves them
//! to operators and the VIM over an authenticated HTTP API ([`api`]), and POSTs every event to
//! the subscribed webhooks ([`webhooks`]). A binary builds a
//! [`ControllerConfig`], calls [`Controller::open`] and then [`Controller::run`] with a
//! shutdown future; tests do the same in-process, or drive [`router`] directly.
//!
//! Modules: [`store`] (records, the `Store` trait, SQLite), [`ingest`] (the bodies host agents
//! send), [`query`] (query strings), [`api`] (routes and their OpenAPI document), [`token`]
//! (the bearer token), [`clock`] (timestamps), [`hostlink`] (commands to host agents),
//! [`starlingx`] (the StarlingX guestAgent-compatible listener), [`audit`] (the periodic
//! comparison of the store with each host), [`recovery`] (the decisions about failures host
//! agents leave to the controller), [`vim`] (the events sent to a StarlingX VIM), `tls`
//! (HTTPS for the API; whom webhooks and calls to hosts trust).

pub mod api;
pub mod audit;
pub mod clock;
pub mod hostlink;
pub mod ingest;
pub mod query;
pub mod recovery;
pub mod starlingx;
pub mod store;
mod tls;
pub mod token;
pub mod vim;
pub mod webhooks;

mod throttle;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use api::{openapi, router, routes, ApiState};
pub use store::{GuestTimeouts, SqliteStore, Store, StoreError};
pub use tether_tls::{ServerCert, TlsError};
pub use token::{read_token, TokenError, TOKEN_ENV};

/// How long a stopping controller lets open requests finish.
const DRAIN: Duration = Duration::from_secs(5);

/// What a controller needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Address of the HTTP API (port 0 picks a free one; see [`Controller::bind`]).
    pub listen: SocketAddr,
    /// Directory of the database (`controller.db`).
    pub data_dir: PathBuf,
    /// The bearer token every request must carry.
    pub token: String,
    /// Address of the StarlingX guestAgent-compatible listener, if one is wanted. It has no
    /// authentication: bind it to loopback or a management network only.
    pub starlingx_listen: Option<SocketAddr>,
    /// Base URL (`http://host[:port]`) of the StarlingX VIM's plugin API to send events to
    /// (StarlingX: `http://127.0.0.1:30002`), if any.
    pub vim_url: Option<String>,
    /// Serve the API (host agents' ingestion included) over HTTPS only, with this
    /// certificate and key; `None`: plain HTTP. The StarlingX listener stays plain HTTP.
    pub tls: Option<ServerCert>,
    /// CA file that `https://` webhook subscribers must be certified by; `None`: the
    /// system's root certificates.
    pub webhook_ca: Option<PathBuf>,
    /// CA file that host agents serving their API at an `https://` `api_url` must be
    /// certified by; `None`: the system's root certificates.
    pub host_ca: Option<PathBuf>,
}

/// The controller cannot start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The configured token cannot be sent in a header (empty, spaces, control characters).
    #[error("The token must be visible ASCII characters without spaces, and not empty")]
    BadToken,
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The API address cannot be bound.
    #[error("Cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Serving the API failed.
    #[error("The HTTP API failed")]
    Serve(#[source] io::Error),
    /// The VIM URL cannot be used.
    #[error("Cannot send events to the VIM")]
    VimUrl(#[source] vim::UrlError),
    /// The API's certificate or key cannot be used.
    #[error("Cannot serve HTTPS")]
    Tls(#[source] TlsError),
    /// The CA file for webhook subscribers cannot be used.
    #[error("Cannot load the CA file for webhook subscribers")]
    WebhookCa(#[source] TlsError),
    /// The CA file for host agents' APIs cannot be used.
    #[error("Cannot load the CA file for host agents")]
    HostCa(#[source] TlsError),
}

/// A controller with its store open, ready to serve.
pub struct Controller {
    config: ControllerConfig,
    state: ApiState,
    listener: Option<TcpListener>,
    starlingx: Option<TcpListener>,
    webhook_backoff: webhooks::Backoff,
    audit_interval: Duration,
    recovery_policy: recovery::policy::RecoveryPolicy,
    vim_url: Option<String>,
    vim_backoff: webhooks::Backoff,
    tls: tls::Loaded,
}

impl Controller {
    /// Opens (creating or migrating) the store under `config.data_dir`. Binds nothing yet.
    pub fn open(config: ControllerConfig) -> Result<Controller, ControllerError> {
        if !token::is_well_formed(&config.token) {
            return Err(ControllerError::BadToken);
        }
        let vim_url = config.vim_url.as_deref().map(vim::parse_url);
        let vim_url = vim_url.transpose().map_err(ControllerError::VimUrl)?;
        let tls = tls::load(&config)?;
        let store = SqliteStore::open(&config.data_dir)?;
        tracing::info!(path = %store.path().display(), "Opened the controller database");
        if vim_url.is_some() {
            // Fixed now, before any event can arrive: a first start skips only the history.
            store.start_vim_cursor()?;
        }
        let hostlink = hostlink::HostLink::trusting(tls.host_ca.clone());
        let state = ApiState::with_hostlink(Arc::new(store), config.token.clone(), hostlink);
        state.set_vim_url(vim_url.clone());
        Ok(Controller {
            config,
            state,
            listener: None,
            starlingx: None,
            webhook_backoff: webhooks::Backoff::default(),
            audit_interval: audit::DEFAULT_INTERVAL,
            recovery_policy: recovery::policy::RecoveryPolicy::default(),
            vim_url,
            vim_backoff: webhooks::Backoff::default(),
            tls,
        })
    }

    /// Binds the API address and the StarlingX listener's, if configured (unless bound
    /// already), and returns the API's bound address, which tells the port when the
    /// configured one is 0.
    pub async fn bind(&mut self) -> Result<SocketAddr, ControllerError> {
        if self.listener.is_none() {
            let addr = self.config.listen;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ControllerError::Listen { addr, source })?;
            self.listener = Some(listener);
        }
        if let (None, Some(addr)) = (&self.starlingx, self.config.starlingx_listen) {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ControllerError::Listen { addr, source })?;
            self.starlingx = Some(listener);
        }
        self.local_addr().ok_or(ControllerError::Listen {
            addr: self.config.listen,
            source: io::Error::other("the listener has no local address"),
        })
    }

    /// The bound address, once [`Controller::bind`] or [`Controller::run`] bound it.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref()?.local_addr().ok()
    }

    /// The StarlingX listener's bound address, once bound.
    pub fn starlingx_addr(&self) -> Option<SocketAddr> {
        self.starlingx.as_ref()?.local_addr().ok()
    }

    /// The handlers' state, for [`router`].
    pub fn state(&self) -> ApiState {
        self.state.clone()
    }

    /// Sets the webhook retry delays: `base` after the first failure, doubling up to `max`
    /// (default 1 s to 5 min). For tests that cannot wait that long.
    pub fn with_webhook_backoff(mut self, base: Duration, max: Duration) -> Controller {
        self.webhook_backoff = webhooks::Backoff { base, max };
        self
    }

    /// Sets how often the state audit runs (default 60 s). For tests that cannot wait that
    /// long.
    pub fn with_audit_interval(mut self, every: Duration) -> Controller {
        self.audit_interval = every;
        self
    }

    /// Sets the limits on recoveries the controller orders (default: 3 per hour, 30 s
    /// between the first two, doubling up to 10 min).
    pub fn with_recovery_policy(mut self, policy: recovery::policy::RecoveryPolicy) -> Controller {
        self.recovery_policy = policy;
        self
    }

    /// Sets the VIM transmitter's retry delays: `base` after the first failure, doubling up to
    /// `max` (default 1 s to 5 min). For tests that cannot wait that long.
    pub fn with_vim_backoff(mut self, base: Duration, max: Duration) -> Controller {
        self.vim_backoff = webhooks::Backoff { base, max };
        self
    }

    /// Binds (if [`Controller::bind`] was not called) and serves until `shutdown` completes;
    /// then ends event streams and lets open requests finish for a few seconds. Webhook
    /// deliveries, the state audit and the VIM transmitter run meanwhile and stop when `run`
    /// returns (undelivered events stay queued).
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControllerError> {
        let addr = self.bind().await?;
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let https = self.tls.server.is_some();
        tracing::info!(%addr, https, "The controller API is listening");
        let (starlingx_stop, starlingx_stopped) = tokio::sync::watch::channel(false);
        let _starlingx = self
            .starlingx
            .take()
            .map(|listener| starlingx::spawn(listener, self.state.clone(), starlingx_stopped));
        let (store, wake) = self.state.outbox();
        let webhook_ca = self.tls.webhook_ca.clone();
        let _delivery =
            webhooks::DeliveryTask::spawn(store, wake, self.webhook_backoff, webhook_ca);
        let _audit = audit::AuditTask::spawn(self.state.clone(), self.audit_interval);
        let _recovery = recovery::RecoveryTask::spawn(self.state.clone(), self.recovery_policy);
        let _vim = (self.vim_url.take())
            .map(|url| vim::Transmitter::spawn(self.state.clone(), url, self.vim_backoff));
        let state = self.state.clone();
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            state.stop_streams();
            starlingx_stop.send_replace(true);
            let _ = stopped_tx.send(());
        };
        let app = router(self.state.clone());
        let mut serving = tls::serve(listener, self.tls.server.clone(), app, signal)?;
        let drained = async {
            if stopped_rx.await.is_ok() {
                tokio::time::sleep(DRAIN).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = &mut serving => match result {
                Ok(result) => result.map_err(ControllerError::Serve),
                Err(e) => Err(ControllerError::Serve(io::Error::other(e))),
            },
            () = drained => {
                tracing::warn!("Requests still open after {DRAIN:?}; closing them");
                serving.abort();
                Ok(())
            }
        }
    }
}
