//! The host agent's settings: a TOML file whose keys are the `tether host` flags.
//!
//! Every key is optional and defaults to the value the reference guestServer used (or a safe
//! choice where it had none). Unknown keys refuse the whole file, so a typo never silently
//! falls back to a default. [`HostConfig::validate`] checks the values that no type can, and
//! is run on the final configuration after flags were applied; a loaded file alone is checked
//! the same way except for what a flag or the environment may still supply (the controller's
//! token).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::pattern::ChannelPattern;

/// Which backend carries out corrective actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorKind {
    /// Only record the action in the journal and the log.
    #[default]
    Log,
    /// Run the operator's command template (`exec_template`), without a shell.
    Exec,
    /// Talk to QEMU's monitor socket (`qmp_template`).
    Qmp,
    /// Drive libvirt with `virsh reset|destroy <uuid>`.
    Virsh,
}

/// Who decides to apply a guest's corrective action when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryMode {
    /// The controller while the link to it works, this agent otherwise (and always when no
    /// controller is configured).
    #[default]
    Auto,
    /// Always this agent, even with a controller.
    Local,
    /// Always the controller: a failure the controller has not taken waits for it.
    Controller,
}

impl RecoveryMode {
    /// The mode's name in flags and the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryMode::Auto => "auto",
            RecoveryMode::Local => "local",
            RecoveryMode::Controller => "controller",
        }
    }
}

/// Every setting of the host agent. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Directory watched for guest channel sockets (QEMU listens on them).
    pub channel_dir: PathBuf,
    /// Channel socket file name; `{uuid}` stands for the 36-character instance uuid.
    pub channel_pattern: String,
    /// Backend that applies corrective actions.
    pub hypervisor: HypervisorKind,
    /// Command run by the `exec` backend, e.g. `/usr/local/bin/recover {action} {uuid} {name}`.
    pub exec_template: Option<String>,
    /// QMP socket path of an instance for the `qmp` backend; must contain `{uuid}`.
    pub qmp_template: Option<String>,
    /// The `virsh` program used by the `virsh` backend.
    pub virsh: PathBuf,
    /// Missed intervals tolerated; the heartbeat is lost after `miss_threshold + 1` in a row.
    pub miss_threshold: u32,
    /// Shortest heartbeat interval granted, in ms; a guest asking for less is challenged at
    /// this interval. 400 is the reference's floor; lower it (to 50 at least) only where
    /// faster detection is worth the cost.
    pub min_interval_ms: u32,
    /// Journal file: one JSON object per line, appended.
    pub journal: PathBuf,
    /// UNIX socket of the local HTTP API.
    pub api_socket: PathBuf,
    /// Optional TCP address of the same HTTP API (e.g. `127.0.0.1:2412`).
    pub api_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) to serve the TCP API over HTTPS with; needs `api_tls_key`.
    pub api_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `api_tls_cert`.
    pub api_tls_key: Option<PathBuf>,
    /// Seconds between full rescans of the channel directory (besides inotify).
    pub rescan_secs: u64,
    /// Recoveries allowed per guest within `recovery_window_secs`; past that the guest is
    /// marked unrecoverable and only logged.
    pub max_recoveries: u32,
    /// Length of the recovery rate-limit window, in seconds.
    pub recovery_window_secs: u64,
    /// Who applies a failed guest's corrective action: `auto`, `local` or `controller`.
    pub recovery: RecoveryMode,
    /// Seconds a failure left to the controller may wait for it to take it (store the
    /// event) before this agent, cut off from the controller, recovers the guest itself.
    pub recovery_wait_secs: u64,
    /// Seconds a connected guest may go without heartbeating before the channel is closed and
    /// reconnected.
    pub start_timeout_secs: u64,
    /// Bytes per second read from one guest; a faster guest is read more slowly.
    pub guest_bytes_per_sec: u32,
    /// Messages per second accepted from one guest; a faster guest is read more slowly.
    pub guest_msgs_per_sec: u32,
    /// Refused messages a guest may send in a burst (one more is forgiven each second) before
    /// its channel is closed and reconnected with back-off.
    pub guest_max_bad_msgs: u32,
    /// Base URL of the controller to report to (`http://host:port` or `https://host:port`);
    /// none: no controller.
    pub controller: Option<String>,
    /// CA certificates (PEM) that an `https://` controller's certificate must be signed by;
    /// none: the system's root certificates.
    pub controller_ca: Option<PathBuf>,
    /// File holding the token the controller expects (`--token-file`); without it the token
    /// is taken from the environment variable `TETHER_TOKEN`.
    pub controller_token_file: Option<PathBuf>,
    /// This host's name at the controller; default: the machine's host name.
    pub host_name: Option<String>,
}

