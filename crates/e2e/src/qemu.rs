//! A real VM under QEMU, as a test fixture.
//!
//! [`Vm::start`] boots the kernel and a test image with software emulation (`-accel tcg`; KVM
//! only when `TETHER_E2E_KVM=1`, because nested KVM on CI machines hangs), one vCPU, q35 and
//! 256 MiB, with the heartbeat channel QEMU-style at
//! `<channel dir>/cgcs.heartbeat.<uuid>.sock`, the monitor the host agent drives at
//! `<channel dir>/<uuid>.qmp`, and a second monitor for the test itself. It returns once QEMU's
//! sockets exist. The serial console goes to a file.
//!
//! Dropping a [`Vm`] always ends QEMU: QMP `quit`, then SIGKILL if it has not exited within
//! [`QUIT_GRACE`]. If the test is panicking, the console log and QEMU's stderr are printed
//! first, so they show up in the failing test's output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::qmp::{Qmp, QmpError};
use crate::setup::Setup;
use crate::slots::Slot;

/// How long QEMU may take to create its sockets.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);
/// How long QEMU may take to exit after `quit` before it is killed.
pub const QUIT_GRACE: Duration = Duration::from_secs(5);
/// At most this much of each log is printed for a failing test.
const MAX_LOG_PRINT: usize = 48 * 1024;

/// Why a VM could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A scratch folder could not be created.
    #[error("Cannot create {}", .path.display())]
    Dir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU could not be started.
    #[error("Cannot start {}", .path.display())]
    Spawn {
        /// The QEMU binary.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited before its sockets appeared.
    #[error("QEMU exited ({status}) during start-up: {stderr}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// What it printed.
        stderr: String,
    },
    /// QEMU's sockets did not appear in time.
    #[error("QEMU did not create {} within {:?}", .path.display(), SOCKET_TIMEOUT)]
    NoSocket {
        /// The missing socket.
        path: PathBuf,
    },
    /// A QMP exchange with the test's monitor failed.
    #[error("QMP")]
    Qmp(#[from] QmpError),
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Kernel, modules and QEMU.
    pub setup: Setup,
    /// The initramfs (`GuestImage::build`).
    pub initrd: PathBuf,
    /// QEMU's `-name`.
    pub name: String,
    /// Where the channel socket and the agent's QMP socket go (the agent's `--channel-dir`).
    pub channel_dir: PathBuf,
    /// Where the console log, QEMU's stderr and the test's QMP socket go.
    pub work_dir: PathBuf,
}

/// A running QEMU; ended on drop.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    uuid: String,
    channel_socket: PathBuf,
    agent_qmp: PathBuf,
    test_qmp: PathBuf,
    console: PathBuf,
    stderr: PathBuf,
    started: Instant,
    _slot: Slot,
}

