//! What a real-VM test needs from the machine, and where it is.
//!
//! [`Setup::find`] looks for QEMU, busybox and the cloud kernel that `scripts/install-test-deps`
//! unpacks into `.cache/vm-kernel/`. When something is missing the tests skip: they print one
//! line starting `SKIP:` and pass, so `cargo test` works on a machine that never ran the
//! script. [`static_guest`] builds `tether-guest` as a static executable (glibc linked
//! statically, as `scripts/build-static-guest` does) for the test image.
//!
//! Environment overrides: `TETHER_E2E_KERNEL_DIR` (the kernel cache), `TETHER_E2E_QEMU` (the QEMU
//! binary), `TETHER_E2E_BUSYBOX` (a static busybox), `TETHER_E2E_GUEST` (a prebuilt static
//! `tether-guest`, skipping the build).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The virtio modules the test guest loads, in load order (each after its dependencies).
pub const MODULES: [&str; 6] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_console",
];

const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Why the static guest (or another workspace binary) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Cargo could not be started.
    #[error("Cannot run cargo")]
    Cargo(#[source] std::io::Error),
    /// Cargo ran and failed.
    #[error("Cargo build failed ({0})")]
    Failed(std::process::ExitStatus),
    /// The binary is not there or is linked dynamically (it would not run in the test image).
    #[error("{} is missing or not a static executable", .0.display())]
    NotStatic(PathBuf),
}

/// The host-side files a test VM is made of.
#[derive(Debug, Clone)]
pub struct Setup {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// The kernel image (`vmlinuz`).
    pub kernel: PathBuf,
    /// The folder holding the six `<module>.ko` files of [`MODULES`].
    pub modules: PathBuf,
    /// A statically linked busybox.
    pub busybox: PathBuf,
}

impl Setup {
    /// Finds everything, or says what is missing (the text that follows `SKIP:`).
    pub fn find() -> Result<Setup, String> {
        let qemu = env_path("TETHER_E2E_QEMU")
            .or_else(|| find_in_path("qemu-system-x86_64"))
            .ok_or("qemu-system-x86_64 not found (run scripts/install-test-deps)")?;
        let kernel_dir = env_path("TETHER_E2E_KERNEL_DIR").unwrap_or_else(default_kernel_dir);
        let kernel = kernel_dir.join("vmlinuz");
        let modules = kernel_dir.join("modules");
        if !kernel.is_file() {
            return Err(format!(
                "no VM kernel at {} (run scripts/install-test-deps)",
                kernel.display()
            ));
        }
        if let Some(missing) = MODULES
            .iter()
            .find(|m| !modules.join(format!("{m}.ko")).is_file())
        {
            return Err(format!(
                "module {missing}.ko missing in {}",
                modules.display()
            ));
        }
        let busybox = env_path("TETHER_E2E_BUSYBOX")
            .or_else(|| Some(PathBuf::from("/bin/busybox")).filter(|p| is_static_elf(p)))
            .ok_or("no static /bin/busybox (install busybox-static)")?;
        Ok(Setup {
            qemu,
            kernel,
            modules,
            busybox,
        })
    }
}

/// The cargo target directory the running test was built in (`<target>/<profile>/deps/<exe>`).
pub fn target_dir() -> PathBuf {
    profile_dir()
        .and_then(|dir| dir.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// The static `tether-guest` for the test image: `TETHER_E2E_GUEST`, or a build with cargo
/// (profile `guest`, `+crt-static`) into this target directory. Built once per test process;
/// cargo makes it a no-op when nothing changed.
pub fn static_guest() -> Result<PathBuf, &'static BuildError> {
    static GUEST: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    GUEST.get_or_init(build_static_guest).as_ref().cloned()
}

fn build_static_guest() -> Result<PathBuf, BuildError> {
    if let Some(path) = env_path("TETHER_E2E_GUEST") {
        return check_static(path);
    }
    let target_dir = target_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--profile",
            "guest",
            "-p",
            "tether-guest",
        ])
        .args(["--bin", "tether-guest", "--target", GUEST_TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .map_err(BuildError::Cargo)?;
    if !status.success() {
        return Err(BuildError::Failed(status));
    }
    check_static(
        target_dir
            .join(GUEST_TARGET)
            .join("guest")
            .join("tether-guest"),
    )
}

/// Rebuilds the workspace binary `bin` (of `package`) when it exists but is older than the
/// workspace's sources, so `cargo test -p tether-e2e` after an edit elsewhere never drives a
/// stale binary. A fresh or missing binary is left alone (`cargo test --workspace` has just
/// built it; `tether_testkit::binary` builds a missing one), which avoids a second build with
/// a different feature set.
pub fn rebuild_if_stale(package: &str, bin: &str) -> Result<(), BuildError> {
    let Some(profile_dir) = profile_dir() else {
        return Ok(());
    };
    let built = std::fs::metadata(profile_dir.join(bin)).and_then(|m| m.modified());
    let Ok(built) = built else { return Ok(()) };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if newest_source(&root).is_none_or(|newest| newest <= built) {
        return Ok(());
    }
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .map_err(BuildError::Cargo)?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed(status))
    }
}

