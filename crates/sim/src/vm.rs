//! One simulated VM: its sockets, its state, and the tasks that make it behave like QEMU.
//!
//! A running VM has three tasks: the channel [`Relay`], the [QMP server](crate::qmp) and the
//! guest (a boot delay, then the real `tether_guest::Daemon`). The state they share lives in
//! [`VmShared`] behind a plain mutex that is never held across an `.await`; changes that the
//! relay and the booting guest must follow are published as a [`Flow`] on a watch channel.
//! [`SimVm`] is the cheap, cloneable handle that tests, the demo and the QMP server act through.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tether_guest::GuestConfig;
use tokio::net::UnixListener;
use tokio::runtime::Handle;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::fault::{Fault, Flow, VmStatus};
use crate::guest::{self, GuestHandle, Guests};
use crate::qmp::{self, event};
use crate::relay::Relay;
use crate::SimError;

/// Most QMP commands remembered per VM (the oldest are forgotten first).
pub const QMP_LOG_LIMIT: usize = 1024;

/// Where a VM's files live.
#[derive(Debug, Clone)]
pub(crate) struct VmPaths {
    pub channel: PathBuf,
    pub qmp: PathBuf,
    pub port: PathBuf,
    pub health_script: PathBuf,
    pub unhealthy_flag: PathBuf,
    pub event_script: Option<PathBuf>,
    pub api: PathBuf,
    pub veto_flag: PathBuf,
    pub event_log: PathBuf,
}

/// State shared by a VM's tasks and handles.
#[derive(Debug)]
pub(crate) struct VmShared {
    pub uuid: String,
    pub name: String,
    pub paths: VmPaths,
    pub guest_config: GuestConfig,
    pub boot_delay: Duration,
    pub runtime: Handle,
    pub guests: Guests,
    pub flow: watch::Sender<Flow>,
    pub events: broadcast::Sender<Value>,
    state: Mutex<VmState>,
}

#[derive(Debug)]
struct VmState {
    status: VmStatus,
    fault: Fault,
    resets: u32,
    boot: u64,
    qmp_log: Vec<String>,
    relay: Option<JoinHandle<()>>,
    qmp: Option<JoinHandle<()>>,
    guest: Option<GuestHandle>,
}

/// A handle on one simulated VM; cheap to clone.
#[derive(Debug, Clone)]
pub struct SimVm {
    pub(crate) shared: Arc<VmShared>,
}

