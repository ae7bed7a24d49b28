//! `tether-guest-api`: how an application inside a VM takes part in the guest heartbeat.
//!
//! An application registers with the guest daemon (`tether-guest`) over a local UNIX stream
//! socket, answers the daemon's periodic health checks, and may be asked to vote on or prepare
//! for lifecycle actions (stop, reboot, migrate, ...). The daemon merges every application's
//! health into what it reports to the host, so an unhealthy application (or one that stops
//! answering) can have the VM rebooted or stopped.
//!
//! - [`wire`]: the 228-byte frame codec, compatible with the StarlingX guest library;
//! - [`types`]: the named values the frames carry;
//! - [`client`]: a blocking Rust client with automatic re-registration;
//! - [`ffi`]: the C API (`guest_heartbeat_api.h`, `libguest_heartbeat_api.{so,a}`).

pub mod client;
pub mod ffi;
pub mod types;
pub mod wire;

pub use client::{
    Client, ClientError, ClientEvent, Handler, HealthReport, Registration, DEFAULT_SOCKET,
};
pub use types::{Action, Event, Notify, Vote};
