//! The controller link: the host agent's side of the agent protocol, one task per agent.
//!
//! When a controller is configured, [`ControllerLink::run`] keeps the controller's copy of
//! this host's journal complete:
//!
//! 1. `POST /v1/agents/register` with the host's name, its API URL and the full current state
//!    of every instance; the answer is `acked_seq`, the last journal seq the controller holds;
//! 2. every journal line with a higher seq is read back from the journal file and sent with
//!    `POST /v1/agents/{host}/events`, at most [`BATCH`] per request, in order;
//! 3. then the link waits on the journal writer's `watch` of the last seq written and sends
//!    each new line as it is appended (no polling of the file).
//!
//! A 409 `sequence_gap` answer resends from the `acked_seq` it carries. Any other failure
//! (refused connection, no answer within 10 s, a 5xx, 404 `unknown_host`) waits 1 s, doubling up
//! to 30 s, and starts over at the registration, which resynchronises the full state; a 401
//! (wrong token) waits the longest at once and is logged as an error; so is a certificate that
//! does not verify, which is retried with the usual back-off. Failures are logged at most once
//! per [`LOG_PERIOD`]. Nothing is kept in memory that the journal does not hold, so
//! neither a controller restart nor an agent restart loses an event: the controller's
//! `acked_seq` says where to resume.
//!
//! An `https://` controller is reached over TLS; its certificate must be signed by the CA file
//! `controller_ca` (`--controller-ca`), or else by one of the system's root certificates, and
//! name the URL's host.
//!
//! Not to be confused with `supervisor/link.rs`, a supervisor's channel to its guest.

mod client;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tether_tls::ClientConfig;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{check_host_name, ConfigError, HostConfig, TOKEN_ENV};
use crate::deferral::LinkState;
use crate::journal::{JournalReader, Sequenced};
use crate::limits::Throttle;
use crate::status::AgentView;

use client::{Answer, ControllerClient, LinkError};

/// Most events sent in one request (the protocol's limit).
pub(crate) const BATCH: usize = 500;
/// First wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// At most one failure log line per period (the rest are counted).
const LOG_PERIOD: Duration = Duration::from_secs(60);

/// Where and as whom the agent reports, read from the configuration at start.
#[derive(Clone)]
pub(crate) struct LinkSettings {
    /// The controller's base URL, `http://…` or `https://…`, without a trailing slash.
    pub base: String,
    /// Whom an `https://` controller's certificate must be signed by (`None` for `http://`).
    pub tls: Option<Arc<ClientConfig>>,
    /// The bearer token.
    pub token: String,
    /// This host's name at the controller.
    pub host: String,
    /// The journal file the events are read back from.
    pub journal: PathBuf,
    /// What the link tells the supervisors of the controller.
    pub state: LinkState,
}

impl std::fmt::Debug for LinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSettings")
            .field("base", &self.base)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl LinkSettings {
    /// The link's settings, or `None` when no controller is configured. Reads the token and,
    /// unless configured, the machine's host name.
    pub(crate) fn from_config(config: &HostConfig) -> Result<Option<LinkSettings>, ConfigError> {
        let Some(url) = &config.controller else {
            return Ok(None);
        };
        let invalid = |key, message| ConfigError::Invalid { key, message };
        let base = parse_base_url(url).map_err(|e| invalid("controller", e))?;
        let tls = if base.starts_with("https://") {
            let ca = config.controller_ca.as_deref();
            Some(tether_tls::client_config(ca).map_err(ConfigError::Tls)?)
        } else {
            None
        };
        let token = read_token(config.controller_token_file.as_deref())?;
        let host = match &config.host_name {
            Some(name) => name.clone(),
            None => machine_host_name().map_err(|e| invalid("host_name", e))?,
        };
        Ok(Some(LinkSettings {
            base,
            tls,
            token,
            host,
            journal: config.journal.clone(),
            state: LinkState::default(),
        }))
    }
}

