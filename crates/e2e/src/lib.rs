//! Real-VM end-to-end tests for tether: a Linux guest under QEMU runs `tether-guest`, and the
//! real `tether host` heartbeats it over the virtio-serial channel and recovers it through QMP.
//!
//! The library holds the fixtures; the tests are in `tests/vm.rs` (`cargo test -p tether-e2e
//! --test vm`). The pieces:
//!
//! - [`setup`]: finds QEMU, busybox and the cloud kernel unpacked by
//!   `scripts/install-test-deps`, or says why the suite must skip; builds the static guest.
//! - [`image`] and [`cpio`]: the guest's initramfs, written as a cpio newc archive and cached
//!   by content hash.
//! - [`qemu`] and [`qmp`]: a running VM (software emulation unless `TETHER_E2E_KVM=1`) with the
//!   channel socket, a monitor for the host agent and one for the test; ended on drop.
//! - [`agent`]: the `tether host` process, its journal and HTTP API.
//! - [`double`]: a host-side channel double that reads what the guest sends.
//! - [`slots`]: at most two VMs at once (`TETHER_E2E_MAX_VMS`).

use std::io::Write;

pub mod agent;
pub mod cpio;
pub mod double;
pub mod image;
pub mod qemu;
pub mod qmp;
pub mod setup;
pub mod slots;

pub use agent::{Agent, AgentError, JournalEvent};
pub use double::{ChannelDouble, DoubleError};
pub use image::{GuestImage, ImageError, CONFIG_PATH, PORT_NAME};
pub use qemu::{Vm, VmError, VmSpec};
pub use qmp::{Qmp, QmpError};
pub use setup::{static_guest, BuildError, Setup};

/// The setup, or `None` after printing the `SKIP:` line when QEMU or the kernel is missing.
///
/// The line is written straight to stderr, past the test harness's output capture, so it shows
/// in the output of a passing test too.
///
/// Every VM test starts with `let Some(setup) = tether_e2e::setup_or_skip("name") else { return };`.
pub fn setup_or_skip(test: &str) -> Option<Setup> {
    match Setup::find() {
        Ok(setup) => Some(setup),
        Err(reason) => {
            let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
            None
        }
    }
}
