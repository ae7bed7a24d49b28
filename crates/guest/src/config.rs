//! `guest_heartbeat.conf`: the daemon's settings, in the format of the StarlingX Guest-Client.
//!
//! The file holds `KEY=value` lines. Blank lines and lines starting with `#` are skipped, an
//! unquoted value ends at a `#` that follows whitespace, and whitespace and one pair of matching
//! quotes around a value are stripped. Unknown keys and lines without `=` are reported as
//! warnings and otherwise ignored; a later line for the same key wins. A value that breaks its
//! key's rule refuses the whole file with a [`ConfigError::Invalid`] whose one-line message
//! names the key, the value and the rule. Defaults are the reference daemon's built-in ones.

use std::fmt;
use std::path::{Path, PathBuf};

use tether_proto::{CorrectiveAction, MAX_INT, MIN_INTERVAL_MS};

/// Longest notice time in seconds: the value sent (plus one) times 1000 must still fit the
/// 32-bit signed integer the host computes `timeout_ms` in.
pub const MAX_NOTICE_SECS: u32 = MAX_INT / 1000 - 1;

/// Every setting of `guest_heartbeat.conf`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// `HB_INTERVAL`: challenge period asked of the host, in ms (at least 400).
    pub heartbeat_interval_ms: u32,
    /// `HB_INIT_RETRY`: how often `init` is resent until acknowledged, in ms.
    pub init_retry_ms: u32,
    /// `HB_MIN_TIMEOUT`: floor of the challenge timeout, in ms.
    pub min_timeout_ms: u32,
    /// `CORRECTIVE_ACTION`: what the cloud does when the heartbeat is lost or unhealthy.
    pub corrective_action: CorrectiveAction,
    /// `VOTE`: seconds the guest needs to vote on an action (sent plus one).
    pub vote_secs: u32,
    /// `SHUTDOWN_NOTICE`: seconds the guest needs to prepare for stop or reboot (sent plus one).
    pub shutdown_notice_secs: u32,
    /// `SUSPEND_NOTICE`: seconds the guest needs to prepare for pause, suspend or a migration
    /// (sent plus one).
    pub suspend_notice_secs: u32,
    /// `RESUME_NOTICE`: seconds the guest needs after unpause, resume or a migration (sent
    /// plus one).
    pub resume_notice_secs: u32,
    /// `RESTART`: seconds the cloud waits for the guest to come back after a reboot (sent plus
    /// one).
    pub restart_secs: u32,
    /// `HEALTH_CHECK_INTERVAL`: seconds between health-script runs; 0 turns them off.
    pub health_check_interval_secs: u32,
    /// `HEALTH_CHECK_SCRIPT`: run without arguments; exit status 1 means unhealthy.
    pub health_check_script: Option<PathBuf>,
    /// `EVENT_NOTIFICATION_SCRIPT`: run as `<script> <notification_type> <event_type>` to vote
    /// on or prepare for a lifecycle action.
    pub event_notification_script: Option<PathBuf>,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            heartbeat_interval_ms: 1000,
            init_retry_ms: 5000,
            min_timeout_ms: 5000,
            corrective_action: CorrectiveAction::Reboot,
            vote_secs: 10,
            shutdown_notice_secs: 10,
            suspend_notice_secs: 10,
            resume_notice_secs: 10,
            restart_secs: 120,
            health_check_interval_secs: 0,
            health_check_script: None,
            event_notification_script: None,
        }
    }
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist.
    #[error("Configuration file {0} does not exist")]
    Missing(PathBuf),
    /// The file exists but could not be read.
    #[error("Cannot read configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A value breaks its key's rule.
    #[error("{key}={value} is invalid: {rule}")]
    Invalid {
        /// The key, e.g. `HB_INTERVAL`.
        key: &'static str,
        /// The value as written (cut to 64 characters).
        value: String,
        /// What the key accepts.
        rule: String,
    },
}

/// A line that was ignored, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Line number in the file.
    pub line: usize,
    /// What was wrong with it.
    pub kind: WarningKind,
}

/// What made a line ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningKind {
    /// The key is not one of the known keys.
    UnknownKey(String),
    /// The line has no `=`.
    NoEquals,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            WarningKind::UnknownKey(key) => write!(f, "line {}: unknown key {key:?}", self.line),
            WarningKind::NoEquals => write!(f, "line {}: not a KEY=value line", self.line),
        }
    }
}

impl GuestConfig {
    /// Parses the text of a configuration file; ignored lines are logged as warnings.
    pub fn parse(text: &str) -> Result<GuestConfig, ConfigError> {
        let (config, warnings) = Self::parse_with_warnings(text)?;
        for warning in &warnings {
            tracing::warn!(%warning, "ignoring a configuration line");
        }
        Ok(config)
    }

