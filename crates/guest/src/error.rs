//! The errors a [`crate::Daemon`] stops with, and the exit status each maps to.

use std::path::PathBuf;

/// Why a daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The device (or socket) path does not exist: heartbeat is not configured for this VM.
    #[error("Device {0} does not exist")]
    DeviceMissing(PathBuf),
    /// The path exists but is neither a character device nor a UNIX socket.
    #[error("{0} is neither a character device nor a UNIX socket")]
    NotAChannel(PathBuf),
    /// The device or socket could not be opened.
    #[error("Cannot open {path}")]
    Open {
        /// The device or socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The event loop could not watch the channel.
    #[error("Cannot watch the channel")]
    Watch(#[source] std::io::Error),
}

impl GuestError {
    /// The binary's exit status for this error: 6 when the device is missing, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            GuestError::DeviceMissing(_) => 6,
            _ => 1,
        }
    }
}

/// An error and its sources on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
