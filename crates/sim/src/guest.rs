//! The guest inside a simulated VM: the real `tether_guest::Daemon`, in socket mode.
//!
//! Each boot waits for the boot delay (and, if the VM is paused, for `cont`), then runs a fresh
//! daemon against the VM's private port socket until its [`GuestHandle`] is dropped by a
//! reset, a crash or a quit. The daemon is configured with a per-VM health-check script, run
//! every second (or at the configured interval if that is longer), that reports unhealthy with the text of a flag file while that file exists;
//! the `Unhealthy` fault writes the flag. The script is plain `/bin/sh`, so the guest's script
//! handling is exercised for real.
//!
//! All guests of a simulation run as tasks on one thread of their own ([`Guests`]), with a
//! current-thread runtime, much as a VM's vCPUs run beside QEMU's main loop: a busy host agent
//! in the same process does not stall the guests, and the daemon's future need not be `Send`.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tether_guest::{Daemon, GuestConfig, Options};
use tokio::sync::{mpsc, oneshot};

use crate::vm::VmShared;
use crate::SimError;

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The thread the guests run on; it ends once every handle on it is gone.
#[derive(Debug, Clone)]
pub(crate) struct Guests {
    jobs: mpsc::UnboundedSender<Job>,
}

/// A running (or booting) guest; dropping it kills the guest at once.
#[derive(Debug)]
pub(crate) struct GuestHandle {
    _kill: oneshot::Sender<()>,
}

impl Guests {
    /// Starts the guests' thread.
    pub fn start() -> Result<Guests, SimError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SimError::GuestThread)?;
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("sim-guests".to_owned())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    while let Some(job) = queue.recv().await {
                        tokio::task::spawn_local(job());
                    }
                });
            })
            .map_err(SimError::GuestThread)?;
        Ok(Guests { jobs })
    }

    /// Boots a guest for `vm` after `delay`.
    pub fn boot(&self, vm: Arc<VmShared>, delay: Duration) -> GuestHandle {
        let (kill, killed) = oneshot::channel::<()>();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                tokio::select! {
                    biased; // a kill wins over whatever the daemon was woken for
                    _ = killed => {}
                    () = run(vm, delay) => {}
                }
            })
        });
        if self.jobs.send(job).is_err() {
            tracing::error!("the guests' thread is gone; no guest boots");
        }
        GuestHandle { _kill: kill }
    }
}

/// Boots a guest after `delay`, once the VM is not paused, and runs it until killed.
async fn run(vm: Arc<VmShared>, delay: Duration) {
    tokio::time::sleep(delay).await;
    let mut flow = vm.flow.subscribe();
    if flow.wait_for(|f| !f.paused).await.is_err() {
        return;
    }
    let options = Options {
        device: vm.paths.port.clone(),
        name: vm.name.clone(),
        config: config_for(&vm.guest_config, &vm.paths.health_script),
        api_socket: None,
    };
    tracing::debug!(vm = %vm.name, "guest booted");
    match Daemon::new(options).run(std::future::pending()).await {
        Ok(()) => tracing::info!(vm = %vm.name, "guest daemon exited"),
        Err(e) => tracing::warn!(vm = %vm.name, error = %e, "guest daemon failed"),
    }
}

/// The VM's guest configuration: the simulation's, with the VM's health check added. The
/// check runs every second unless the simulation's configuration asks for a longer interval
/// (thousands of VMs cannot each fork a shell every second).
fn config_for(base: &GuestConfig, health_script: &Path) -> GuestConfig {
    GuestConfig {
        health_check_script: Some(health_script.to_path_buf()),
        health_check_interval_secs: base.health_check_interval_secs.max(1),
        ..base.clone()
    }
}

/// Writes the health-check script: unhealthy (exit 1, printing the flag file) while
/// `flag` exists, healthy otherwise.
pub(crate) fn write_health_script(script: &Path, flag: &Path) -> Result<(), SimError> {
    let flag = shell_quote(&flag.to_string_lossy());
    let body = format!(
        "#!/bin/sh\n# Health check of a simulated VM: unhealthy while the flag file exists.\n\
         if [ -f {flag} ]; then cat {flag}; exit 1; fi\nexit 0\n"
    );
    let write = || -> io::Result<()> {
        std::fs::write(script, body)?;
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755))
    };
    write().map_err(|source| SimError::Write {
        path: script.to_path_buf(),
        source,
    })
}

/// `text` in single quotes, safe as one shell word whatever it contains.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_health_check_runs_every_second_or_as_configured() {
        let script = Path::new("/p/health");
        let fast = config_for(&GuestConfig::default(), script);
        assert_eq!(fast.health_check_interval_secs, 1);
        assert_eq!(fast.health_check_script.as_deref(), Some(script));
        let base = GuestConfig {
            health_check_interval_secs: 60,
            ..GuestConfig::default()
        };
        assert_eq!(config_for(&base, script).health_check_interval_secs, 60);
    }

    #[test]
    fn quotes_any_text_as_one_word() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn the_script_follows_the_flag_file() {
        let dir = tether_testkit::temp_dir();
        let (script, flag) = (dir.path().join("health"), dir.path().join("it's flagged"));
        write_health_script(&script, &flag).unwrap();

        let healthy = Command::new(&script).output().unwrap();
        assert_eq!(healthy.status.code(), Some(0));

        std::fs::write(&flag, "disk full").unwrap();
        let unhealthy = Command::new(&script).output().unwrap();
        assert_eq!(unhealthy.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&unhealthy.stdout), "disk full");
    }
}