    /// Like [`GuestConfig::parse`], returning the ignored lines instead of logging them.
    pub fn parse_with_warnings(
        text: &str,
    ) -> Result<(GuestConfig, Vec<ConfigWarning>), ConfigError> {
        let mut config = GuestConfig::default();
        let mut warnings = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                warnings.push(ConfigWarning {
                    line: index + 1,
                    kind: WarningKind::NoEquals,
                });
                continue;
            };
            let key = key.trim();
            if !config.set(key, clean_value(value))? {
                warnings.push(ConfigWarning {
                    line: index + 1,
                    kind: WarningKind::UnknownKey(cut(key, 64)),
                });
            }
        }
        Ok((config, warnings))
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<GuestConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::Missing(path.to_owned())
            } else {
                ConfigError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Self::parse(&text)
    }

    /// The challenge timeout: `max(2 × HB_INTERVAL, HB_MIN_TIMEOUT)` in ms.
    pub fn challenge_timeout_ms(&self) -> u64 {
        (2 * u64::from(self.heartbeat_interval_ms)).max(u64::from(self.min_timeout_ms))
    }

    /// Stores `value` under `key`; `Ok(false)` when the key is unknown.
    fn set(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        let Some(key) = KEYS.iter().copied().find(|k| *k == key) else {
            return Ok(false);
        };
        match key {
            "HB_INTERVAL" => {
                self.heartbeat_interval_ms = int(key, value, MIN_INTERVAL_MS, MAX_INT, "ms")?
            }
            "HB_INIT_RETRY" => self.init_retry_ms = int(key, value, 100, MAX_INT, "ms")?,
            "HB_MIN_TIMEOUT" => self.min_timeout_ms = int(key, value, 0, MAX_INT, "ms")?,
            "CORRECTIVE_ACTION" => self.corrective_action = action(value)?,
            "VOTE" => self.vote_secs = secs(key, value)?,
            "SHUTDOWN_NOTICE" => self.shutdown_notice_secs = secs(key, value)?,
            "SUSPEND_NOTICE" => self.suspend_notice_secs = secs(key, value)?,
            "RESUME_NOTICE" => self.resume_notice_secs = secs(key, value)?,
            "RESTART" => self.restart_secs = secs(key, value)?,
            "HEALTH_CHECK_INTERVAL" => {
                self.health_check_interval_secs = int(key, value, 0, MAX_INT, "s")?
            }
            "HEALTH_CHECK_SCRIPT" => self.health_check_script = script(key, value)?,
            _ => self.event_notification_script = script(key, value)?,
        }
        Ok(true)
    }
}

/// The keys of `guest_heartbeat.conf`.
pub const KEYS: &[&str] = &[
    "HB_INTERVAL",
    "HB_INIT_RETRY",
    "HB_MIN_TIMEOUT",
    "CORRECTIVE_ACTION",
    "VOTE",
    "SHUTDOWN_NOTICE",
    "SUSPEND_NOTICE",
    "RESUME_NOTICE",
    "RESTART",
    "HEALTH_CHECK_INTERVAL",
    "HEALTH_CHECK_SCRIPT",
    "EVENT_NOTIFICATION_SCRIPT",
];

/// Strips an inline comment, surrounding whitespace and one pair of matching quotes.
fn clean_value(raw: &str) -> &str {
    let value = raw.trim();
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote) {
            if let Some(end) = rest.find(quote) {
                return &rest[..end];
            }
        }
    }
    let mut end = value.len();
    let bytes = value.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            end = i;
            break;
        }
    }
    value[..end].trim_end()
}

fn invalid(key: &'static str, value: &str, rule: String) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: cut(value, 64),
        rule,
    }
}

fn int(key: &'static str, value: &str, min: u32, max: u32, unit: &str) -> Result<u32, ConfigError> {
    match value.parse::<u64>() {
        Ok(n) if n >= u64::from(min) && n <= u64::from(max) => Ok(n as u32),
        Ok(n) if n > u64::from(max) => Err(invalid(
            key,
            value,
            format!("must be an integer of at most {max} ({unit})"),
        )),
        _ => Err(invalid(
            key,
            value,
            format!("must be an integer of at least {min} ({unit})"),
        )),
    }
}

fn secs(key: &'static str, value: &str) -> Result<u32, ConfigError> {
    int(key, value, 0, MAX_NOTICE_SECS, "s")
}

fn action(value: &str) -> Result<CorrectiveAction, ConfigError> {
    match value {
        "reboot" => Ok(CorrectiveAction::Reboot),
        "stop" => Ok(CorrectiveAction::Stop),
        "log" => Ok(CorrectiveAction::Log),
        _ => Err(invalid(
            "CORRECTIVE_ACTION",
            value,
            "must be one of reboot, stop, log".to_owned(),
        )),
    }
}

fn script(key: &'static str, value: &str) -> Result<Option<PathBuf>, ConfigError> {
    if value.is_empty() {
        return Ok(None);
    }
    if !value.starts_with('/') {
        return Err(invalid(key, value, "must be an absolute path".to_owned()));
    }
    Ok(Some(PathBuf::from(value)))
}

/// At most `max` characters of `s`, so that messages stay one short line.
fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
