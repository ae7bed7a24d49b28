//! Tests of the image builder on stand-in input files (no kernel or busybox needed).

use std::io::Read;

use super::*;
use crate::cpio::{parse, Entry};

/// A `Setup` whose busybox, modules and guest are small files in `dir`.
fn fake_setup(dir: &Path) -> (Setup, PathBuf) {
    let modules = dir.join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    for m in MODULES {
        std::fs::write(modules.join(format!("{m}.ko")), format!("module {m}")).unwrap();
    }
    std::fs::write(dir.join("busybox"), b"busybox bytes").unwrap();
    std::fs::write(dir.join("guest"), b"guest bytes").unwrap();
    let setup = Setup {
        qemu: dir.join("qemu"),
        kernel: dir.join("vmlinuz"),
        modules,
        busybox: dir.join("busybox"),
    };
    (setup, dir.join("guest"))
}

fn unpack(path: &Path) -> Vec<Entry> {
    let mut archive = Vec::new();
    let gz = std::fs::File::open(path).unwrap();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut archive)
        .unwrap();
    parse(&archive)
}

fn find<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} not in the image"))
}

#[test]
fn image_holds_init_guest_modules_config_and_injected_files() {
    let tmp = tether_testkit::temp_dir();
    let (setup, guest) = fake_setup(tmp.path());
    let image = GuestImage::new("vm-1")
        .config("HB_INTERVAL=1000\nCORRECTIVE_ACTION=stop\n")
        .file("/etc/tether/health", 0o755, b"#!/bin/sh\nexit 1\n");
    let path = image
        .build_in(&setup, &guest, &tmp.path().join("cache"))
        .unwrap();
    let entries = unpack(&path);

    assert_eq!(find(&entries, "bin/tether-guest").data, b"guest bytes");
    assert_eq!(find(&entries, "bin/busybox").data, b"busybox bytes");
    assert_eq!(find(&entries, "bin/sh").data, b"busybox");
    assert_eq!(
        find(&entries, "lib/modules/virtio_console.ko").data,
        b"module virtio_console"
    );
    assert_eq!(find(&entries, "dev/console").rdev, (5, 1));
    let config = find(&entries, "etc/tether/guest_heartbeat.conf");
    assert_eq!(config.data, b"HB_INTERVAL=1000\nCORRECTIVE_ACTION=stop\n");
    let health = find(&entries, "etc/tether/health");
    assert_eq!(
        (health.mode & 0o777, health.data.as_slice()),
        (0o755, &b"#!/bin/sh\nexit 1\n"[..])
    );

    let init = String::from_utf8(find(&entries, "init").data.clone()).unwrap();
    assert!(init.starts_with("#!/bin/sh\n"));
    assert!(init.contains("for m in virtio_ring virtio virtio_pci_modern_dev"));
    assert!(init.contains(
        "/bin/tether-guest --device /dev/virtio-ports/cgcs.heartbeat \
         --config /etc/tether/guest_heartbeat.conf --name vm-1"
    ));
    assert!(init.contains("hostname vm-1"));
}

#[test]
fn every_entry_comes_after_its_parent_directory() {
    let tmp = tether_testkit::temp_dir();
    let (setup, guest) = fake_setup(tmp.path());
    let image = GuestImage::new("vm").file("/opt/a/b/c.sh", 0o755, b"x");
    let entries = unpack(&image.build_in(&setup, &guest, tmp.path()).unwrap());
    let mut seen = BTreeSet::new();
    for Entry { path, .. } in &entries {
        if let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            assert!(
                seen.contains(parent.to_str().unwrap()),
                "{path} before its directory"
            );
        }
        seen.insert(path.clone());
    }
    assert!(seen.contains("opt/a/b/c.sh"));
}

#[test]
fn unchanged_images_are_reused_and_changed_ones_rebuilt() {
    let tmp = tether_testkit::temp_dir();
    let (setup, guest) = fake_setup(tmp.path());
    let cache = tmp.path().join("cache");
    let a = GuestImage::new("vm")
        .build_in(&setup, &guest, &cache)
        .unwrap();
    let written = std::fs::metadata(&a).unwrap().modified().unwrap();
    let again = GuestImage::new("vm")
        .build_in(&setup, &guest, &cache)
        .unwrap();
    assert_eq!(a, again);
    let other = GuestImage::new("vm").config("HB_INTERVAL=500\n");
    let b = other.build_in(&setup, &guest, &cache).unwrap();
    assert_ne!(a, b);
    std::fs::write(&guest, b"a newer guest").unwrap();
    let c = GuestImage::new("vm")
        .build_in(&setup, &guest, &cache)
        .unwrap();
    assert_ne!(a, c);
    assert!(std::fs::metadata(&a).unwrap().modified().unwrap() >= written);
}

#[test]
fn the_cache_keeps_only_the_newest_images() {
    let tmp = tether_testkit::temp_dir();
    let (setup, guest) = fake_setup(tmp.path());
    let cache = tmp.path().join("cache");
    let mut built = Vec::new();
    for i in 0..KEEP_IMAGES + 3 {
        let image = GuestImage::new("vm").config(&format!("HB_INTERVAL={}\n", 1000 + i));
        built.push(image.build_in(&setup, &guest, &cache).unwrap());
        // Distinct modification times, even on coarse-grained file systems.
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
        let file = std::fs::File::options()
            .append(true)
            .open(built.last().unwrap())
            .unwrap();
        file.set_modified(t).unwrap();
    }
    prune(&cache, KEEP_IMAGES);
    let left = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(left, KEEP_IMAGES);
    assert!(!built[0].exists() && !built[2].exists());
    assert!(built.last().unwrap().exists());
}

#[test]
fn unsafe_names_and_paths_are_refused() {
    let tmp = tether_testkit::temp_dir();
    let (setup, guest) = fake_setup(tmp.path());
    for name in ["", "a b", "vm;reboot", "$(x)", &"n".repeat(64)] {
        let err = GuestImage::new(name)
            .build_in(&setup, &guest, tmp.path())
            .unwrap_err();
        assert!(matches!(err, ImageError::BadName(_)), "{name:?}: {err}");
    }
    for path in [
        "relative",
        "/init",
        "/bin/sh",
        "/lib/modules/x.ko",
        "/etc/",
        "/a/../init",
    ] {
        let image = GuestImage::new("vm").file(path, 0o644, b"");
        let err = image.build_in(&setup, &guest, tmp.path()).unwrap_err();
        assert!(matches!(err, ImageError::BadPath(_)), "{path:?}: {err}");
    }
}

#[test]
fn a_missing_input_file_is_named_in_the_error() {
    let tmp = tether_testkit::temp_dir();
    let (setup, _) = fake_setup(tmp.path());
    let missing = tmp.path().join("no-guest");
    let err = GuestImage::new("vm")
        .build_in(&setup, &missing, tmp.path())
        .unwrap_err();
    assert!(err.to_string().contains("no-guest"), "{err}");
}
