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

use crate::vm::{VmPaths, VmShared};
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
        config: config_for(&vm.guest_config, &vm.paths),
        api_socket: Some(vm.paths.api.clone()),
    };
    tracing::debug!(vm = %vm.name, "guest booted");
    match Daemon::new(options).run(std::future::pending()).await {
        Ok(()) => tracing::info!(vm = %vm.name, "guest daemon exited"),
        Err(e) => tracing::warn!(vm = %vm.name, error = %e, "guest daemon failed"),
    }
}

/// The VM's guest configuration: the simulation's, with the VM's health check added (and
/// its event script, if it has one and the simulation's configuration names none). The
/// check runs every second unless the simulation's configuration asks for a longer interval
/// (thousands of VMs cannot each fork a shell every second).
fn config_for(base: &GuestConfig, paths: &VmPaths) -> GuestConfig {
    GuestConfig {
        health_check_script: Some(paths.health_script.clone()),
        health_check_interval_secs: base.health_check_interval_secs.max(1),
        event_notification_script: base
            .event_notification_script
            .clone()
            .or_else(|| paths.event_script.clone()),
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
    write_script(script, &body)
}

/// Writes the event notification script: records `<type> <event>` in `log`, vetoes a vote
/// (exit 1, printing the flag file as the reason) while `veto` exists, accepts otherwise.
pub(crate) fn write_event_script(script: &Path, veto: &Path, log: &Path) -> Result<(), SimError> {
    let (veto, log) = (
        shell_quote(&veto.to_string_lossy()),
        shell_quote(&log.to_string_lossy()),
    );
    let body = format!(
        "#!/bin/sh\n# Event script of a simulated VM: vetoes votes while the veto file exists.\n\
         echo \"$1 $2\" >> {log}\n\
         if [ \"$1\" = revocable ] && [ -f {veto} ]; then cat {veto}; exit 1; fi\nexit 0\n"
    );
    write_script(script, &body)
}

fn write_script(script: &Path, body: &str) -> Result<(), SimError> {
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

    fn paths(event_script: Option<&str>) -> VmPaths {
        VmPaths {
            channel: "/p/channel".into(),
            qmp: "/p/qmp".into(),
            port: "/p/port".into(),
            health_script: "/p/health".into(),
            unhealthy_flag: "/p/unhealthy".into(),
            event_script: event_script.map(Into::into),
            api: "/p/api".into(),
            veto_flag: "/p/veto".into(),
            event_log: "/p/events".into(),
        }
    }

    #[test]
    fn the_health_check_runs_every_second_or_as_configured() {
        let fast = config_for(&GuestConfig::default(), &paths(None));
        assert_eq!(fast.health_check_interval_secs, 1);
        assert_eq!(
            fast.health_check_script.as_deref(),
            Some(Path::new("/p/health"))
        );
        assert_eq!(fast.event_notification_script, None);
        let base = GuestConfig {
            health_check_interval_secs: 60,
            ..GuestConfig::default()
        };
        assert_eq!(
            config_for(&base, &paths(None)).health_check_interval_secs,
            60
        );
    }

    #[test]
    fn the_vms_event_script_is_used_unless_the_configuration_names_one() {
        let own = config_for(&GuestConfig::default(), &paths(Some("/p/event")));
        assert_eq!(
            own.event_notification_script.as_deref(),
            Some(Path::new("/p/event"))
        );
        let base = GuestConfig {
            event_notification_script: Some("/etc/script".into()),
            ..GuestConfig::default()
        };
        let named = config_for(&base, &paths(Some("/p/event")));
        assert_eq!(
            named.event_notification_script.as_deref(),
            Some(Path::new("/etc/script"))
        );
    }

    #[test]
    fn the_event_script_records_every_call_and_vetoes_votes_on_the_flag() {
        let dir = tether_testkit::temp_dir();
        let (script, veto, log) = (
            dir.path().join("event"),
            dir.path().join("veto"),
            dir.path().join("events"),
        );
        write_event_script(&script, &veto, &log).unwrap();
        let run = |kind: &str| Command::new(&script).args([kind, "stop"]).output().unwrap();
        assert_eq!(run("revocable").status.code(), Some(0));
        std::fs::write(&veto, "frozen").unwrap();
        let vetoed = run("revocable");
        assert_eq!(vetoed.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&vetoed.stdout), "frozen");
        assert_eq!(run("irrevocable").status.code(), Some(0));
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(calls, "revocable stop\nrevocable stop\nirrevocable stop\n");
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