/// Checks a controller URL: `http[s]://HOST:PORT[/prefix]`; answers it without a trailing
/// `/`.
pub(crate) fn parse_base_url(url: &str) -> Result<String, String> {
    let expected = "expected http://HOST:PORT or https://HOST:PORT";
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL ({e}); {expected}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "{url:?} is not an http:// or https:// URL; {expected}"
        ));
    }
    if uri.authority().is_none() || uri.query().is_some() {
        return Err(format!("{url:?} has no host or has a query; {expected}"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The token from `file` (trimmed), or from `TETHER_TOKEN` when no file is given.
fn read_token(file: Option<&Path>) -> Result<String, ConfigError> {
    let (token, key_says) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Token {
                path: path.to_owned(),
                source,
            })?;
            (text, format!("the token file {} is empty", path.display()))
        }
        None => (
            std::env::var(TOKEN_ENV).unwrap_or_default(),
            format!("no token: give controller_token_file (--token-file) or set {TOKEN_ENV}"),
        ),
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(ConfigError::Invalid {
            key: "controller_token_file",
            message: key_says,
        });
    }
    Ok(token.to_owned())
}

/// The machine's host name, from the kernel.
fn machine_host_name() -> Result<String, String> {
    let path = "/proc/sys/kernel/hostname";
    let name = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read this machine's host name from {path} ({e}); set it"))?;
    let name = name.trim();
    check_host_name(name).map_err(|e| format!("{e}; set host_name (--host-name)"))?;
    Ok(name.to_owned())
}

/// Why a connected spell of the link ended.
enum Ended {
    /// The journal writer stopped: the agent is shutting down.
    WriterClosed,
    /// A call failed; wait and start over.
    Failed(LinkError),
}

impl From<LinkError> for Ended {
    fn from(e: LinkError) -> Ended {
        Ended::Failed(e)
    }
}

/// The controller link task.
pub(crate) struct ControllerLink {
    settings: LinkSettings,
    api_url: Option<String>,
    client: ControllerClient,
    view: AgentView,
    written: watch::Receiver<u64>,
    reader: Option<JournalReader>,
    backoff: Duration,
    failures: Throttle,
}

impl ControllerLink {
    /// A link for `settings`, announcing `api_url`, following the journal through `written`.
    pub(crate) fn new(
        settings: LinkSettings,
        api_url: Option<String>,
        view: AgentView,
        written: watch::Receiver<u64>,
    ) -> ControllerLink {
        ControllerLink {
            client: ControllerClient::new(
                settings.base.clone(),
                &settings.token,
                settings.tls.clone(),
            ),
            reader: Some(JournalReader::new(&settings.journal)),
            settings,
            api_url,
            view,
            written,
            backoff: FIRST_BACKOFF,
            failures: Throttle::new(1, LOG_PERIOD),
        }
    }

