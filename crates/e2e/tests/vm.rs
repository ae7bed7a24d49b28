//! Real Linux guests under QEMU, running `tether-guest`, heartbeated by `tether host`.
//!
//! Every test boots its own VM (at most two at once) and prints `SKIP:` and passes when QEMU or
//! the kernel cache is missing (`scripts/install-test-deps` installs both).

use std::path::PathBuf;
use std::time::Duration;

use tether_e2e::{static_guest, ChannelDouble, GuestImage, Setup, Vm, VmSpec};
use tether_proto::Message;
use tether_testkit::TempDir;

/// Boot to the guest's first message; ~3-5 s under TCG, allow for a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// A test's scratch space: the channel folder (what the agent watches) and a work folder.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tether_testkit::temp_dir(),
        }
    }

    fn channel_dir(&self) -> PathBuf {
        self.dir.path().join("ch")
    }

    fn work_dir(&self, what: &str) -> PathBuf {
        self.dir.path().join(what)
    }

    fn boot(&self, setup: &Setup, image: &GuestImage) -> Vm {
        let guest = static_guest().unwrap_or_else(|e| panic!("static tether-guest: {e}"));
        let initrd = image
            .build(setup, &guest)
            .unwrap_or_else(|e| panic!("image: {e}"));
        let spec = VmSpec {
            setup: setup.clone(),
            initrd,
            name: image.name().to_string(),
            channel_dir: self.channel_dir(),
            work_dir: self.work_dir(&format!("vm-{}", image.name())),
        };
        Vm::start(&spec).unwrap_or_else(|e| panic!("VM start: {e}"))
    }
}

#[test]
fn guest_boots_and_registers_on_the_channel() {
    let Some(setup) = tether_e2e::setup_or_skip("guest_boots_and_registers_on_the_channel") else {
        return;
    };
    let scratch = Scratch::new();
    let vm = scratch.boot(&setup, &GuestImage::new("e2e-boot"));
    let mut double = ChannelDouble::connect(vm.channel_socket()).unwrap();
    let message = double
        .next_message(BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let boot_to_init = vm.elapsed();
    let Message::Init(init) = message else {
        panic!("first message is not init: {message:?}")
    };
    assert_eq!(init.name, "e2e-boot");
    assert_eq!(init.heartbeat_interval_ms, 1000);
    eprintln!("boot to first init: {boot_to_init:?}");
}