/// `<target>/<profile>` of the running test executable.
fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    Some(
        if dir.ends_with("deps") {
            dir.parent()?
        } else {
            dir
        }
        .to_path_buf(),
    )
}

/// The newest modification time of the workspace manifests, lock file and crate sources
/// (this crate's own excepted: its edits do not change other binaries).
fn newest_source(root: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut visit = |path: &Path| {
        if let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) {
            newest = newest.max(Some(modified));
        }
    };
    visit(&root.join("Cargo.toml"));
    visit(&root.join("Cargo.lock"));
    let crates = std::fs::read_dir(root.join("crates")).ok()?;
    for krate in crates.flatten().filter(|c| c.file_name() != "e2e") {
        visit(&krate.path().join("Cargo.toml"));
        walk(&krate.path().join("src"), &mut visit);
    }
    newest
}

fn walk(dir: &Path, visit: &mut impl FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, visit);
        } else {
            visit(&path);
        }
    }
}

fn check_static(path: PathBuf) -> Result<PathBuf, BuildError> {
    if is_static_elf(&path) {
        Ok(path)
    } else {
        Err(BuildError::NotStatic(path))
    }
}

/// True for a 64-bit little-endian ELF executable without a program interpreter (`PT_INTERP`),
/// i.e. one that runs with no dynamic loader or libraries.
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    elf_is_static(&bytes).unwrap_or(false)
}

fn elf_is_static(b: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if b.get(..6)? != b"\x7fELF\x02\x01" {
        return Some(false);
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?);
        if p_type == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

fn default_kernel_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/vm-kernel")
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header followed by program headers of the given types.
    fn elf(program_types: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(program_types.len() as u16).to_le_bytes());
        for p_type in program_types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&p_type.to_le_bytes());
            b.extend(ph);
        }
        b
    }

    #[test]
    fn an_interpreter_header_makes_an_executable_dynamic() {
        const PT_LOAD: u32 = 1;
        const PT_INTERP: u32 = 3;
        assert_eq!(elf_is_static(&elf(&[PT_LOAD, PT_LOAD])), Some(true));
        assert_eq!(
            elf_is_static(&elf(&[PT_LOAD, PT_INTERP, PT_LOAD])),
            Some(false)
        );
        // Host test executables are linked dynamically.
        assert!(!is_static_elf(&std::env::current_exe().unwrap()));
        assert!(!is_static_elf(Path::new("/nonexistent")));
    }

    #[test]
    fn truncated_or_foreign_files_are_not_static_executables() {
        assert_eq!(elf_is_static(b""), None);
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), Some(false));
        assert_eq!(elf_is_static(b"\x7fELF\x02\x01\x01"), None);
    }

    #[test]
    fn target_dir_holds_this_test_executable() {
        let exe = std::env::current_exe().unwrap();
        assert!(exe.starts_with(target_dir()));
    }

    #[test]
    fn newest_source_looks_at_manifests_and_sources_but_not_this_crate() {
        let tmp = tether_testkit::temp_dir();
        let root = tmp.path();
        let at = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let file = |path: &str, secs: u64| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "x").unwrap();
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(at(secs))
                .unwrap();
        };
        file("Cargo.toml", 100);
        file("crates/host/Cargo.toml", 100);
        file("crates/host/src/deep/er/mod.rs", 300);
        file("crates/e2e/src/lib.rs", 900);
        file("crates/host/tests/ignored.rs", 800);
        assert_eq!(newest_source(root), Some(at(300)));
        file("Cargo.lock", 400);
        assert_eq!(newest_source(root), Some(at(400)));
    }
}