impl VmShared {
    pub fn new(
        uuid: String,
        name: String,
        paths: VmPaths,
        guest_config: GuestConfig,
        boot_delay: Duration,
        guests: Guests,
    ) -> VmShared {
        VmShared {
            uuid,
            name,
            paths,
            guest_config,
            boot_delay,
            runtime: Handle::current(),
            guests,
            flow: watch::Sender::new(Flow::default()),
            events: broadcast::Sender::new(64),
            state: Mutex::new(VmState {
                status: VmStatus::Stopped,
                fault: Fault::None,
                resets: 0,
                boot: 0,
                qmp_log: Vec::new(),
                relay: None,
                qmp: None,
                guest: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, VmState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, state: &VmState) {
        self.flow
            .send_replace(Flow::of(state.status, &state.fault, state.boot));
    }

    pub fn status(&self) -> VmStatus {
        self.state().status
    }

    pub fn record_qmp(&self, command: &str) {
        let mut state = self.state();
        if state.qmp_log.len() >= QMP_LOG_LIMIT {
            state.qmp_log.remove(0);
        }
        state.qmp_log.push(command.to_owned());
    }

    /// Binds the sockets (replacing stale files) and starts the relay, QMP and guest tasks.
    pub fn start(self: &Arc<Self>) -> Result<(), SimError> {
        let paths = &self.paths;
        guest::write_health_script(&paths.health_script, &paths.unhealthy_flag)?;
        remove_file(&paths.unhealthy_flag);
        if let Some(script) = &paths.event_script {
            guest::write_event_script(script, &paths.veto_flag, &paths.event_log)?;
        }
        remove_file(&paths.veto_flag);
        remove_file(&paths.event_log);
        let channel = bind(&paths.channel)?;
        let port = bind(&paths.port)?;
        let monitor = bind(&paths.qmp)?;
        let mut state = self.state();
        state.status = VmStatus::Running;
        state.fault = Fault::None;
        state.boot += 1;
        self.publish(&state);
        let relay = Relay::new(self.clone(), channel, port);
        state.relay = Some(self.runtime.spawn(relay.run()));
        state.qmp = Some(self.runtime.spawn(qmp::serve(self.clone(), monitor)));
        state.guest = Some(self.spawn_guest(self.boot_delay));
        Ok(())
    }

    /// Stops everything at once, as a QEMU exit does: the host's connection ends (EOF), the
    /// guest is gone and the socket files are removed. Safe to call on a stopped VM.
    pub fn stop(&self) {
        let mut state = self.state();
        state.guest = None;
        for task in [state.relay.take(), state.qmp.take()].into_iter().flatten() {
            task.abort();
        }
        if state.status != VmStatus::Stopped {
            for path in [&self.paths.channel, &self.paths.qmp, &self.paths.port] {
                remove_file(path);
            }
            remove_file(&self.paths.unhealthy_flag);
        }
        state.status = VmStatus::Stopped;
        self.publish(&state);
    }

    /// A hard reset: the guest daemon is killed, faults are cleared and a fresh daemon boots
    /// after the boot delay. The host's channel connection is untouched.
    pub fn reset(self: &Arc<Self>) -> Result<(), SimError> {
        let mut state = self.state();
        if state.status == VmStatus::Stopped {
            return Err(SimError::Stopped(self.name.clone()));
        }
        state.resets += 1;
        state.boot += 1;
        state.fault = Fault::None;
        remove_file(&self.paths.unhealthy_flag);
        self.publish(&state);
        state.guest = Some(self.spawn_guest(self.boot_delay)); // the old guest dies here
        drop(state);
        let _ = self.events.send(event("RESET", qmp::reset_data(false)));
        let _ = self.events.send(event("RESET", qmp::reset_data(true)));
        Ok(())
    }

    /// Pauses (`stop`) or resumes (`cont`) the VM; true when the state changed.
    pub fn set_paused(&self, paused: bool) -> bool {
        let mut state = self.state();
        let (from, to) = match paused {
            true => (VmStatus::Running, VmStatus::Paused),
            false => (VmStatus::Paused, VmStatus::Running),
        };
        if state.status != from {
            return false;
        }
        state.status = to;
        self.publish(&state);
        true
    }

    pub fn set_fault(self: &Arc<Self>, fault: Fault) {
        let mut state = self.state();
        match &fault {
            Fault::Unhealthy(reason) => {
                if let Err(e) = std::fs::write(&self.paths.unhealthy_flag, reason) {
                    tracing::warn!(vm = %self.name, error = %e, "cannot raise the unhealthy flag");
                }
            }
            _ => remove_file(&self.paths.unhealthy_flag),
        }
        let was_crashed = state.fault == Fault::Crash;
        let crash = fault == Fault::Crash && !was_crashed;
        state.fault = fault;
        if crash {
            state.boot += 1;
            state.guest = None;
        }
        self.publish(&state);
        if was_crashed && state.fault != Fault::Crash && state.status != VmStatus::Stopped {
            // The init system restarts the daemon once the fault is cleared.
            state.guest = Some(self.spawn_guest(Duration::ZERO));
        }
    }

    fn spawn_guest(self: &Arc<Self>, delay: Duration) -> GuestHandle {
        self.guests.boot(self.clone(), delay)
    }
}

impl SimVm {
    /// The VM's uuid (random, v4 format).
    pub fn uuid(&self) -> &str {
        &self.shared.uuid
    }

    /// The VM's name (`vm-1`, `vm-2`, …), also the name its guest sends in `init`.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The heartbeat channel socket, `<channel_dir>/cgcs.heartbeat.<uuid>.sock`.
    pub fn channel_path(&self) -> PathBuf {
        self.shared.paths.channel.clone()
    }

    /// The QMP monitor socket, `<uuid>.qmp`.
    pub fn qmp_path(&self) -> PathBuf {
        self.shared.paths.qmp.clone()
    }

    /// Injects `fault` (replacing any other); [`Fault::None`] clears it.
    pub fn set_fault(&self, fault: Fault) {
        tracing::info!(vm = %self.name(), %fault, "fault set");
        self.shared.set_fault(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        self.shared.state().fault.clone()
    }

    /// Running, paused or stopped.
    pub fn status(&self) -> VmStatus {
        self.shared.status()
    }

    /// The guest daemon's application API socket, where applications "inside" the VM
    /// register (`tether-guest --api-socket`).
    pub fn api_socket(&self) -> PathBuf {
        self.shared.paths.api.clone()
    }

    /// Makes the VM's event script veto every vote with `reason` (`None`: accept again).
    /// Only with [`crate::SimConfig::event_script`].
    pub fn set_veto(&self, reason: Option<&str>) -> Result<(), SimError> {
        let path = &self.shared.paths.veto_flag;
        match reason {
            Some(reason) => std::fs::write(path, reason).map_err(|source| SimError::Write {
                path: path.clone(),
                source,
            }),
            None => {
                remove_file(path);
                Ok(())
            }
        }
    }

    /// What the VM's event script was called with so far (`revocable reboot`, …), oldest
    /// first.
    pub fn notifications(&self) -> Vec<String> {
        std::fs::read_to_string(&self.shared.paths.event_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How many resets (QMP `system_reset` or [`SimVm::reset`]) the VM has had.
    pub fn resets(&self) -> u32 {
        self.shared.state().resets
    }

    /// The QMP commands received so far (their `execute` names), oldest first.
    pub fn qmp_log(&self) -> Vec<String> {
        self.shared.state().qmp_log.clone()
    }

    /// Resets the VM as QMP `system_reset` does.
    pub fn reset(&self) -> Result<(), SimError> {
        self.shared.reset()
    }

    /// Quits the VM as QMP `quit` does: `SHUTDOWN` event, EOF on the channel, files removed.
    pub async fn quit(&self) {
        if self.status() != VmStatus::Stopped {
            let _ = self
                .shared
                .events
                .send(event("SHUTDOWN", qmp::shutdown_data()));
            // Let a connected monitor client see the event before its connection goes.
            tokio::task::yield_now().await;
        }
        self.shared.stop();
    }

    /// Stops the VM if it runs, then starts it again: sockets recreated, a fresh guest.
    pub async fn restart(&self) -> Result<(), SimError> {
        self.quit().await;
        self.shared.start()
    }
}

fn bind(path: &Path) -> Result<UnixListener, SimError> {
    remove_file(path);
    UnixListener::bind(path).map_err(|source| SimError::Bind {
        path: path.to_path_buf(),
        source,
    })
}

fn remove_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove a file"),
    }
}