/// The environment variable holding the controller's token when no token file is given.
pub const TOKEN_ENV: &str = "TETHER_TOKEN";

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            channel_dir: PathBuf::from("/var/lib/libvirt/qemu"),
            channel_pattern: "cgcs.heartbeat.{uuid}.sock".to_owned(),
            hypervisor: HypervisorKind::Log,
            exec_template: None,
            qmp_template: None,
            virsh: PathBuf::from("virsh"),
            miss_threshold: 1,
            min_interval_ms: tether_proto::MIN_INTERVAL_MS,
            journal: PathBuf::from("/var/lib/tether/host-journal.jsonl"),
            api_socket: PathBuf::from("/run/tether/host.sock"),
            api_listen: None,
            api_tls_cert: None,
            api_tls_key: None,
            rescan_secs: 180,
            max_recoveries: 3,
            recovery_window_secs: 3600,
            recovery: RecoveryMode::Auto,
            recovery_wait_secs: 10,
            start_timeout_secs: 120,
            guest_bytes_per_sec: 16 * 1024,
            guest_msgs_per_sec: 50,
            guest_max_bad_msgs: 20,
            controller: None,
            controller_ca: None,
            controller_token_file: None,
            host_name: None,
        }
    }
}

/// A configuration file or value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("Cannot read the configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or holds an unknown key or a value of the wrong type.
    #[error("Invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// The controller's token file could not be read.
    #[error("Cannot read the token file {path}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificates to trust for an `https://` controller cannot be loaded.
    #[error("Cannot set up TLS to the controller (controller_ca, --controller-ca)")]
    Tls(#[source] tether_tls::TlsError),
    /// The API's certificate or key cannot be used.
    #[error("Cannot serve the API over HTTPS (api_tls_cert, api_tls_key)")]
    ApiTls(#[source] tether_tls::TlsError),
    /// A value breaks its rule.
    #[error("Invalid value for {key}: {message}")]
    Invalid {
        /// The key (and flag) at fault.
        key: &'static str,
        /// What was expected.
        message: String,
    },
}

impl HostConfig {
    /// Reads a TOML file; keys not in the file keep their defaults.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: HostConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line(&e.to_string()),
        })?;
        config.validate_values()?;
        Ok(config)
    }

    /// Checks the rules no type expresses, including that a controller comes with a token
    /// and that a CA to trust comes with an `https://` controller.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_values()?;
        if self.recovery == RecoveryMode::Controller
            && (self.controller.is_none() || self.api_listen.is_none())
        {
            return Err(invalid(
                "recovery",
                "\"controller\" needs a controller (--controller) that can reach this \
                 agent's API (--api-listen); use auto or local",
            ));
        }
        let https = self
            .controller
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        if self.controller_ca.is_some() && !https {
            let message = "a CA is only used with an https:// controller";
            return Err(invalid("controller_ca", message));
        }
        match (&self.api_tls_cert, &self.api_tls_key, self.api_listen) {
            (Some(_), None, _) | (None, Some(_), _) => {
                let message = "api_tls_cert and api_tls_key (--api-tls-cert, --api-tls-key) \
                               go together";
                return Err(invalid("api_tls_key", message));
            }
            (Some(_), Some(_), None) => {
                let message = "HTTPS is served on api_listen (--api-listen): give it too";
                return Err(invalid("api_tls_cert", message));
            }
            _ => {}
        }
        if self.controller.is_some() && self.controller_token_file.is_none() {
            let from_env = std::env::var_os(TOKEN_ENV).is_some_and(|v| !v.is_empty());
            if !from_env {
                let message = format!(
                    "a controller needs a token: give controller_token_file (--token-file) \
                     or set {TOKEN_ENV}"
                );
                return Err(invalid("controller_token_file", message));
            }
        }
        Ok(())
    }

    /// Every rule that holds for one value (or one file) on its own.
    fn validate_values(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.controller {
            crate::controller_link::parse_base_url(url).map_err(|e| invalid("controller", e))?;
        }
        if let Some(name) = &self.host_name {
            check_host_name(name).map_err(|e| invalid("host_name", e))?;
        }
        ChannelPattern::parse(&self.channel_pattern).map_err(|e| invalid("channel_pattern", e))?;
        let positive: [(&'static str, u64); 7] = [
            ("rescan_secs", self.rescan_secs),
            ("recovery_window_secs", self.recovery_window_secs),
            ("recovery_wait_secs", self.recovery_wait_secs),
            ("start_timeout_secs", self.start_timeout_secs),
            ("guest_bytes_per_sec", u64::from(self.guest_bytes_per_sec)),
            ("guest_msgs_per_sec", u64::from(self.guest_msgs_per_sec)),
            ("guest_max_bad_msgs", u64::from(self.guest_max_bad_msgs)),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.min_interval_ms < 50 {
            return Err(invalid("min_interval_ms", "must be at least 50"));
        }
        if self.guest_bytes_per_sec < tether_proto::MAX_MSG_SIZE as u32 {
            let min = tether_proto::MAX_MSG_SIZE;
            return Err(invalid(
                "guest_bytes_per_sec",
                format!("must be at least {min}"),
            ));
        }
        Ok(())
    }
}

/// A host name goes into the controller's URLs: letters, digits, `.`, `-`, `_` only.
pub(crate) fn check_host_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.is_empty() || name.len() > 253 || !name.chars().all(allowed) {
        return Err(format!(
            "{name:?} is not a host name (1 to 253 letters, digits, '.', '-', '_')"
        ));
    }
    Ok(())
}

