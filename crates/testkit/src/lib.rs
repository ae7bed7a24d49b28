//! Test helpers shared by tether's crates.
//!
//! Tests wait for conditions with [`wait_until`] instead of sleeping, make their sockets and
//! files under a [`TempDir`], and spawn the real built binaries found by [`binary`]. TLS tests
//! make their certificates with [`pki::TestCa`].

pub mod pki;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use tempfile::TempDir;

/// Polls `condition` every 10 ms (of tokio time, so a paused clock works) until it holds.
///
/// Panics with `what` when it does not hold within `timeout`, so a failing test says what it
/// was waiting for.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`wait_until`] for a plain closure.
pub async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    wait_until(what, timeout, || std::future::ready(condition())).await;
}

/// A fresh temporary directory; short path so that UNIX socket paths stay under 108 bytes.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("tether-")
        .tempdir_in("/tmp")
        .unwrap_or_else(|e| panic!("cannot create a temp dir in /tmp: {e}"))
}

/// The path of a binary built by this workspace (`tether`, `tether-guest`) in the same target
/// profile as the running test. Builds it with cargo when it is not there yet, so a test in
/// one crate can run another crate's binary.
pub fn binary(name: &str) -> PathBuf {
    let dir = profile_dir();
    let path = dir.join(name);
    if !path.exists() {
        build_binary(name, &dir);
    }
    path
}

/// `target/<profile>` of the running test executable (`target/<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no current exe: {e}"));
    let deps = exe
        .parent()
        .unwrap_or_else(|| panic!("test exe has no parent"));
    let dir = if deps.ends_with("deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    dir.to_path_buf()
}

/// The directory of a package's built library (`lib<name>.so`, `.a`), after making sure cargo
/// has built it from the current sources (a no-op when it is up to date). `cargo test` builds
/// a library's rlib only; tests that link a C program against its `cdylib` or `staticlib` need
/// this. The build goes to a target directory of its own (`<target>/libraries`): a second
/// cargo writing into the running test's target directory could replace artifacts that the
/// outer `cargo test` still has to link or document.
pub fn library_dir(package: &str) -> PathBuf {
    let profile = profile_dir();
    let target = profile.parent().unwrap_or(&profile).join("libraries");
    cargo_build_in(&["-p", package, "--lib"], &profile, Some(&target));
    let name = profile.file_name().unwrap_or_default();
    target.join(name)
}

fn build_binary(name: &str, profile_dir: &Path) {
    let package = match name {
        "tether-guest" => "tether-guest",
        _ => "tether",
    };
    cargo_build(&["-p", package, "--bin", name], profile_dir);
}

fn cargo_build(args: &[&str], profile_dir: &Path) {
    cargo_build_in(args, profile_dir, None);
}

fn cargo_build_in(args: &[&str], profile_dir: &Path, target_dir: Option<&Path>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet"]).args(args);
    if let Some(dir) = target_dir {
        cmd.env("CARGO_TARGET_DIR", dir);
    }
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    assert!(status.success(), "cargo build {args:?} failed");
}
