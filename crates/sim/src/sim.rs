//! A set of simulated VMs started together ([`Sim`]), and the text commands applied to them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::command::Command;
use crate::fault::Fault;
use crate::guest::Guests;
use crate::vm::{SimVm, VmPaths, VmShared};
use crate::{SimConfig, SimError};

/// Longest path a UNIX socket address holds.
const MAX_SOCKET_PATH: usize = 107;

/// Simulated VMs, `vm-1` to `vm-<count>`, each with a random uuid. Dropping it stops them all.
#[derive(Debug)]
pub struct Sim {
    vms: Vec<SimVm>,
}

impl Sim {
    /// Starts `count` VMs with their QMP sockets in `config.channel_dir`.
    pub async fn start(config: SimConfig, count: usize) -> Result<Sim, SimError> {
        let qmp_dir = config.channel_dir.clone();
        Sim::start_with_qmp_dir(config, count, &qmp_dir).await
    }

    /// Starts `count` VMs with their QMP sockets at `<qmp_dir>/<uuid>.qmp`.
    pub async fn start_with_qmp_dir(
        config: SimConfig,
        count: usize,
        qmp_dir: &Path,
    ) -> Result<Sim, SimError> {
        for dir in [
            &config.channel_dir,
            &config.private_dir,
            &qmp_dir.to_path_buf(),
        ] {
            std::fs::create_dir_all(dir).map_err(|source| SimError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let guests = Guests::start()?;
        let mut sim = Sim {
            vms: Vec::with_capacity(count),
        };
        for index in 1..=count {
            let uuid = random_uuid();
            let paths = paths(&config, qmp_dir, &uuid)?;
            let shared = Arc::new(VmShared::new(
                uuid,
                format!("vm-{index}"),
                paths,
                config.guest.clone(),
                config.boot_delay,
                guests.clone(),
            ));
            shared.start()?;
            sim.vms.push(SimVm { shared });
        }
        tracing::info!(count, channel_dir = %config.channel_dir.display(), "simulated VMs started");
        Ok(sim)
    }

    /// Every VM, in name order.
    pub fn vms(&self) -> &[SimVm] {
        &self.vms
    }

    /// The VM with this name or uuid.
    pub fn vm(&self, uuid_or_name: &str) -> Option<&SimVm> {
        self.vms
            .iter()
            .find(|vm| vm.name() == uuid_or_name || vm.uuid() == uuid_or_name)
    }

    /// Quits every VM (as QMP `quit` does) and waits for nothing else.
    pub async fn shutdown(self) {
        for vm in &self.vms {
            vm.quit().await;
        }
    }

    /// Carries out a text command; returns what to tell the operator.
    pub async fn apply(&self, command: &Command) -> Result<String, SimError> {
        let Some(name) = command.vm() else {
            return Ok(self.listing());
        };
        let vm = self
            .vm(name)
            .ok_or_else(|| SimError::NoSuchVm(name.to_owned()))?;
        let fault = match command {
            Command::Hang(_) => Some(Fault::Hang),
            Command::Unhealthy { reason, .. } => Some(Fault::Unhealthy(reason.clone())),
            Command::Crash(_) => Some(Fault::Crash),
            Command::Slow { delay, .. } => Some(Fault::Slow(*delay)),
            Command::Heal(_) => Some(Fault::None),
            _ => None,
        };
        match (fault, command) {
            (Some(fault), _) => vm.set_fault(fault),
            (None, Command::Reset(_)) => vm.reset()?,
            (None, Command::Quit(_)) => vm.quit().await,
            (None, _) => vm.restart().await?,
        }
        Ok(format!("{}: {} ({})", vm.name(), vm.status(), vm.fault()))
    }

    /// One line per VM: name, uuid, status, fault, resets.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for vm in &self.vms {
            let _ = writeln!(
                out,
                "{:<8} {} {:<8} fault={} resets={}",
                vm.name(),
                vm.uuid(),
                vm.status(),
                vm.fault(),
                vm.resets()
            );
        }
        out
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        for vm in &self.vms {
            vm.shared.stop();
        }
    }
}

fn paths(config: &SimConfig, qmp_dir: &Path, uuid: &str) -> Result<VmPaths, SimError> {
    let private = |suffix: &str| config.private_dir.join(format!("{uuid}.{suffix}"));
    let paths = VmPaths {
        channel: config
            .channel_dir
            .join(format!("cgcs.heartbeat.{uuid}.sock")),
        qmp: qmp_dir.join(format!("{uuid}.qmp")),
        port: private("port"),
        health_script: private("health"),
        unhealthy_flag: private("unhealthy"),
        event_script: config.event_script.then(|| private("event")),
        api: private("api"),
        veto_flag: private("veto"),
        event_log: private("events"),
    };
    for socket in [&paths.channel, &paths.qmp, &paths.port, &paths.api] {
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(SimError::PathTooLong(PathBuf::from(socket)));
        }
    }
    Ok(paths)
}

/// A random uuid in version-4 format (lowercase, 8-4-4-4-12).
fn random_uuid() -> String {
    let bits = fastrand::u128(..);
    let bits = (bits & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_have_the_v4_shape() {
        for _ in 0..100 {
            let uuid = random_uuid();
            let groups: Vec<&str> = uuid.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(groups[2].starts_with('4'), "{uuid}");
            assert!(matches!(&groups[3][..1], "8" | "9" | "a" | "b"), "{uuid}");
            assert!(uuid
                .chars()
                .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        assert_ne!(random_uuid(), random_uuid());
    }
}
