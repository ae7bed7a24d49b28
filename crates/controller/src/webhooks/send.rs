//! One delivery attempt: the JSON body, its signature and the HTTP POST; and the HTTP
//! exchange itself, which the VIM event transmitter ([`crate::vim`]) shares.
//!
//! The body is the event as `GET /v1/events` shows it, serialised once per attempt from the
//! stored event; serde_json writes the same bytes every time, so retries (and deliveries after
//! a restart) carry the same body, signature and idempotency key. `https://` subscribers are
//! reached over TLS ([`client`]).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Sha256;
use tether_tls::{ClientConfig, Connector};

use crate::api::error_chain;
use crate::store::{Delivery, StoredEvent};

/// How long one attempt may take, from connecting to the end of the answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The version of the body and headers, sent as `X-Tether-Webhook-Version`.
pub const PAYLOAD_VERSION: &str = "1";

/// Most bytes of a subscriber's answer read (and thrown away) before the connection is
/// dropped.
const MAX_ANSWER: usize = 64 << 10;

/// The HTTP client the delivery task shares between attempts.
pub type HttpClient = Client<Connector, Full<Bytes>>;

/// A client for `http://` and `https://` URLs with the attempt timeout on connecting. It
/// trusts `ca`, or else the system's roots; a system without any trusts no `https://`
/// subscriber (said once, here, and in each such delivery's error).
pub fn client(ca: Option<Arc<ClientConfig>>) -> HttpClient {
    let tls = ca.unwrap_or_else(|| tether_tls::system_client_config("Webhook subscribers"));
    Client::builder(TokioExecutor::new()).build(tether_tls::connector(tls, ATTEMPT_TIMEOUT))
}

/// A client for plain `http://` URLs (an `https://` one fails: it trusts no certificate)
/// that gives up connecting after `connect_timeout`.
pub(crate) fn client_with(connect_timeout: Duration) -> HttpClient {
    let tls = tether_tls::client_config_trusting_nothing();
    Client::builder(TokioExecutor::new()).build(tether_tls::connector(tls, connect_timeout))
}

/// The webhook body: the stored event's fields, wire-stable.
#[derive(Serialize)]
struct Payload<'a> {
    id: u64,
    host: &'a str,
    seq: u64,
    ts: &'a str,
    instance: &'a str,
    name: &'a str,
    event: &'a str,
    details: &'a Map<String, Value>,
}

/// The exact bytes POSTed for `event`.
pub fn body(event: &StoredEvent) -> Vec<u8> {
    let payload = Payload {
        id: event.id,
        host: &event.host,
        seq: event.seq,
        ts: &event.ts,
        instance: &event.instance,
        name: &event.name,
        event: &event.event,
        details: &event.details,
    };
    // Serialising strings, integers and a JSON map cannot fail.
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`, the `X-Tether-Signature` value.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(7 + 2 * digest.len());
    text.push_str("sha256=");
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// The `Idempotency-Key` of an event: `<host>:<seq>`, the same across retries, restarts and
/// replays by the host agent.
pub fn idempotency_key(event: &StoredEvent) -> String {
    format!("{}:{}", event.host, event.seq)
}

/// POSTs `delivery` once. `Ok` when the subscriber answered 2xx; otherwise what went wrong.
pub async fn attempt(client: &HttpClient, delivery: &Delivery) -> Result<(), String> {
    let body = body(&delivery.event);
    let request = Request::post(delivery.url.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("tether-controller/", env!("CARGO_PKG_VERSION")),
        )
        .header("Idempotency-Key", idempotency_key(&delivery.event))
        .header("X-Tether-Event-Id", delivery.event.id)
        .header("X-Tether-Signature", signature(&delivery.secret, &body))
        .header("X-Tether-Webhook-Version", PAYLOAD_VERSION)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("Cannot build the request: {e}"))?;
    let status = exchange(client, request, ATTEMPT_TIMEOUT).await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("The subscriber answered {status}"))
    }
}

/// Sends `request` and reads (a bounded part of) the answer, all within `timeout`; the
/// answer's status, or what went wrong (connecting, sending, no complete answer in time).
pub(crate) async fn exchange(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<StatusCode, String> {
    let exchange = async {
        let response = client.request(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status();
        // Read a bounded answer so the connection can be reused; its content is not used.
        let _ = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await;
        Ok(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("No answer within {timeout:?}")),
    }
}
