//! The `tether host` flags: one per configuration key, each overriding the file's value.
//!
//! Every flag is optional so that [`HostArgs::apply`] can tell a flag that was given from one
//! that was not; the defaults are therefore written in the help text rather than given to
//! clap.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::config::{HostConfig, HypervisorKind, RecoveryMode};

/// Flags of the host agent (`tether host --help`).
#[derive(Debug, Clone, Default, Args)]
pub struct HostArgs {
    /// TOML configuration file; its keys are these flags' names with `_` for `-`
    /// (`--token-file` is `controller_token_file`). Flags override the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory watched for guest channel sockets [default: /var/lib/libvirt/qemu].
    #[arg(long, value_name = "DIR")]
    pub channel_dir: Option<PathBuf>,
    /// Channel socket file name, `{uuid}` standing for the instance uuid
    /// [default: cgcs.heartbeat.{uuid}.sock].
    #[arg(long, value_name = "PATTERN")]
    pub channel_pattern: Option<String>,
    /// Backend that applies corrective actions [default: log].
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub hypervisor: Option<HypervisorKind>,
    /// Command run by `--hypervisor exec`, with `{action}`, `{uuid}` and `{name}` filled in;
    /// it is split into words first and never run through a shell.
    #[arg(long, value_name = "'CMD {action} {uuid} {name}'")]
    pub exec_template: Option<String>,
    /// QMP socket of an instance for `--hypervisor qmp`, e.g. /var/lib/tether/qmp/{uuid}.qmp.
    #[arg(long, value_name = "PATH-WITH-{uuid}")]
    pub qmp_template: Option<String>,
    /// The virsh program used by `--hypervisor virsh` [default: virsh].
    #[arg(long, value_name = "PATH")]
    pub virsh: Option<PathBuf>,
    /// Missed intervals tolerated; the heartbeat is lost after N + 1 in a row [default: 1].
    #[arg(long, value_name = "N")]
    pub miss_threshold: Option<u32>,
    /// Shortest heartbeat interval granted; guests asking for less get this (at least 50)
    /// [default: 400].
    #[arg(long, value_name = "MS")]
    pub min_interval_ms: Option<u32>,
    /// Journal file, one JSON event per line, appended
    /// [default: /var/lib/tether/host-journal.jsonl].
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// UNIX socket of the local HTTP API [default: /run/tether/host.sock].
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Also serve the HTTP API on this TCP address [default: off].
    #[arg(long, value_name = "ADDR:PORT")]
    pub api_listen: Option<SocketAddr>,
    /// Serve the --api-listen API over HTTPS with this certificate chain (PEM); needs
    /// --api-tls-key. The UNIX socket stays plain [default: plain HTTP].
    #[arg(long, value_name = "FILE")]
    pub api_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --api-tls-cert.
    #[arg(long, value_name = "FILE")]
    pub api_tls_key: Option<PathBuf>,
    /// Seconds between full rescans of the channel directory, besides inotify [default: 180].
    #[arg(long, value_name = "SECS")]
    pub rescan_secs: Option<u64>,
    /// Recoveries allowed per guest within the window; past that the guest is marked
    /// unrecoverable and only logged [default: 3].
    #[arg(long, value_name = "N")]
    pub max_recoveries: Option<u32>,
    /// Length of the recovery rate-limit window in seconds [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub recovery_window_secs: Option<u64>,
    /// Who applies a failed guest's corrective action: the controller while the link to it
    /// works (auto), always this agent (local), or always the controller [default: auto].
    #[arg(long, value_name = "MODE")]
    pub recovery: Option<RecoveryMode>,
    /// Seconds a failure left to the controller may wait for the controller to take it
    /// before this agent, cut off from it, recovers the guest itself [default: 10].
    #[arg(long, value_name = "SECS")]
    pub recovery_wait_secs: Option<u64>,
    /// Seconds a connected guest may go without heartbeating before its channel is
    /// reconnected [default: 120].
    #[arg(long, value_name = "SECS")]
    pub start_timeout_secs: Option<u64>,
    /// Bytes per second read from one guest; a faster guest is read more slowly
    /// [default: 16384].
    #[arg(long, value_name = "N")]
    pub guest_bytes_per_sec: Option<u32>,
    /// Messages per second accepted from one guest; a faster guest is read more slowly
    /// [default: 50].
    #[arg(long, value_name = "N")]
    pub guest_msgs_per_sec: Option<u32>,
    /// Refused messages a guest may send in a burst (one more forgiven each second) before
    /// its channel is closed and reconnected with back-off [default: 20].
    #[arg(long, value_name = "N")]
    pub guest_max_bad_msgs: Option<u32>,
    /// Report to the controller at this URL, http:// or https:// [default: none].
    #[arg(long, value_name = "URL")]
    pub controller: Option<String>,
    /// CA certificates (PEM) that an https:// controller's certificate must be signed by
    /// [default: the system's root certificates].
    #[arg(long, value_name = "FILE")]
    pub controller_ca: Option<PathBuf>,
    /// File holding the controller's token; without it the token is read from the
    /// environment variable TETHER_TOKEN.
    #[arg(long = "token-file", value_name = "FILE")]
    pub controller_token_file: Option<PathBuf>,
    /// This host's name at the controller [default: the machine's host name].
    #[arg(long, value_name = "NAME")]
    pub host_name: Option<String>,
}

