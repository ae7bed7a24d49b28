//! The controller link's HTTP client: the two calls of the agent protocol and their answers.
//!
//! Each call is a `POST` with a JSON body and `Authorization: Bearer <token>`, given
//! [`REQUEST_TIMEOUT`] for the whole exchange, its answer read up to [`MAX_ANSWER`] bytes. The
//! answers the protocol defines become an [`Answer`]; anything else is a [`LinkError`]. The
//! client speaks `http://` and `https://` (`tether_tls::connector`); a failed TLS handshake is
//! told apart from an unreachable controller ([`LinkError::Tls`]).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tether_tls::{rustls, ClientConfig, Connector};

use crate::journal::Sequenced;
use crate::status::InstanceStatus;

/// Longest a call may take, from connecting to the last byte of the answer.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a call to the controller did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The request could not be sent or its answer not read.
    #[error("Cannot reach the controller")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The TLS handshake failed: most often a certificate that does not verify (signed by a
    /// CA not trusted, expired, or not naming the URL's host).
    #[error("The TLS handshake with the controller failed; check --controller-ca and the controller's certificate")]
    Tls(#[source] rustls::Error),
    /// No answer within the time limit.
    #[error("The controller did not answer within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    /// The controller refused the token.
    #[error("The controller refused the token (401); check --token-file or TETHER_TOKEN")]
    Unauthorized,
    /// The controller does not know this host (it must register again).
    #[error("The controller does not know this host; registering again")]
    UnknownHost,
    /// An answer the protocol does not define.
    #[error("The controller answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// A defined status with a body that is not the expected JSON.
    #[error("The controller's answer is not the expected JSON")]
    BadAnswer(#[source] serde_json::Error),
    /// The controller's acknowledgement does not move forward (a gap the journal cannot fill).
    #[error("The controller acknowledges seq {acked} but cannot take seq {next} next")]
    Stuck {
        /// What the controller has.
        acked: u64,
        /// What the journal holds next.
        next: u64,
    },
    /// The journal file cannot be read.
    #[error("Cannot read the journal")]
    Journal(#[source] std::io::Error),
}

/// A defined answer to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 200: the controller has every event up to this seq.
    Acked(u64),
    /// 409 `sequence_gap`: resend from this seq + 1.
    Gap(u64),
}

/// The body of `POST /v1/agents/register`.
#[derive(Debug, Serialize)]
struct Register<'a> {
    host: &'a str,
    api_url: Option<&'a str>,
    instances: &'a [InstanceStatus],
}

/// The part of every defined answer the agent reads.
#[derive(Debug, Deserialize)]
struct AckedSeq {
    acked_seq: u64,
}

/// The agent's side of the agent protocol.
#[derive(Debug, Clone)]
pub(crate) struct ControllerClient {
    base: String,
    bearer: String,
    http: Client<Connector, Full<Bytes>>,
}

impl ControllerClient {
    /// A client of the controller at `base` (a URL without a trailing slash); an `https://`
    /// controller must be certified by what `tls` trusts (without it, by nothing).
    pub(crate) fn new(
        base: String,
        token: &str,
        tls: Option<Arc<ClientConfig>>,
    ) -> ControllerClient {
        let tls = tls.unwrap_or_else(tether_tls::client_config_trusting_nothing);
        let connector = tether_tls::connector(tls, REQUEST_TIMEOUT);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        ControllerClient {
            base,
            bearer: format!("Bearer {token}"),
            http,
        }
    }

    /// Registers `host` with its full state; answers the seq the controller has.
    pub(crate) async fn register(
        &self,
        host: &str,
        api_url: Option<&str>,
        instances: &[InstanceStatus],
    ) -> Result<u64, LinkError> {
        let body = Register {
            host,
            api_url,
            instances,
        };
        let body = serde_json::to_vec(&body).map_err(LinkError::BadAnswer)?;
        match self.post("/v1/agents/register", body).await? {
            (StatusCode::OK, answer) => acked_seq(&answer),
            (status, answer) => Err(unexpected(status, &answer)),
        }
    }

    /// Sends `events` (contiguous seqs) for `host`.
    pub(crate) async fn send_events(
        &self,
        host: &str,
        events: &[Sequenced],
    ) -> Result<Answer, LinkError> {
        let body = crate::journal::events_body(events);
        let path = format!("/v1/agents/{host}/events");
        match self.post(&path, body).await? {
            (StatusCode::OK, answer) => acked_seq(&answer).map(Answer::Acked),
            (StatusCode::CONFLICT, answer) => acked_seq(&answer).map(Answer::Gap),
            (StatusCode::NOT_FOUND, _) => Err(LinkError::UnknownHost),
            (status, answer) => Err(unexpected(status, &answer)),
        }
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<(StatusCode, Bytes), LinkError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header(AUTHORIZATION, &self.bearer)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| LinkError::Unreachable(e.into()))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                match tether_tls::find_tls_error(&e) {
                    Some(tls) => LinkError::Tls(tls.clone()),
                    None => LinkError::Unreachable(e.into()),
                }
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(LinkError::Unreachable)?
                .to_bytes();
            Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| LinkError::Timeout)??;
        if status == StatusCode::UNAUTHORIZED {
            return Err(LinkError::Unauthorized);
        }
        Ok((status, body))
    }
}

fn acked_seq(answer: &[u8]) -> Result<u64, LinkError> {
    let answer: AckedSeq = serde_json::from_slice(answer).map_err(LinkError::BadAnswer)?;
    Ok(answer.acked_seq)
}

fn unexpected(status: StatusCode, body: &[u8]) -> LinkError {
    let text = String::from_utf8_lossy(body);
    let body: String = text.chars().take(200).collect();
    LinkError::Status { status, body }
}