fn invalid(key: &'static str, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.to_string(),
    }
}

/// The TOML parser's multi-line report (with a source excerpt) as one line.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.ends_with('|'))
        .collect();
    lines.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<HostConfig, ConfigError> {
        let dir = tether_testkit::temp_dir();
        let path = dir.path().join("host.toml");
        std::fs::write(&path, text).unwrap();
        HostConfig::load(&path)
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(load_text("").unwrap(), HostConfig::default());
    }

    #[test]
    fn keys_are_read_with_their_types() {
        let config = load_text(
            "channel_dir = \"/srv/ch\"\nmiss_threshold = 3\nhypervisor = \"virsh\"\n\
             api_listen = \"127.0.0.1:2412\"\nmax_recoveries = 5\n",
        )
        .unwrap();
        assert_eq!(config.channel_dir, PathBuf::from("/srv/ch"));
        assert_eq!(config.miss_threshold, 3);
        assert_eq!(config.hypervisor, HypervisorKind::Virsh);
        assert_eq!(config.api_listen, Some("127.0.0.1:2412".parse().unwrap()));
        assert_eq!(config.max_recoveries, 5);
    }

    #[test]
    fn an_unknown_key_is_refused_naming_the_file_and_the_key() {
        let err = load_text("miss_treshold = 2\n").unwrap_err().to_string();
        assert!(err.contains("host.toml"), "{err}");
        assert!(err.contains("miss_treshold"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_wrong_type_is_refused_naming_the_key() {
        let err = load_text("rescan_secs = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rescan_secs"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let err = load_text("channel_pattern = \"no-placeholder.sock\"\n").unwrap_err();
        assert!(err.to_string().contains("channel_pattern"), "{err}");
        let err = load_text("rescan_secs = 0\n").unwrap_err();
        assert!(err.to_string().contains("rescan_secs"), "{err}");
    }

    #[test]
    fn controller_keys_are_checked_naming_the_key() {
        let config = load_text(
            "controller = \"http://10.0.0.1:2411\"\ncontroller_token_file = \"/etc/t\"\n\
             host_name = \"compute-1\"\n",
        )
        .unwrap();
        assert_eq!(config.controller.as_deref(), Some("http://10.0.0.1:2411"));
        assert!(config.validate().is_ok());
        for (text, key, says) in [
            ("controller = \"not a url\"\n", "controller", "http://"),
            ("controller = \"ftp://c:1\"\n", "controller", "http://"),
            ("host_name = \"a/b\"\n", "host_name", "host name"),
        ] {
            let err = load_text(text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn a_controller_without_a_token_is_refused_once_flags_are_applied() {
        // A file may leave the token to a flag; the final check requires one (the test
        // environment has no TETHER_TOKEN).
        let mut config = load_text("controller = \"http://c:2411\"\n").unwrap();
        if std::env::var_os(TOKEN_ENV).is_none() {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("controller_token_file"), "{err}");
        }
        config.controller_token_file = Some("/etc/tether/token".into());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn recovery_by_the_controller_needs_a_controller_that_can_reach_the_api() {
        let mut config = load_text("recovery = \"controller\"\nrecovery_wait_secs = 5\n").unwrap();
        assert_eq!(
            (config.recovery, config.recovery_wait_secs),
            (RecoveryMode::Controller, 5)
        );
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("recovery") && err.contains("--api-listen"),
            "{err}"
        );
        config.controller = Some("http://c:2411".into());
        config.controller_token_file = Some("/etc/tether/token".into());
        assert!(config.validate().is_err(), "no API address yet");
        config.api_listen = Some("127.0.0.1:2412".parse().unwrap());
        assert!(config.validate().is_ok());
        let err = load_text("recovery = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("recovery"), "{err}");
        let err = load_text("recovery_wait_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("recovery_wait_secs"), "{err}");
    }

    #[test]
    fn a_controller_ca_needs_an_https_controller_once_flags_are_applied() {
        let mut config = load_text(
            "controller = \"http://c:2411\"\ncontroller_ca = \"/etc/tether/ca.pem\"\n\
             controller_token_file = \"/etc/t\"\n",
        )
        .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("controller_ca") && err.contains("https://"),
            "{err}"
        );
        config.controller = Some("https://c:2411".into());
        assert!(config.validate().is_ok());
        config.controller = None;
        assert!(config.validate().is_err());
    }

    #[test]
    fn api_tls_needs_a_certificate_a_key_and_a_tcp_address() {
        let mut config = HostConfig {
            api_tls_cert: Some("/c.pem".into()),
            ..HostConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
        config.api_tls_key = Some("/k.pem".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("api_listen"), "{err}");
        config.api_listen = Some("127.0.0.1:0".parse().unwrap());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let err = HostConfig::load(Path::new("/nonexistent/tether/host.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tether/host.toml"));
    }
}
