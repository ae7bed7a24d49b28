//! Simulated VMs: a QEMU stand-in per VM that serves the heartbeat channel and QMP sockets
//! exactly as QEMU does and runs the real guest daemon inside.
//!
//! For every VM, [`Sim::start`] listens on `<channel_dir>/cgcs.heartbeat.<uuid>.sock` (as
//! QEMU's `-chardev socket,server=on,wait=off` does) and on the QMP socket `<uuid>.qmp`, and
//! boots a `tether_guest::Daemon` in socket mode against a private port socket in
//! `private_dir`. The channel [relay](relay) copies bytes between the host's connection and
//! the guest's as virtio-serial does; the [QMP server](qmp) answers `query-status`, `stop`,
//! `cont`, `system_reset` and `quit` and emits QEMU's events. [`Fault`]s make a VM hang, turn
//! unhealthy, lose its guest daemon or answer slowly, so that the host agent can be tested
//! against every failure a real guest shows; [`command`] parses the text commands that drive
//! them from `tether sim`'s stdin.
//!
//! The demo, the end-to-end tests and the benchmarks use it; it is light enough for hundreds
//! of VMs in one process (a few idle tasks and about eight file descriptors per VM, and one short
//! `/bin/sh` health check per VM per second by default).

pub mod command;
mod fault;
mod guest;
pub mod qmp;
pub mod relay;
mod sim;
mod vm;

use std::path::PathBuf;
use std::time::Duration;

use tether_guest::GuestConfig;

pub use command::{Command, CommandError};
pub use fault::{Fault, VmStatus};
pub use sim::Sim;
pub use vm::SimVm;

/// Boot delay used when a configuration does not say otherwise.
pub const DEFAULT_BOOT_DELAY: Duration = Duration::from_millis(300);

/// How to run a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where the channel sockets go (the host agent watches this directory). The QMP sockets
    /// go here too unless [`Sim::start_with_qmp_dir`] puts them elsewhere.
    pub channel_dir: PathBuf,
    /// Where each VM keeps its private files: the guest's port socket, its application API
    /// socket ([`SimVm::api_socket`]), health check and event script.
    pub private_dir: PathBuf,
    /// The guest daemons' configuration. Each VM adds its own health-check script, run every
    /// second, or every `health_check_interval_secs` if that is longer (raise it for thousands
    /// of VMs: each run forks a shell).
    pub guest: GuestConfig,
    /// Time from a start or reset until the fresh guest daemon runs.
    pub boot_delay: Duration,
    /// Give each guest an event notification script of its own (unless `guest` names one):
    /// it accepts every vote and notification, except that it vetoes votes while
    /// [`SimVm::set_veto`] is in force, and it records every call
    /// ([`SimVm::notifications`]).
    pub event_script: bool,
}

impl SimConfig {
    /// A configuration with the default guest settings and boot delay.
    pub fn new(channel_dir: impl Into<PathBuf>, private_dir: impl Into<PathBuf>) -> SimConfig {
        SimConfig {
            channel_dir: channel_dir.into(),
            private_dir: private_dir.into(),
            guest: GuestConfig::default(),
            boot_delay: DEFAULT_BOOT_DELAY,
            event_script: false,
        }
    }
}

/// Why the simulator could not do something.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A directory could not be created.
    #[error("Cannot create directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A socket could not be bound.
    #[error("Cannot listen on {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("Cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A socket path does not fit in a UNIX socket address (107 bytes).
    #[error("Socket path {0} is longer than the 107 bytes a UNIX socket allows")]
    PathTooLong(PathBuf),
    /// No VM has this name or uuid.
    #[error("No VM named {0:?} (expected a name such as vm-1, or a uuid)")]
    NoSuchVm(String),
    /// The thread the guests run on could not be started.
    #[error("Cannot start the guests' thread")]
    GuestThread(#[source] std::io::Error),
    /// The VM is stopped, and the command needs it running.
    #[error("VM {0} is stopped (start it first)")]
    Stopped(String),
}
