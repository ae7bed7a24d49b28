//! The `qmp` backend: act on a VM through its QEMU monitor socket.
//!
//! The socket path comes from a template with `{uuid}` (for example
//! `/var/lib/tether/qmp/{uuid}.qmp`, matching QEMU's `-qmp unix:<path>,server=on,wait=off`).
//! Each action opens a fresh connection, so no state is held between recoveries:
//! reboot is `system_reset`, then `query-status` and `cont` if the VM was paused (a reset keeps
//! a paused VM paused, and a paused VM never answers a heartbeat); stop is `quit`; pause is
//! `stop` and unpause is `cont`. Suspend and resume are `stop` and `cont` as well: saving a VM
//! to disk and bringing it back needs whoever starts QEMU (libvirt: use the `virsh` backend),
//! so over bare QMP a suspended VM keeps its memory in QEMU, frozen. The `log` action touches
//! nothing. QEMU serves one monitor client at a time, so this backend needs a
//! monitor socket that nothing else holds open.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{is_disconnect, QmpClient, DEFAULT_TIMEOUT};
use crate::{Action, BoxFuture, Hypervisor, HypervisorError, Instance};

/// Carries out actions over QMP.
#[derive(Debug, Clone)]
pub struct QmpBackend {
    path_template: String,
    timeout: Duration,
}

impl QmpBackend {
    /// Uses monitor sockets at `path_template` with `{uuid}` replaced by the instance uuid.
    pub fn new(path_template: String) -> QmpBackend {
        QmpBackend {
            path_template,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same backend allowing `timeout` for each step instead of 5 s.
    pub fn with_timeout(mut self, timeout: Duration) -> QmpBackend {
        self.timeout = timeout;
        self
    }

    /// The monitor socket of the VM with this uuid. The uuid must be hex digits and dashes
    /// only, so that it can never lead the path out of its directory.
    pub fn socket_path(&self, uuid: &str) -> Result<PathBuf, HypervisorError> {
        let valid = !uuid.is_empty() && uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !valid {
            return Err(HypervisorError::Protocol(format!(
                "instance uuid {:?} is not a uuid",
                uuid.escape_debug().to_string()
            )));
        }
        Ok(PathBuf::from(self.path_template.replace("{uuid}", uuid)))
    }

    async fn run(&self, instance: &Instance, action: Action) -> Result<(), HypervisorError> {
        if action == Action::Log {
            tracing::warn!(instance = %instance.uuid, %action, "corrective action recorded only");
            return Ok(());
        }
        let path = self.socket_path(&instance.uuid)?;
        tracing::info!(instance = %instance.uuid, %action, socket = %path.display(), "acting over QMP");
        let mut client = QmpClient::connect_with_timeout(&path, self.timeout).await?;
        match action {
            Action::Reboot => reboot(&mut client).await,
            Action::Stop => stop(&mut client).await,
            Action::Pause | Action::Suspend => client.execute("stop", None).await.map(drop),
            Action::Unpause | Action::Resume => client.execute("cont", None).await.map(drop),
            Action::Log => Ok(()),
        }
    }
}

/// `system_reset`, then `cont` if the VM is not running (a reset leaves a paused VM paused).
async fn reboot(client: &mut QmpClient) -> Result<(), HypervisorError> {
    client.execute("system_reset", None).await?;
    let status = client.execute("query-status", None).await?;
    let running = status.get("running").and_then(Value::as_bool);
    let state = status.get("status").and_then(Value::as_str).unwrap_or("");
    match running {
        Some(true) => Ok(()),
        Some(false) => {
            tracing::info!(status = state, "VM not running after reset; resuming it");
            client.execute("cont", None).await.map(drop)
        }
        None => Err(HypervisorError::Protocol(format!(
            "query-status answered without a running flag: {status}"
        ))),
    }
}

/// `quit`; QEMU may close the socket before its reply is read, which is success too.
async fn stop(client: &mut QmpClient) -> Result<(), HypervisorError> {
    match client.execute("quit", None).await {
        Ok(_) => Ok(()),
        Err(e) if is_disconnect(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Hypervisor for QmpBackend {
    fn name(&self) -> &'static str {
        "qmp"
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
    fn socket_path_refuses_what_is_not_a_uuid() {
        let b = QmpBackend::new("/run/qmp/{uuid}.qmp".to_owned());
        assert_eq!(
            b.socket_path("8c3f1f6e-2a41-4e0b-9a55-0d2a3b1c9e77").ok(),
            Some(PathBuf::from(
                "/run/qmp/8c3f1f6e-2a41-4e0b-9a55-0d2a3b1c9e77.qmp"
            ))
        );
        for bad in ["", "../etc", "a/b", "x y"] {
            assert!(b.socket_path(bad).is_err(), "{bad:?} accepted");
        }
    }
}