impl Vm {
    /// Starts QEMU (waiting first for a free slot, see [`crate::slots`]) and waits until its
    /// channel and monitor sockets exist.
    pub fn start(spec: &VmSpec) -> Result<Vm, VmError> {
        let slot = Slot::acquire();
        let uuid = random_uuid();
        for dir in [&spec.channel_dir, &spec.work_dir] {
            std::fs::create_dir_all(dir).map_err(|source| VmError::Dir {
                path: dir.clone(),
                source,
            })?;
        }
        let channel_socket = spec.channel_dir.join(format!("cgcs.heartbeat.{uuid}.sock"));
        let agent_qmp = spec.channel_dir.join(format!("{uuid}.qmp"));
        let test_qmp = spec.work_dir.join("test.qmp");
        let console = spec.work_dir.join("console.log");
        let stderr = spec.work_dir.join("qemu.stderr");
        let stderr_file = std::fs::File::create(&stderr).map_err(|source| VmError::Dir {
            path: stderr.clone(),
            source,
        })?;
        let child = Command::new(&spec.setup.qemu)
            .args(machine_args())
            .args(["-name", &spec.name, "-uuid", &uuid])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&spec.setup.kernel)
            .arg("-initrd")
            .arg(&spec.initrd)
            .arg("-append")
            .arg(kernel_command_line())
            .args(channel_args(&channel_socket))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", agent_qmp.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", test_qmp.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file)
            .spawn()
            .map_err(|source| VmError::Spawn {
                path: spec.setup.qemu.clone(),
                source,
            })?;
        let started = Instant::now();
        let mut vm = Vm {
            child,
            uuid,
            channel_socket,
            agent_qmp,
            test_qmp,
            console,
            stderr,
            started,
            _slot: slot,
        };
        vm.wait_for_sockets()?;
        Ok(vm)
    }

    /// The VM's UUID (QEMU `-uuid`; the instance id the host agent reports).
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// The heartbeat channel socket QEMU listens on.
    pub fn channel_socket(&self) -> &Path {
        &self.channel_socket
    }

    /// The monitor socket meant for the host agent.
    pub fn agent_qmp(&self) -> &Path {
        &self.agent_qmp
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The serial console output so far.
    pub fn console(&self) -> String {
        read_lossy(&self.console)
    }

    /// A fresh connection to the test's own monitor.
    pub fn qmp(&self) -> Result<Qmp, VmError> {
        Ok(Qmp::connect(&self.test_qmp, Duration::from_secs(5))?)
    }

    /// Freezes the vCPUs (QMP `stop`): the guest hangs, QEMU and its sockets stay up.
    pub fn freeze(&self) -> Result<(), VmError> {
        self.qmp()?.execute("stop", None)?;
        Ok(())
    }

    /// The run state (`running`, `paused`, ...).
    pub fn status(&self) -> Result<String, VmError> {
        Ok(self.qmp()?.status()?)
    }

    /// QEMU's exit status if it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Ends QEMU: `quit` on the test monitor, SIGKILL after [`QUIT_GRACE`]. Idempotent.
    pub fn shutdown(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.exit_status() {
            return Some(status);
        }
        if let Ok(mut qmp) = Qmp::connect(&self.test_qmp, Duration::from_secs(2)) {
            let _ = qmp.execute("quit", None);
        }
        let deadline = Instant::now() + QUIT_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    fn wait_for_sockets(&mut self) -> Result<(), VmError> {
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        for path in [
            self.channel_socket.clone(),
            self.agent_qmp.clone(),
            self.test_qmp.clone(),
        ] {
            while !path.exists() {
                if let Some(status) = self.exit_status() {
                    return Err(VmError::Exited {
                        status,
                        stderr: read_lossy(&self.stderr),
                    });
                }
                if Instant::now() >= deadline {
                    return Err(VmError::NoSocket { path });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log(&format!("console of VM {}", self.uuid), &self.console);
            print_log("QEMU stderr", &self.stderr);
        }
        self.shutdown();
    }
}

/// Machine, accelerator, memory and devices that do not depend on the test.
fn machine_args() -> Vec<&'static str> {
    let kvm = std::env::var("TETHER_E2E_KVM").is_ok_and(|v| v == "1");
    let accel: &[&str] = if kvm {
        &["-accel", "kvm", "-cpu", "host"]
    } else {
        &["-accel", "tcg"]
    };
    let mut args = vec!["-machine", "q35", "-smp", "1", "-m", "256"];
    args.extend_from_slice(accel);
    args.extend_from_slice(&["-nodefaults", "-no-user-config", "-nographic"]);
    args
}

/// The guest kernel's command line, plus `TETHER_E2E_KERNEL_ARGS` (e.g. `loglevel=7` to see
/// the kernel's messages on the console).
fn kernel_command_line() -> String {
    let mut line = String::from("console=ttyS0 quiet panic=-1");
    if let Ok(extra) = std::env::var("TETHER_E2E_KERNEL_ARGS") {
        line.push(' ');
        line.push_str(&extra);
    }
    line
}

/// The virtio-serial controller and the heartbeat port backed by a listening UNIX socket.
fn channel_args(socket: &Path) -> Vec<String> {
    vec![
        "-device".into(),
        "virtio-serial-pci,id=vser0".into(),
        "-chardev".into(),
        format!("socket,id=hb,path={},server=on,wait=off", socket.display()),
        "-device".into(),
        format!(
            "virtserialport,bus=vser0.0,chardev=hb,name={},id=hbport",
            crate::PORT_NAME
        ),
    ]
}

/// A random version-4 UUID in the usual 8-4-4-4-12 form.
pub fn random_uuid() -> String {
    let mut b: [u8; 16] = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A file's content as text (empty if it cannot be read).
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Prints the last [`MAX_LOG_PRINT`] bytes of a log under a heading, for a failing test.
pub fn print_log(title: &str, path: &Path) {
    let text = read_lossy(path);
    let start = text.len().saturating_sub(MAX_LOG_PRINT);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    eprintln!("----- {title} ({}) -----", path.display());
    eprintln!("{}", &text[start..]);
    eprintln!("----- end of {title} -----");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_differ() {
        let a = random_uuid();
        let b = random_uuid();
        assert_ne!(a, b);
        let parts: Vec<_> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]));
    }

    #[test]
    fn software_emulation_unless_kvm_is_asked_for() {
        if std::env::var_os("TETHER_E2E_KVM").is_none() {
            let args = machine_args();
            assert!(args.windows(2).any(|w| w == ["-accel", "tcg"]));
            assert!(!args.contains(&"kvm"));
        }
    }
}
