//! The `virsh` backend: drive libvirt through its command-line client.
//!
//! Reboot is `virsh reset <uuid>` (a hard reset, like QMP `system_reset`), stop is
//! `virsh destroy <uuid>` (the VM is powered off; its definition stays), pause and unpause are
//! `virsh suspend` and `virsh resume` (libvirt's names for freezing the vCPUs), suspend is
//! `virsh managedsave` (memory saved to disk, the VM stopped) and resume is `virsh start`,
//! which restores a managed save. The `log` action runs nothing. A connection URI can be given (`-c qemu:///system`). A failed run becomes
//! [`HypervisorError::Refused`] carrying virsh's own stderr, which names the reason (no such
//! domain, domain not running, cannot connect). We use the CLI rather than libvirt bindings
//! because those pin `libc` exactly.

use std::path::PathBuf;
use std::time::Duration;

use crate::process::{self, display_argv};
use crate::{Action, BoxFuture, Hypervisor, HypervisorError, Instance};

/// How long one virsh run may take unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Carries out actions with `virsh`.
#[derive(Debug, Clone)]
pub struct VirshBackend {
    binary: PathBuf,
    connect: Option<String>,
    timeout: Duration,
}

impl Default for VirshBackend {
    fn default() -> Self {
        VirshBackend::new(PathBuf::from("virsh"))
    }
}

impl VirshBackend {
    /// Uses `binary` (looked up in `PATH` when it has no slash; `virsh` by default).
    pub fn new(binary: PathBuf) -> VirshBackend {
        VirshBackend {
            binary,
            connect: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Passes `-c uri` to every run (for example `qemu:///system`).
    pub fn with_connect(mut self, uri: impl Into<String>) -> VirshBackend {
        self.connect = Some(uri.into());
        self
    }

    /// The same backend with a different time limit per run.
    pub fn with_timeout(mut self, timeout: Duration) -> VirshBackend {
        self.timeout = timeout;
        self
    }

    /// The argv for `action` on `instance`, or `None` when nothing is to be run.
    pub fn argv(&self, instance: &Instance, action: Action) -> Option<Vec<String>> {
        let verb = match action {
            Action::Log => return None,
            Action::Reboot => "reset",
            Action::Stop => "destroy",
            Action::Pause => "suspend",
            Action::Unpause => "resume",
            Action::Suspend => "managedsave",
            Action::Resume => "start",
        };
        let mut argv = vec![self.binary.to_string_lossy().into_owned()];
        if let Some(uri) = &self.connect {
            argv.extend(["-c".to_owned(), uri.clone()]);
        }
        argv.extend([verb.to_owned(), instance.uuid.clone()]);
        Some(argv)
    }

    async fn run(&self, instance: &Instance, action: Action) -> Result<(), HypervisorError> {
        let Some(argv) = self.argv(instance, action) else {
            tracing::warn!(instance = %instance.uuid, %action, "corrective action recorded only");
            return Ok(());
        };
        let shown = display_argv(&argv);
        tracing::info!(instance = %instance.uuid, %action, command = %shown, "running virsh");
        let finished = process::run(&argv, &shown, self.timeout).await?;
        if finished.status.success() {
            return Ok(());
        }
        let message = if finished.stderr.is_empty() {
            finished.status.to_string()
        } else {
            format!("{} ({})", finished.stderr, finished.status)
        };
        Err(HypervisorError::Refused {
            command: shown,
            message,
        })
    }
}

impl Hypervisor for VirshBackend {
    fn name(&self) -> &'static str {
        "virsh"
    }

    fn apply<'a>(
        &'a self,
        instance: &'a Instance,
        action: Action,
    ) -> BoxFuture<'a, Result<(), HypervisorError>> {
        Box::pin(self.run(instance, action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_argv_per_action() {
        let instance = Instance {
            uuid: "u-1".into(),
            name: "n".into(),
        };
        let v = VirshBackend::default().with_connect("qemu:///system");
        assert_eq!(
            v.argv(&instance, Action::Reboot),
            Some(
                ["virsh", "-c", "qemu:///system", "reset", "u-1"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert_eq!(
            v.argv(&instance, Action::Stop).map(|a| a[3].clone()),
            Some("destroy".to_owned())
        );
        assert_eq!(v.argv(&instance, Action::Log), None);
        let verbs: Vec<_> = [
            Action::Pause,
            Action::Unpause,
            Action::Suspend,
            Action::Resume,
        ]
        .into_iter()
        .filter_map(|action| v.argv(&instance, action).map(|a| a[3].clone()))
        .collect();
        assert_eq!(verbs, ["suspend", "resume", "managedsave", "start"]);
    }
}