    /// Runs until `stop` turns true (or is dropped).
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tracing::info!(controller = %self.settings.base, host = %self.settings.host,
            "Reporting to the controller");
        loop {
            let ended = tokio::select! {
                ended = self.connected() => ended,
                _ = stop.wait_for(|s| *s) => return,
            };
            let wait = match ended {
                Ended::WriterClosed => {
                    let _ = stop.wait_for(|s| *s).await;
                    return;
                }
                Ended::Failed(e) => {
                    self.settings.state.failed();
                    self.failed(&e)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Logs a failure (rate-limited) and answers how long to wait before starting over.
    fn failed(&mut self, e: &LinkError) -> Duration {
        let wait = match e {
            LinkError::Unauthorized => MAX_BACKOFF,
            LinkError::UnknownHost => FIRST_BACKOFF,
            _ => self.backoff,
        };
        self.backoff = (wait * 2).min(MAX_BACKOFF);
        if let Some(suppressed) = self.failures.allow(Instant::now()) {
            let error = crate::recovery::error_chain(e);
            let (controller, retry_s) = (&self.settings.base, wait.as_secs());
            if matches!(e, LinkError::Unauthorized) {
                tracing::error!(%controller, error, suppressed, retry_s,
                    "The controller refuses this agent; retrying");
            } else if matches!(e, LinkError::Tls(_)) {
                tracing::error!(%controller, error, suppressed, retry_s,
                    "The controller's TLS certificate is not trusted; retrying");
            } else {
                tracing::warn!(%controller, error, suppressed, retry_s,
                    "Cannot report to the controller; retrying");
            }
        }
        wait
    }

    /// Registers, replays what the controller lacks, then follows the journal; returns only
    /// when a call fails or the journal writer stops.
    async fn connected(&mut self) -> Ended {
        let instances = self.view.instances();
        let host = self.settings.host.clone();
        let api_url = self.api_url.as_deref();
        let mut acked = match self.client.register(&host, api_url, &instances).await {
            Ok(acked) => acked,
            Err(e) => return e.into(),
        };
        let written = *self.written.borrow_and_update();
        tracing::info!(controller = %self.settings.base, host, acked_seq = acked,
            replay = written.saturating_sub(acked), instances = instances.len(),
            "Connected to the controller");
        if acked > written {
            tracing::warn!(
                acked_seq = acked,
                journal_seq = written,
                "The controller holds more events than the journal; was the journal replaced? \
                 Events are sent again once the journal passes its seq"
            );
        }
        self.backoff = FIRST_BACKOFF;
        self.settings.state.answered(acked);
        loop {
            let written = *self.written.borrow_and_update();
            if acked >= written {
                if self.written.changed().await.is_err() {
                    return Ended::WriterClosed;
                }
                continue;
            }
            let batch = match self.read_after(acked).await {
                Ok(batch) => batch,
                Err(e) => return e.into(),
            };
            let Some(first) = batch.first().map(|e| e.seq) else {
                // The lines are not in the file (yet): wait for the next write.
                if self.written.changed().await.is_err() {
                    return Ended::WriterClosed;
                }
                continue;
            };
            acked = match self.client.send_events(&host, &batch).await {
                Ok(Answer::Acked(n) | Answer::Gap(n)) if n != acked => {
                    self.settings.state.answered(n);
                    n
                }
                Ok(Answer::Acked(_) | Answer::Gap(_)) => {
                    return LinkError::Stuck { acked, next: first }.into()
                }
                Err(e) => return e.into(),
            };
        }
    }

    /// Reads up to [`BATCH`] events after `acked` from the journal file, off the runtime.
    async fn read_after(&mut self, acked: u64) -> Result<Vec<Sequenced>, LinkError> {
        let Some(mut reader) = self.reader.take() else {
            return Ok(Vec::new());
        };
        let joined = tokio::task::spawn_blocking(move || {
            let batch = reader.read_after(acked, BATCH);
            (reader, batch)
        })
        .await;
        match joined {
            Ok((reader, batch)) => {
                self.reader = Some(reader);
                batch.map_err(LinkError::Journal)
            }
            Err(e) => {
                self.reader = Some(JournalReader::new(&self.settings.journal));
                Err(LinkError::Journal(std::io::Error::other(e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_are_taken() {
        assert_eq!(parse_base_url("http://c:2411/").unwrap(), "http://c:2411");
        assert_eq!(parse_base_url("http://c/x").unwrap(), "http://c/x");
        assert_eq!(parse_base_url("https://c:2411/").unwrap(), "https://c:2411");
        let ftp = parse_base_url("ftp://c:2411").unwrap_err();
        assert!(ftp.contains("https://"), "{ftp}");
        for bad in [
            "c:2411",
            "",
            "http://",
            "https://",
            "http://c:1/?a=b",
            "not a url",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_token_is_trimmed_and_must_not_be_empty() {
        let dir = tether_testkit::temp_dir();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret\n").unwrap();
        assert_eq!(read_token(Some(&path)).unwrap(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        let err = read_token(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("controller_token_file") && err.contains("empty"),
            "{err}"
        );
        let missing = dir.path().join("nope");
        let err = read_token(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn the_machine_has_a_host_name() {
        let name = machine_host_name().unwrap();
        assert!(check_host_name(&name).is_ok(), "{name}");
    }
}
