//! Commands from the controller to host agents, over the agent's HTTP API.
//!
//! A host agent announces where its API listens (`api_url`) when it registers; [`HostLink`]
//! calls it there, over HTTP or HTTPS as the URL says, one JSON request per command, each
//! given [`REQUEST_TIMEOUT`]
//! from connecting to the last byte of the answer. The commands are the reporting switches
//! (`PUT /v1/reporting`, `PUT /v1/instances/{uuid}/reporting`) and lifecycle operations
//! (`POST /v1/instances/{uuid}/actions`, `GET /v1/operations/{id}`).
//!
//! The reporting switches are best effort: the store holds the truth, and [`resync`] pushes it
//! again whenever a host registers, so a host that missed a command (down, cut off, restarted)
//! converges on its next registration.

pub mod resync;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tether_tls::{ClientConfig, Connector};

use crate::store::HostRecord;

/// Longest one command may take, from connecting to the last byte of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read from a host.
const MAX_ANSWER: usize = 1 << 20;

/// A command did not reach the host, or the host did not carry it out.
#[derive(Debug, thiserror::Error)]
pub enum HostLinkError {
    /// The host registered without an API address.
    #[error("Host {host:?} has no API address (it registered without api_url)")]
    NoApiUrl {
        /// The host's name.
        host: String,
    },
    /// The request could not be sent or its answer not read in time.
    #[error("Cannot reach host {host:?} at {url}")]
    Unreachable {
        /// The host's name.
        host: String,
        /// The URL called.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The host answered, but not with JSON.
    #[error("Host {host:?} answered {status} with a body that is not JSON")]
    BadAnswer {
        /// The host's name.
        host: String,
        /// The HTTP status.
        status: StatusCode,
    },
    /// The host refused the command (its status and its message).
    #[error("Host {host:?} answered {status}: {message}")]
    Refused {
        /// The host's name.
        host: String,
        /// The HTTP status.
        status: StatusCode,
        /// The host's `error.message`, or the start of its body.
        message: String,
    },
}

impl HostLinkError {
    /// Whether the host could not be reached at all (as opposed to refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            HostLinkError::NoApiUrl { .. } | HostLinkError::Unreachable { .. }
        )
    }
}

/// A recovery for [`HostLink::recover`] to order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoverOrder<'a> {
    /// `reboot`, `stop` or `log`.
    pub action: &'a str,
    /// `heartbeat_lost` or `guest_unhealthy`.
    pub cause: &'a str,
    /// Record the guest unrecoverable for this reason instead of acting.
    pub give_up: Option<&'a str>,
}

/// How a host took a recovery order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverAnswer {
    /// It started the action.
    Started,
    /// It recorded the guest unrecoverable.
    GivenUp,
    /// The order no longer fits: the guest is back, or the host recovered it itself.
    Stale(String),
    /// Reporting is off on the host for the guest.
    ReportingOff(String),
    /// It refused (its own limit, a recovery already running).
    Refused(String),
}

/// A host's answer: its status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct HostAnswer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
}

/// The controller's HTTP client of host agents; cheap to clone.
#[derive(Debug, Clone)]
pub struct HostLink {
    /// Whom `https://` hosts must be certified by; `None`: the system's roots.
    ca: Option<Arc<ClientConfig>>,
    /// Made at the first call (reading the system's roots costs time).
    http: Arc<OnceLock<Client<Connector, Full<Bytes>>>>,
}

impl Default for HostLink {
    fn default() -> Self {
        HostLink::new()
    }
}

impl HostLink {
    /// A client with the timeouts above; `https://` hosts are verified against the system's
    /// roots.
    pub fn new() -> HostLink {
        HostLink::trusting(None)
    }

    /// Like [`HostLink::new`]; `https://` hosts are verified against `ca` when given.
    pub fn trusting(ca: Option<Arc<ClientConfig>>) -> HostLink {
        HostLink {
            ca,
            http: Arc::new(OnceLock::new()),
        }
    }

    fn http(&self) -> &Client<Connector, Full<Bytes>> {
        self.http.get_or_init(|| {
            let tls = (self.ca.clone())
                .unwrap_or_else(|| tether_tls::system_client_config("Host agents"));
            let connector = tether_tls::connector(tls, CONNECT_TIMEOUT);
            Client::builder(TokioExecutor::new()).build(connector)
        })
    }

    /// `PUT /v1/reporting {"enabled": …}` on `host`.
    pub async fn set_host_reporting(
        &self,
        host: &HostRecord,
        enabled: bool,
    ) -> Result<(), HostLinkError> {
        let body = json!({ "enabled": enabled });
        let answer = self
            .call(host, Method::PUT, "/v1/reporting", Some(body))
            .await?;
        success(host, answer).map(drop)
    }

    /// `PUT /v1/instances/{uuid}/reporting {"enabled": …}` on `host`.
    pub async fn set_instance_reporting(
        &self,
        host: &HostRecord,
        uuid: &str,
        enabled: bool,
    ) -> Result<(), HostLinkError> {
        let path = format!("/v1/instances/{}/reporting", encode_segment(uuid));
        let body = json!({ "enabled": enabled });
        let answer = self.call(host, Method::PUT, &path, Some(body)).await?;
        success(host, answer).map(drop)
    }

