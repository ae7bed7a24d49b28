//! Finding the heartbeat channel: a virtio-serial character device or a UNIX socket.
//!
//! In a VM the channel is the port named `cgcs.heartbeat`, which udev links as
//! `/dev/virtio-ports/cgcs.heartbeat`. A bare initramfs has no udev, so when a path under
//! `/dev/virtio-ports/` does not exist the port is looked up by name in
//! `/sys/class/virtio-ports/*/name` and opened as `/dev/<port>` (e.g. `/dev/vport1p1`). Any
//! other path must exist. Tests and the simulator pass a UNIX socket instead, which is
//! connected to.

use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::GuestError;

/// Where udev links virtio-serial ports by name.
const VIRTIO_PORTS_DIR: &str = "/dev/virtio-ports";
/// Where the kernel lists virtio-serial ports.
const SYS_VIRTIO_PORTS: &str = "/sys/class/virtio-ports";

/// The channel to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A character device (a virtio-serial port).
    Device(PathBuf),
    /// A UNIX stream socket to connect to.
    Socket(PathBuf),
}

impl Endpoint {
    /// Finds the channel for `path`.
    pub fn resolve(path: &Path) -> Result<Endpoint, GuestError> {
        Self::resolve_in(path, Path::new(SYS_VIRTIO_PORTS), Path::new("/dev"))
    }

    /// Like [`Endpoint::resolve`] with the sysfs class directory and `/dev` given.
    pub fn resolve_in(path: &Path, sys_ports: &Path, dev: &Path) -> Result<Endpoint, GuestError> {
        let found = match std::fs::metadata(path) {
            Ok(meta) => Some((path.to_owned(), meta.file_type())),
            Err(_) => by_port_name(path, sys_ports, dev),
        };
        let Some((path, kind)) = found else {
            return Err(GuestError::DeviceMissing(path.to_owned()));
        };
        if kind.is_char_device() {
            Ok(Endpoint::Device(path))
        } else if kind.is_socket() {
            Ok(Endpoint::Socket(path))
        } else {
            Err(GuestError::NotAChannel(path))
        }
    }

    /// The path opened.
    pub fn path(&self) -> &Path {
        match self {
            Endpoint::Device(p) | Endpoint::Socket(p) => p,
        }
    }
}

/// For `/dev/virtio-ports/<name>`: `/dev/<port>` of the port called `<name>`, if it exists.
fn by_port_name(path: &Path, sys_ports: &Path, dev: &Path) -> Option<(PathBuf, std::fs::FileType)> {
    if path.parent() != Some(Path::new(VIRTIO_PORTS_DIR)) {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    let port = find_port(sys_ports, name)?;
    let device = dev.join(port);
    let kind = std::fs::metadata(&device).ok()?.file_type();
    tracing::info!(
        requested = %path.display(),
        device = %device.display(),
        "using the virtio port found by name in sysfs"
    );
    Some((device, kind))
}

/// The directory name (e.g. `vport1p1`) of the port whose `name` file holds `name`.
pub fn find_port(sys_ports: &Path, name: &str) -> Option<OsString> {
    let entries = std::fs::read_dir(sys_ports).ok()?;
    entries.flatten().find_map(|entry| {
        let text = std::fs::read_to_string(entry.path().join("name")).ok()?;
        (text.trim() == name).then(|| entry.file_name())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_found_by_name() {
        let dir = tether_testkit::temp_dir();
        for (port, name) in [("vport0p0", ""), ("vport1p1", "org.qemu.guest_agent.0")] {
            let d = dir.path().join(port);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        }
        std::fs::create_dir(dir.path().join("vport1p2")).unwrap();
        std::fs::write(dir.path().join("vport1p2/name"), "cgcs.heartbeat\n").unwrap();
        assert_eq!(
            find_port(dir.path(), "cgcs.heartbeat"),
            Some("vport1p2".into())
        );
        assert_eq!(find_port(dir.path(), "other"), None);
        assert_eq!(
            find_port(&dir.path().join("missing"), "cgcs.heartbeat"),
            None
        );
    }

    #[test]
    fn a_port_found_in_sysfs_resolves_to_its_dev_node() {
        let sys = tether_testkit::temp_dir();
        std::fs::create_dir(sys.path().join("ttyX")).unwrap();
        std::fs::write(sys.path().join("ttyX/name"), "tether.test.port\n").unwrap();
        // /dev/null stands in for /dev/ttyX: any character device will do.
        let dev = tether_testkit::temp_dir();
        std::os::unix::fs::symlink("/dev/null", dev.path().join("ttyX")).unwrap();
        let wanted = Path::new("/dev/virtio-ports/tether.test.port");
        let found = Endpoint::resolve_in(wanted, sys.path(), dev.path()).unwrap();
        assert_eq!(found, Endpoint::Device(dev.path().join("ttyX")));
    }

    #[test]
    fn missing_paths_and_wrong_kinds_are_refused() {
        let dir = tether_testkit::temp_dir();
        let missing = dir.path().join("nope");
        assert!(matches!(
            Endpoint::resolve(&missing),
            Err(GuestError::DeviceMissing(p)) if p == missing
        ));
        let port = Path::new("/dev/virtio-ports/tether.no.such.port");
        assert!(matches!(
            Endpoint::resolve(port),
            Err(GuestError::DeviceMissing(_))
        ));
        assert!(matches!(
            Endpoint::resolve(dir.path()),
            Err(GuestError::NotAChannel(_))
        ));
        assert_eq!(
            Endpoint::resolve(Path::new("/dev/null")).unwrap(),
            Endpoint::Device("/dev/null".into())
        );
        let sock = dir.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(Endpoint::resolve(&sock).unwrap(), Endpoint::Socket(sock));
    }
}
