//! How tether acts on a VM: the [`Hypervisor`] trait and its backends.
//!
//! The host agent decides *that* a guest must be rebooted or stopped; a `Hypervisor` carries it
//! out. Backends: `log` (record only), `exec` (run an operator's command template), `qmp` (talk
//! to QEMU's monitor socket directly) and `virsh` (drive libvirt through its CLI). In tests the
//! QMP backend drives the simulated VMs of `tether-sim` through their real QMP sockets.
//!
//! Backends are built from the host agent's configuration with pinned constructors:
//! [`LogBackend::new`], [`ExecBackend::new`] (a command template), [`QmpBackend::new`] (a socket
//! path template) and [`VirshBackend::new`] (the virsh binary). [`qmp::QmpClient`] is the QMP
//! client the QMP backend is built on, reusable for lifecycle work (stop, cont, events).

mod exec;
mod log;
mod process;
pub mod qmp;
pub mod template;
mod virsh;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use exec::ExecBackend;
pub use log::LogBackend;
pub use qmp::QmpBackend;
pub use template::TemplateError;
pub use virsh::VirshBackend;

/// A boxed future, so that `Hypervisor` can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The VM an action is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The instance uuid (from the channel socket's file name).
    pub uuid: String,
    /// The name the guest gave in its `init` (may be empty before the first init).
    pub name: String,
}

/// What to do to a VM: a corrective action (`Log`, `Reboot`, `Stop`) or a lifecycle
/// operation ordered through the host agent's API (also `Pause` … `Resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Record the failure; touch nothing.
    Log,
    /// Reset the VM (a hard reboot).
    Reboot,
    /// Stop the VM.
    Stop,
    /// Freeze the VM's vCPUs; its memory stays where it is.
    Pause,
    /// Let a paused VM run again.
    Unpause,
    /// Suspend the VM (libvirt: save its memory to disk and stop it).
    Suspend,
    /// Bring a suspended VM back.
    Resume,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 7] = [
        Action::Log,
        Action::Reboot,
        Action::Stop,
        Action::Pause,
        Action::Unpause,
        Action::Suspend,
        Action::Resume,
    ];

    /// The name used in templates, journals and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Log => "log",
            Action::Reboot => "reboot",
            Action::Stop => "stop",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Carries out actions on VMs. Implementations must be cheap to share between guests.
pub trait Hypervisor: Send + Sync + 'static {
    /// The backend's name, for logs and the journal (`log`, `exec`, `qmp`, `virsh`, …).
    fn name(&self) -> &'static str;

    /// Applies `action` to `instance`; resolves once the hypervisor has confirmed it.
    fn apply<'a>(
        &'a self,
        instance: &'a Instance,
        action: Action,
    ) -> BoxFuture<'a, Result<(), HypervisorError>>;
}

/// Why an action could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// Talking to the hypervisor failed (socket, process).
    #[error("Cannot reach the hypervisor for {target}")]
    Io {
        /// What was being reached (a socket path, a command).
        target: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The hypervisor answered with an error.
    #[error("Hypervisor refused {command}: {message}")]
    Refused {
        /// The command that was refused.
        command: String,
        /// The hypervisor's own words.
        message: String,
    },
    /// The hypervisor's answer made no sense.
    #[error("Unexpected answer from the hypervisor: {0}")]
    Protocol(String),
    /// The hypervisor did not answer in time.
    #[error("Hypervisor did not answer {command} in time")]
    Timeout {
        /// The command that timed out.
        command: String,
    },
    /// An external command exited with a failure status.
    #[error("Command {command} failed with {status}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status, as printed.
        status: String,
    },
    /// A backend's command template cannot be used (found when the backend is built).
    #[error("Invalid command template {template:?}")]
    InvalidTemplate {
        /// The template as configured.
        template: String,
        /// What is wrong with it.
        #[source]
        source: TemplateError,
    },
}
