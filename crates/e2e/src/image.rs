//! The test guest's initramfs: busybox, the virtio modules, the static `tether-guest`, an
//! `/init` and the files a test injects (the guest's config, a health script).
//!
//! [`GuestImage`] describes one image; [`GuestImage::build`] writes it as a gzip-compressed cpio
//! newc archive into `<target>/e2e-images/`, named by a hash of its content, so an unchanged image
//! is built once and reused by every later test run. The newest [`KEEP_IMAGES`] are kept.
//!
//! `/init` mounts proc, sysfs and devtmpfs, loads the modules in dependency order, makes the
//! `/dev/virtio-ports/<name>` links udev would make, sets the host name and runs
//! `tether-guest --device /dev/virtio-ports/cgcs.heartbeat --config
//! /etc/tether/guest_heartbeat.conf --name <name>`, starting it again a second after it exits.
//! PID 1 never exits, so only the host (QMP `quit`, `system_reset`) ends or restarts the VM.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::cpio::CpioWriter;
use crate::setup::{Setup, MODULES};

/// Where the guest reads its configuration inside the image.
pub const CONFIG_PATH: &str = "/etc/tether/guest_heartbeat.conf";
/// The heartbeat port's name (`/dev/virtio-ports/<name>` in the guest).
pub const PORT_NAME: &str = "cgcs.heartbeat";
/// How many built images stay in the cache.
pub const KEEP_IMAGES: usize = 16;

/// busybox applets linked into `/bin` (the init script and test scripts use them).
const APPLETS: &[&str] = &[
    "sh", "cat", "cut", "date", "echo", "grep", "hostname", "insmod", "kill", "ln", "ls", "mkdir",
    "mount", "poweroff", "ps", "reboot", "rm", "sleep", "touch", "uptime",
];

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The name would not be safe in the init script or as a host name.
    #[error("Guest name {0:?} must be 1-63 characters of A-Z a-z 0-9 . _ -")]
    BadName(String),
    /// An injected file's path is not absolute or collides with the image's own files.
    #[error("Cannot inject {0:?}: paths must be absolute and not /init or under /bin, /lib")]
    BadPath(String),
    /// A host file the image is made of could not be read.
    #[error("Cannot read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The cache could not be written.
    #[error("Cannot write the image to {}", .path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A file put into the image.
#[derive(Debug, Clone)]
struct Injected {
    path: String,
    mode: u32,
    data: Vec<u8>,
}

/// One test guest's image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    name: String,
    config: String,
    files: Vec<Injected>,
}

impl GuestImage {
    /// A guest called `name` (its host name and `--name`), heartbeating every second and asking
    /// for a reboot on failure.
    pub fn new(name: &str) -> GuestImage {
        GuestImage {
            name: name.to_string(),
            config: "HB_INTERVAL=1000\nCORRECTIVE_ACTION=reboot\n".to_string(),
            files: Vec::new(),
        }
    }

    /// Replaces the content of `guest_heartbeat.conf`.
    pub fn config(mut self, text: &str) -> GuestImage {
        self.config = text.to_string();
        self
    }

    /// Adds a file at the absolute `path` with permission bits `mode` (e.g. a health script).
    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> GuestImage {
        self.files.push(Injected {
            path: path.to_string(),
            mode,
            data: data.to_vec(),
        });
        self
    }

    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Builds the image (or finds it in the cache) and returns the path of the `.cpio.gz`.
    pub fn build(&self, setup: &Setup, guest: &Path) -> Result<PathBuf, ImageError> {
        self.build_in(setup, guest, &crate::setup::target_dir().join("e2e-images"))
    }

    /// Like [`GuestImage::build`] with the cache in `dir`.
    pub fn build_in(&self, setup: &Setup, guest: &Path, dir: &Path) -> Result<PathBuf, ImageError> {
        let archive = self.archive(setup, guest)?;
        let mut hasher = DefaultHasher::new();
        hasher.write(&archive);
        let path = dir.join(format!(
            "{:016x}-{}.cpio.gz",
            hasher.finish(),
            archive.len()
        ));
        if path.is_file() {
            touch(&path);
            return Ok(path);
        }
        std::fs::create_dir_all(dir).map_err(|source| write_error(dir, source))?;
        write_gzip(&path, &archive)?;
        prune(dir, KEEP_IMAGES);
        Ok(path)
    }

