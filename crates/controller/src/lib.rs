//! The controller: the cloud-wide view of every host agent and every guest.
//!
//! Host agents register with the controller and send it their journal events; the controller
//! keeps hosts, instances and the event log in a [`Store`] and serves them to operators and
//! the VIM over an authenticated HTTP API.

pub mod clock;
pub mod store;

pub use store::{SqliteStore, Store, StoreError};
