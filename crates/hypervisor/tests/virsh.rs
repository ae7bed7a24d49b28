//! The virsh backend against a recording double of `virsh` (libvirt is not installed here).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tether_hypervisor::{Action, Hypervisor, HypervisorError, Instance, VirshBackend};
use tether_testkit::temp_dir;

const GOOD: &str = "8c3f1f6e-2a41-4e0b-9a55-0d2a3b1c9e77";
const MISSING: &str = "00000000-0000-4000-8000-000000000000";

/// A `virsh` double: appends its arguments to `calls`, and fails like virsh does for the uuid
/// [`MISSING`].
fn virsh_double(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let calls = dir.join("calls");
    let path = dir.join("virsh-double");
    let body = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {calls}\ncase \"$*\" in *{MISSING}*) \
         echo \"error: failed to get domain '{MISSING}'\" >&2; exit 1;; esac\nexit 0\n",
        calls = calls.display()
    );
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (path, calls)
}

fn instance(uuid: &str) -> Instance {
    Instance {
        uuid: uuid.to_owned(),
        name: "vm; reboot".to_owned(),
    }
}

#[tokio::test]
async fn reboot_resets_and_stop_destroys() {
    let dir = temp_dir();
    let (binary, calls) = virsh_double(dir.path());
    let backend = VirshBackend::new(binary).with_connect("qemu:///system");

    backend
        .apply(&instance(GOOD), Action::Reboot)
        .await
        .unwrap();
    backend.apply(&instance(GOOD), Action::Stop).await.unwrap();
    backend.apply(&instance(GOOD), Action::Log).await.unwrap();

    let calls = std::fs::read_to_string(calls).unwrap();
    assert_eq!(
        calls,
        format!("-c qemu:///system reset {GOOD}\n-c qemu:///system destroy {GOOD}\n")
    );
}

#[tokio::test]
async fn a_failed_run_carries_virsh_stderr() {
    let dir = temp_dir();
    let (binary, _) = virsh_double(dir.path());
    let backend = VirshBackend::new(binary);

    match backend.apply(&instance(MISSING), Action::Reboot).await {
        Err(HypervisorError::Refused { command, message }) => {
            assert!(command.ends_with(&format!("reset {MISSING}")), "{command}");
            assert!(message.contains("failed to get domain"), "{message}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_binary_is_an_io_error() {
    let backend = VirshBackend::new(PathBuf::from("/nonexistent/virsh"));
    let result = backend.apply(&instance(GOOD), Action::Stop).await;
    assert!(
        matches!(result, Err(HypervisorError::Io { .. })),
        "{result:?}"
    );
}
