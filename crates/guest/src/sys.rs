//! The crate's only `unsafe`: handing an owned descriptor to tokio's reactor.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// Registers `fd` with the current runtime's reactor for readable and writable events.
pub fn watch(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is an open descriptor that it alone closes, on drop; while the
    // `AsyncFd` owns it nobody can close it, and `as_raw_fd` always returns the same number.
    // `AsyncFd::into_inner` deregisters it before giving it back.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}