    /// `POST /v1/instances/{uuid}/actions` on `host` with `{"action": …}` and, when given,
    /// `"only": "vote" | "notify"`; answers the host's operation id.
    pub async fn start_action(
        &self,
        host: &HostRecord,
        uuid: &str,
        action: &str,
        only: Option<&str>,
    ) -> Result<String, HostLinkError> {
        let path = format!("/v1/instances/{}/actions", encode_segment(uuid));
        let mut body = json!({ "action": action });
        if let Some(only) = only {
            body["only"] = json!(only);
        }
        let answer = self.call(host, Method::POST, &path, Some(body)).await?;
        let answer = success(host, answer)?;
        match answer.body["id"].as_str() {
            Some(id) => Ok(id.to_owned()),
            None => Err(HostLinkError::BadAnswer {
                host: host.name.clone(),
                status: answer.status,
            }),
        }
    }

    /// `POST /v1/instances/{uuid}/recover` on `host`: orders the recovery of a failure the
    /// host left to the controller, or, with `give_up`, records the guest unrecoverable.
    pub async fn recover(
        &self,
        host: &HostRecord,
        uuid: &str,
        order: &RecoverOrder<'_>,
    ) -> Result<RecoverAnswer, HostLinkError> {
        let path = format!("/v1/instances/{}/recover", encode_segment(uuid));
        let mut body = json!({ "action": order.action, "cause": order.cause });
        if let Some(reason) = order.give_up {
            body["give_up"] = json!(reason);
        }
        let answer = self.call(host, Method::POST, &path, Some(body)).await?;
        let message = || {
            answer.body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        match (answer.status, answer.body["error"]["code"].as_str()) {
            (StatusCode::ACCEPTED, _) => Ok(RecoverAnswer::Started),
            (StatusCode::OK, _) => Ok(RecoverAnswer::GivenUp),
            (StatusCode::CONFLICT, Some("stale")) => Ok(RecoverAnswer::Stale(message())),
            (StatusCode::CONFLICT, Some("reporting_disabled")) => {
                Ok(RecoverAnswer::ReportingOff(message()))
            }
            (StatusCode::CONFLICT, Some(_)) => Ok(RecoverAnswer::Refused(message())),
            _ => success(host, answer).map(|_| RecoverAnswer::Started),
        }
    }

    /// `GET /v1/operations/{id}` on `host`: the host's record of the operation.
    pub async fn operation(&self, host: &HostRecord, id: &str) -> Result<Value, HostLinkError> {
        let path = format!("/v1/operations/{}", encode_segment(id));
        let answer = self.call(host, Method::GET, &path, None).await?;
        success(host, answer).map(|a| a.body)
    }

    /// One request to `host`'s API; any status is an answer.
    pub async fn call(
        &self,
        host: &HostRecord,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<HostAnswer, HostLinkError> {
        let Some(base) = host.api_url.as_deref() else {
            return Err(HostLinkError::NoApiUrl {
                host: host.name.clone(),
            });
        };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let unreachable =
            |source: Box<dyn std::error::Error + Send + Sync>| HostLinkError::Unreachable {
                host: host.name.clone(),
                url: url.clone(),
                source,
            };
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(&url)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| unreachable(e.into()))?;
        let exchange = async {
            let response = self
                .http()
                .request(request)
                .await
                .map_err(|e| unreachable(e.into()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(unreachable)?
                .to_bytes();
            Ok((status, body))
        };
        let (status, body) = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                let secs = REQUEST_TIMEOUT.as_secs();
                return Err(unreachable(format!("no answer within {secs} s").into()));
            }
        };
        match serde_json::from_slice(&body) {
            Ok(body) => Ok(HostAnswer { status, body }),
            Err(_) => Err(HostLinkError::BadAnswer {
                host: host.name.clone(),
                status,
            }),
        }
    }
}

/// A 2xx answer, or the host's refusal with its message.
pub(crate) fn success(host: &HostRecord, answer: HostAnswer) -> Result<HostAnswer, HostLinkError> {
    if answer.status.is_success() {
        return Ok(answer);
    }
    let message = match answer.body["error"]["message"].as_str() {
        Some(message) => message.to_owned(),
        None => answer.body.to_string().chars().take(200).collect(),
    };
    Err(HostLinkError::Refused {
        host: host.name.clone(),
        status: answer.status,
        message,
    })
}

/// Percent-encodes one path segment (everything but unreserved characters).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("a-b_c.d~9"), "a-b_c.d~9");
        assert_eq!(encode_segment("a b/%?#"), "a%20b%2F%25%3F%23");
    }

    #[tokio::test]
    async fn a_host_without_api_url_is_not_called() {
        let host = HostRecord {
            name: "h".into(),
            api_url: None,
            reporting_enabled: true,
            registered_at: String::new(),
            last_seen: String::new(),
            acked_seq: 0,
            recovery_mode: crate::store::RecoveryMode::Builtin,
        };
        let error = HostLink::new()
            .set_host_reporting(&host, false)
            .await
            .unwrap_err();
        assert!(matches!(error, HostLinkError::NoApiUrl { .. }));
        assert!(error.is_unreachable());
    }
}