    /// The uncompressed cpio archive.
    fn archive(&self, setup: &Setup, guest: &Path) -> Result<Vec<u8>, ImageError> {
        self.check()?;
        let mut w = CpioWriter::new();
        for dir in self.directories() {
            w.dir(&dir, 0o755);
        }
        w.char_device("dev/console", 0o600, 5, 1);
        w.file("bin/busybox", 0o755, &read(&setup.busybox)?);
        for applet in APPLETS {
            w.symlink(&format!("bin/{applet}"), "busybox");
        }
        for module in MODULES {
            let ko = setup.modules.join(format!("{module}.ko"));
            w.file(&format!("lib/modules/{module}.ko"), 0o644, &read(&ko)?);
        }
        w.file("bin/tether-guest", 0o755, &read(guest)?);
        w.file("init", 0o755, init_script(&self.name).as_bytes());
        w.file(
            CONFIG_PATH.trim_start_matches('/'),
            0o644,
            self.config.as_bytes(),
        );
        for f in &self.files {
            w.file(f.path.trim_start_matches('/'), f.mode, &f.data);
        }
        Ok(w.finish())
    }

    fn check(&self) -> Result<(), ImageError> {
        let name_ok = (1..=63).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Err(ImageError::BadName(self.name.clone()));
        }
        for f in &self.files {
            let p = &f.path;
            let reserved = p == "/init" || p.starts_with("/bin/") || p.starts_with("/lib/");
            if !p.starts_with('/') || p.ends_with('/') || p.contains("/../") || reserved {
                return Err(ImageError::BadPath(p.clone()));
            }
        }
        Ok(())
    }

    /// Every directory of the image, parents first.
    fn directories(&self) -> BTreeSet<String> {
        let mut dirs: BTreeSet<String> = ["bin", "dev", "etc", "lib", "lib/modules", "proc"]
            .into_iter()
            .chain(["run", "sys", "tmp"])
            .map(String::from)
            .collect();
        let files = self
            .files
            .iter()
            .map(|f| f.path.as_str())
            .chain([CONFIG_PATH]);
        for path in files {
            let mut parent = Path::new(path.trim_start_matches('/')).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(dir.to_string_lossy().into_owned());
                parent = dir.parent();
            }
        }
        dirs
    }
}

/// The guest's `/init`; `name` has been checked to be shell-safe.
fn init_script(name: &str) -> String {
    let modules = MODULES.join(" ");
    format!(
        r#"#!/bin/sh
# Test guest init: mount, load virtio modules, link virtio ports, run tether-guest forever.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
for m in {modules}; do
  insmod /lib/modules/$m.ko || echo "init: insmod $m failed"
done
mkdir -p /dev/virtio-ports
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  for p in /sys/class/virtio-ports/*; do
    [ -e "$p/name" ] && ln -sf "../${{p##*/}}" "/dev/virtio-ports/$(cat "$p/name")"
  done
  [ -e /dev/virtio-ports/{PORT_NAME} ] && break
  sleep 0.1
done
hostname {name}
echo "init: ready at $(cut -d' ' -f1 /proc/uptime)s, ports: $(ls /dev/virtio-ports)"
while true; do
  /bin/tether-guest --device /dev/virtio-ports/{PORT_NAME} --config {CONFIG_PATH} --name {name}
  echo "init: tether-guest exited with status $? at $(cut -d' ' -f1 /proc/uptime)s"
  sleep 1
done
"#
    )
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write_error(path: &Path, source: std::io::Error) -> ImageError {
    ImageError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Compresses `archive` into `path` through a temporary file, so a reader never sees half of it.
fn write_gzip(path: &Path, archive: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut gz = GzEncoder::new(std::io::BufWriter::new(file), Compression::default());
        gz.write_all(archive)?;
        gz.finish()?.flush()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        write_error(path, source)
    })
}

/// Marks a cached image as recently used.
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Deletes all but the `keep` most recently used images in `dir`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut images: Vec<_> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cpio.gz"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    images.sort_by_key(|image| std::cmp::Reverse(image.0));
    for (_, path) in images.into_iter().skip(keep) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
#[path = "image_tests.rs"]
mod tests;