impl HostArgs {
    /// The configuration file given with `--config`, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// Overrides `config` with every flag that was given.
    pub fn apply(&self, config: &mut HostConfig) {
        set(&mut config.channel_dir, &self.channel_dir);
        set(&mut config.channel_pattern, &self.channel_pattern);
        set(&mut config.hypervisor, &self.hypervisor);
        set_opt(&mut config.exec_template, &self.exec_template);
        set_opt(&mut config.qmp_template, &self.qmp_template);
        set(&mut config.virsh, &self.virsh);
        set(&mut config.miss_threshold, &self.miss_threshold);
        set(&mut config.min_interval_ms, &self.min_interval_ms);
        set(&mut config.journal, &self.journal);
        set(&mut config.api_socket, &self.api_socket);
        set_opt(&mut config.api_listen, &self.api_listen);
        set_opt(&mut config.api_tls_cert, &self.api_tls_cert);
        set_opt(&mut config.api_tls_key, &self.api_tls_key);
        set(&mut config.rescan_secs, &self.rescan_secs);
        set(&mut config.max_recoveries, &self.max_recoveries);
        set(&mut config.recovery_window_secs, &self.recovery_window_secs);
        set(&mut config.recovery, &self.recovery);
        set(&mut config.recovery_wait_secs, &self.recovery_wait_secs);
        set(&mut config.start_timeout_secs, &self.start_timeout_secs);
        set(&mut config.guest_bytes_per_sec, &self.guest_bytes_per_sec);
        set(&mut config.guest_msgs_per_sec, &self.guest_msgs_per_sec);
        set(&mut config.guest_max_bad_msgs, &self.guest_max_bad_msgs);
        set_opt(&mut config.controller, &self.controller);
        set_opt(&mut config.controller_ca, &self.controller_ca);
        set_opt(
            &mut config.controller_token_file,
            &self.controller_token_file,
        );
        set_opt(&mut config.host_name, &self.host_name);
    }
}

fn set<T: Clone>(target: &mut T, flag: &Option<T>) {
    if let Some(value) = flag {
        *target = value.clone();
    }
}

fn set_opt<T: Clone>(target: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        target.clone_from(flag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: HostArgs,
    }

    #[test]
    fn flags_override_the_file_and_leave_the_rest() {
        let dir = tether_testkit::temp_dir();
        let path = dir.path().join("host.toml");
        std::fs::write(
            &path,
            "miss_threshold = 4\nrescan_secs = 30\nmax_recoveries = 9\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "host",
            "--config",
            path.to_str().unwrap(),
            "--miss-threshold",
            "2",
            "--hypervisor",
            "exec",
            "--exec-template",
            "/bin/recover {action} {uuid}",
            "--api-listen",
            "127.0.0.1:9000",
            "--controller",
            "http://10.0.0.1:2411",
            "--token-file",
            "/etc/tether/token",
            "--host-name",
            "compute-7",
        ]);
        let mut config = HostConfig::load(cli.args.config_path().unwrap()).unwrap();
        cli.args.apply(&mut config);
        assert_eq!(config.miss_threshold, 2);
        assert_eq!(config.rescan_secs, 30);
        assert_eq!(config.max_recoveries, 9);
        assert_eq!(config.hypervisor, HypervisorKind::Exec);
        assert_eq!(
            config.exec_template.as_deref(),
            Some("/bin/recover {action} {uuid}")
        );
        assert_eq!(config.api_listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(config.channel_dir, HostConfig::default().channel_dir);
        assert_eq!(config.controller.as_deref(), Some("http://10.0.0.1:2411"));
        assert_eq!(
            config.controller_token_file.as_deref(),
            Some(Path::new("/etc/tether/token"))
        );
        assert_eq!(config.host_name.as_deref(), Some("compute-7"));
    }

    #[test]
    fn help_documents_every_flag() {
        let help = Cli::command().render_long_help().to_string();
        let flags = [
            "--config",
            "--channel-dir",
            "--channel-pattern",
            "--hypervisor",
            "--exec-template",
            "--qmp-template",
            "--virsh",
            "--miss-threshold",
            "--journal",
            "--api-socket",
            "--api-listen",
            "--rescan-secs",
            "--max-recoveries",
            "--recovery-window-secs",
            "--recovery",
            "--recovery-wait-secs",
            "--start-timeout-secs",
            "--guest-bytes-per-sec",
            "--guest-msgs-per-sec",
            "--guest-max-bad-msgs",
            "--controller",
            "--token-file",
            "--host-name",
        ];
        for flag in flags {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
        for arg in Cli::command().get_arguments() {
            assert!(arg.get_help().is_some(), "{:?} has no help", arg.get_id());
        }
    }
}
