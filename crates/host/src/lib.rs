//! `tether host`, the compute host agent.
//!
//! One agent runs on every compute host. It finds the heartbeat channel of every VM (a UNIX
//! socket that QEMU listens on, `cgcs.heartbeat.<uuid>.sock` in the channel directory), speaks
//! the heartbeat v3 protocol with the `tether-guest` daemon inside (or the StarlingX
//! Guest-Client), and applies the guest's corrective action through a [`Hypervisor`] when its
//! heartbeat is lost or it reports itself unhealthy. Everything it does is appended to a JSON
//! lines journal and visible through a small HTTP API.
//!
//! Layout: [`config`] and [`args`] (settings), `discovery` (inotify and rescans), `agent`
//! (registry of guests), `supervisor` (one task per guest around the pure state machine in
//! `fsm`), `recovery` (rate-limited actions), [`journal`], `status`, `api`, and
//! `controller_link` (reports the journal and the instances to a controller, if configured).
//!
//! ```no_run
//! # async fn example() -> Result<(), tether_host::HostError> {
//! use tether_host::{build_hypervisor, HostAgent, HostConfig};
//! let config = HostConfig::default();
//! let agent = HostAgent::new(config.clone(), build_hypervisor(&config)?)?;
//! let view = agent.view(); // for status while it runs
//! agent.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # drop(view); Ok(()) }
//! ```

mod agent;
mod api;
pub mod args;
pub mod config;
mod controller_link;
mod deferral;
mod discovery;
mod fsm;
mod hypervisor;
pub mod journal;
mod journal_api;
pub mod lifecycle;
mod limits;
pub mod operations;
mod pattern;
mod recover_api;
mod recovery;
mod status;
mod supervisor;

use std::path::PathBuf;

pub use agent::HostAgent;
pub use api::router;
pub use args::HostArgs;
pub use config::{ConfigError, HostConfig, HypervisorKind, RecoveryMode};
pub use fsm::{Hold, Notices};
pub use hypervisor::build_hypervisor;
pub use recovery::error_chain;
pub use status::{AgentView, GuestState, InstanceStatus, Reporting};
pub use tether_hypervisor::Hypervisor;

/// Why the agent cannot start or run.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The hypervisor backend cannot be built.
    #[error("Cannot set up the hypervisor backend")]
    Hypervisor(#[source] tether_hypervisor::HypervisorError),
    /// The journal cannot be opened.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// The channel directory cannot be watched.
    #[error("Cannot watch the channel directory {path}")]
    ChannelDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The API socket cannot be bound.
    #[error("Cannot serve the API on {path}")]
    ApiSocket {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The API TCP address cannot be bound.
    #[error("Cannot serve the API on {addr}")]
    ApiListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
