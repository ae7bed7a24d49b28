//! A small HTTP/1.1 client for the controller's API: JSON requests with a bearer token, and
//! the Server-Sent Events stream, over `http://` or `https://`. An `https://` controller must
//! present a certificate signed by the `--ca-file` CA, or else by a system root.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tether_tls::Connector;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(20);
/// The largest answer read.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Why a request failed, for the exit status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The controller answered 401.
    #[error("The controller refused the token: {0}")]
    Unauthorized(String),
    /// The controller answered 404.
    #[error("{0}")]
    NotFound(String),
    /// Any other error answer.
    #[error("The controller answered {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error's message, or the body.
        message: String,
    },
}

/// Talks to one controller.
pub struct ControllerClient {
    base: String,
    token: String,
    http: Client<Connector, Full<Bytes>>,
}

impl ControllerClient {
    /// A client for `base` (`http://host:port` or `https://host:port`), sending `token`; an
    /// `https://` controller is trusted if a system root signed its certificate.
    pub fn new(base: &str, token: String) -> anyhow::Result<ControllerClient> {
        ControllerClient::with_ca_file(base, token, None)
    }

    /// Like [`ControllerClient::new`], but an `https://` controller is trusted if `ca_file`
    /// (when given, instead of the system's roots) signed its certificate.
    pub fn with_ca_file(
        base: &str,
        token: String,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<ControllerClient> {
        let base = base.trim_end_matches('/').to_owned();
        let tls = if base.starts_with("https://") {
            tether_tls::client_config(ca_file)?
        } else if !base.starts_with("http://") {
            bail!("--controller must be an http:// or https:// URL, not {base:?}");
        } else if ca_file.is_some() {
            bail!("--ca-file is only used with an https:// controller, not {base:?}");
        } else {
            tether_tls::client_config_trusting_nothing()
        };
        let connector = tether_tls::connector(tls, TIMEOUT);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(ControllerClient { base, token, http })
    }

    /// Why the controller could not be reached, with a hint when TLS is what failed.
    fn unreachable(&self, error: hyper_util::client::legacy::Error) -> anyhow::Error {
        let hint = match tether_tls::find_tls_error(&error) {
            Some(_) => " (TLS failed: is --ca-file the CA that signed its certificate?)",
            None => "",
        };
        anyhow::Error::new(error).context(format!(
            "Cannot reach the controller at {}{hint}",
            self.base
        ))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with an optional JSON body.
    pub async fn post(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.call(Method::POST, path, body).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, path, None).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::PUT, path, Some(body)).await
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .context("Cannot build the request")
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let request = self.request(method.clone(), path, body)?;
        let send = self.http.request(request);
        let response = tokio::time::timeout(TIMEOUT, send)
            .await
            .with_context(|| format!("{method} {path}: no answer within {} s", TIMEOUT.as_secs()))?
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = response.into_body();
        let bytes = http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("{method} {path}: cannot read the answer: {e}"))?
            .to_bytes();
        // An error answer need not be JSON (a proxy's page, a TLS port's hint): its text is
        // the message then.
        let value: Value = match serde_json::from_slice(&bytes) {
            Ok(value) => value,
            Err(_) if bytes.is_empty() || !status.is_success() => Value::Null,
            Err(e) => return Err(e).context(format!("{method} {path}: the answer is not JSON")),
        };
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"].as_str().map_or_else(
            || String::from_utf8_lossy(&bytes).trim_end().to_owned(),
            str::to_owned,
        );
        Err(match status {
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized(message),
            StatusCode::NOT_FOUND => ApiError::NotFound(message),
            other => ApiError::Refused {
                status: other.as_u16(),
                message,
            },
        }
        .into())
    }

    /// Follows `GET path` as Server-Sent Events, calling `on_event` with each event's data
    /// parsed as JSON, until the stream ends or `on_event` returns false.
    pub async fn follow(
        &self,
        path: &str,
        mut on_event: impl FnMut(Value) -> bool,
    ) -> anyhow::Result<()> {
        let request = self.request(Method::GET, path, None)?;
        let response = tokio::time::timeout(TIMEOUT, self.http.request(request))
            .await
            .context("No answer from the event stream")?
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                return Err(ApiError::Unauthorized("the event stream".into()).into());
            }
            bail!("The event stream answered {status}");
        }
        let mut body = response.into_body();
        let mut parser = SseParser::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("The event stream broke off")?;
            let Some(chunk) = frame.data_ref() else {
                continue;
            };
            for data in parser.push(chunk) {
                let Ok(value) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                if !on_event(value) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Splits a Server-Sent Events byte stream into the `data` of each event; bounded.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: String,
}

/// Longest line kept; longer ones are dropped.
const MAX_LINE: usize = 1024 * 1024;

impl SseParser {
    /// Feeds bytes; returns the data of every event they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() < MAX_LINE {
                    self.line.push(b);
                }
                continue;
            }
            let line = String::from_utf8_lossy(&self.line)
                .trim_end_matches('\r')
                .to_owned();
            self.line.clear();
            if line.is_empty() {
                if !self.data.is_empty() {
                    done.push(std::mem::take(&mut self.data));
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_whatever_the_chunks() {
        let stream = b": keep-alive\n\nid: 1\nevent: heartbeat_lost\ndata: {\"id\":1}\n\nid: 2\r\ndata: {\"id\":\r\ndata: 2}\r\n\r\n";
        for cut in 0..stream.len() {
            let mut parser = SseParser::default();
            let mut got = parser.push(&stream[..cut]);
            got.extend(parser.push(&stream[cut..]));
            assert_eq!(got, ["{\"id\":1}", "{\"id\":\n2}"], "cut at {cut}");
        }
    }

    #[test]
    fn http_and_https_controllers_are_taken_and_a_ca_only_with_https() {
        let dir = tether_testkit::temp_dir();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, tether_testkit::pki::TestCa::new("CA").cert_pem()).unwrap();
        assert!(ControllerClient::new("http://c:1", "t".into()).is_ok());
        assert!(ControllerClient::with_ca_file("https://c:1", "t".into(), Some(&ca)).is_ok());
        let err = ControllerClient::with_ca_file("http://c:1", "t".into(), Some(&ca)).err();
        assert!(format!("{err:?}").contains("https://"), "{err:?}");
        assert!(ControllerClient::new("c:1", "t".into()).is_err());
        let missing = dir.path().join("missing.pem");
        let err = ControllerClient::with_ca_file("https://c:1", "t".into(), Some(&missing)).err();
        assert!(format!("{err:?}").contains("missing.pem"), "{err:?}");
    }
}
