//! A small HTTP/1.1 client for the controller's API: JSON requests with a bearer token, and
//! the Server-Sent Events stream. Plain `http://` only.

use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

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
    http: Client<HttpConnector, Full<Bytes>>,
}

impl ControllerClient {
    /// A client for `base` (`http://host:port`), sending `token`.
    pub fn new(base: &str, token: String) -> anyhow::Result<ControllerClient> {
        let base = base.trim_end_matches('/').to_owned();
        if base.starts_with("https://") {
            bail!("https:// controllers are not supported yet; use http:// on a trusted network");
        }
        if !base.starts_with("http://") {
            bail!("--controller must be an http:// URL, not {base:?}");
        }
        let http = Client::builder(TokioExecutor::new()).build_http();
        Ok(ControllerClient { base, token, http })
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
            .with_context(|| format!("Cannot reach the controller at {}", self.base))?;
        let status = response.status();
        let body = response.into_body();
        let bytes = http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("{method} {path}: cannot read the answer: {e}"))?
            .to_bytes();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{method} {path}: the answer is not JSON"))?
        };
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"].as_str().map_or_else(
            || String::from_utf8_lossy(&bytes).into_owned(),
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
            .with_context(|| format!("Cannot reach the controller at {}", self.base))?;
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
    fn only_http_controllers_are_taken() {
        assert!(ControllerClient::new("https://c:1", "t".into()).is_err());
        assert!(ControllerClient::new("c:1", "t".into()).is_err());
    }
}
