//! `tether-guest`: the heartbeat daemon that runs inside a VM.
//!
//! It speaks the StarlingX guest heartbeat protocol (version 3) to the host agent over the
//! virtio-serial port `/dev/virtio-ports/cgcs.heartbeat` (or, for tests and the simulator, a
//! UNIX stream socket): it registers with `init`, answers every `challenge` with the guest's
//! health, and answers lifecycle votes and notifications (`action_notify`). Settings come from
//! `guest_heartbeat.conf` ([`GuestConfig`]).
//!
//! The library holds no global state: a process may run many [`Daemon`]s at once, each until
//! the shutdown future it was given resolves. Signals and the log subscriber belong to the
//! binary. Logs go through `tracing`; everything the host can trigger repeatedly is logged
//! rate-limited.
//!
//! Exit statuses of the `tether-guest` binary:
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | clean shutdown (SIGTERM or SIGINT; `exit` was sent to the host) |
//! | 1 | any other failure |
//! | 2 | bad command-line flags or configuration |
//! | 6 | the device does not exist (the channel is not configured for this VM) |

pub mod api;
pub mod apps;
pub mod cli;
mod config;
mod daemon;
pub mod endpoint;
mod error;
pub mod fsm;
pub mod health;
pub mod link;
pub mod logging;
pub mod ratelimit;
pub mod script;
mod sys;
pub mod vote;

pub use config::{ConfigError, ConfigWarning, GuestConfig, WarningKind, MAX_NOTICE_SECS};
pub use daemon::{Daemon, Options};
pub use error::{error_chain, GuestError};
