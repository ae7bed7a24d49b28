//! `tether bench`: measured heartbeat scale, cost and detection latency, each beside its
//! target and a baseline measured in the same run.
//!
//! The host bench ([`host`]) runs three kinds of process, each its own OS process so that
//! `/proc` tells their costs apart: the real host agent (`tether host`), one load process
//! ([`load`], `tether bench load`) that emulates many guests on channel sockets the way QEMU
//! serves them, and for the baseline a bare epoll echo ([`null_agent`], `tether bench
//! null-agent`) that sends the same challenge bytes with no protocol logic. The guest bench
//! ([`guest`]) drives the real `tether-guest` binary over a UNIX socket. Results come out as a
//! Markdown table ([`report`]) and as JSON. [`sys`] reads `/proc`; [`stats`] holds the
//! percentile arithmetic; [`journal`] matches the agent's journal against injected failures.

pub mod guest;
pub mod host;
pub mod journal;
pub mod load;
pub mod null_agent;
pub mod report;
pub mod stats;
pub mod sys;

use std::path::PathBuf;

pub use guest::{run_guest_bench, GuestBenchArgs, GuestReport};
pub use host::{run_host_bench, HostBenchArgs, HostReport};
pub use load::{run_load, LoadArgs};
pub use null_agent::{run_null_agent, NullAgentArgs};
pub use sys::raise_nofile_limit;

/// Why a bench could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file, socket or process operation failed.
    #[error("Cannot {what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A child process did not behave as the bench expects.
    #[error("The {process} process {problem}")]
    Child {
        /// Which process (`host agent`, `load`, `null agent`, `tether-guest`).
        process: &'static str,
        /// What went wrong.
        problem: String,
    },
    /// The flags cannot give a meaningful measurement.
    #[error("Invalid bench settings: {0}")]
    Settings(String),
    /// A required file is missing.
    #[error("Cannot find {what} at {path}")]
    Missing {
        /// What was looked for.
        what: &'static str,
        /// Where.
        path: PathBuf,
    },
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}
