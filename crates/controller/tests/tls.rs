//! The controller over TLS: its API and host ingestion served over HTTPS only, plain and
//! silent clients that hold no one up, unusable certificate files refused at start, and
//! webhooks delivered to an HTTPS subscriber. Certificates come from a throwaway CA made
//! when the test runs; every connection is real TCP on loopback.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use common::{event, registration, TOKEN};
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tether_controller::{Controller, ControllerConfig, ControllerError, ServerCert};
use tether_testkit::pki::{TestCa, TestPki};
use tether_testkit::{temp_dir, wait_for, wait_until, TempDir};
use tether_tls::{ClientConfig, Connector, TlsListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "receiver-secret-0123456789";

fn config(dir: &Path, pki: &TestPki, webhook_ca: Option<PathBuf>) -> ControllerConfig {
    ControllerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        token: TOKEN.into(),
        starlingx_listen: Some("127.0.0.1:0".parse().unwrap()),
        vim_url: None,
        tls: Some(ServerCert {
            cert: pki.cert.clone(),
            key: pki.key.clone(),
        }),
        webhook_ca,
        host_ca: None,
    }
}

/// A controller serving HTTPS with a certificate for 127.0.0.1 from its own CA.
struct TlsController {
    _dir: TempDir,
    addr: SocketAddr,
    starlingx: SocketAddr,
    client: Client<Connector, Full<Bytes>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ControllerError>>,
}

impl TlsController {
    async fn start(webhook_ca: Option<PathBuf>) -> TlsController {
        let dir = temp_dir();
        let pki = TestCa::new("controller CA").write(dir.path(), "", &["127.0.0.1"]);
        let config = config(dir.path(), &pki, webhook_ca);
        let mut controller = Controller::open(config)
            .unwrap()
            .with_webhook_backoff(Duration::from_millis(20), Duration::from_millis(200));
        let addr = controller.bind().await.unwrap();
        let starlingx = controller.starlingx_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controller.run(async {
            let _ = stopped.await;
        }));
        let client = https_client(tether_tls::client_config(Some(&pki.ca)).unwrap());
        TlsController {
            _dir: dir,
            addr,
            starlingx,
            client,
            stop,
            task,
        }
    }

    /// A request with the token over HTTPS; the status and the JSON answer.
    async fn call(&self, method: Method, path: &str, body: &str) -> (u16, Value) {
        let url = format!("https://{}{path}", self.addr);
        https_call(&self.client, method, &url, body).await.unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn https_client(tls: Arc<ClientConfig>) -> Client<Connector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(tether_tls::connector(tls, WAIT))
}

async fn https_call(
    client: &Client<Connector, Full<Bytes>>,
    method: Method,
    url: &str,
    body: &str,
) -> Result<(u16, Value), hyper_util::client::legacy::Error> {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// Bytes a plain (not TLS) client gets back for `request`, until the server closes.
async fn plain_exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closes a plain connection");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestion_and_the_api_are_served_over_https_only() {
    let controller = TlsController::start(None).await;
    let body = registration("c0", &[("u1", "heartbeating")]).to_string();
    let (code, answer) = controller
        .call(Method::POST, "/v1/agents/register", &body)
        .await;
    assert_eq!((code, &answer["acked_seq"]), (200, &json!(0)), "{answer}");
    let events = json!({"events": [event(1, "u1", "heartbeat_lost", json!({}))]});
    let (code, answer) = controller
        .call(Method::POST, "/v1/agents/c0/events", &events.to_string())
        .await;
    assert_eq!((code, &answer["acked_seq"]), (200, &json!(1)), "{answer}");
    let (code, hosts) = controller.call(Method::GET, "/v1/hosts", "").await;
    assert_eq!(code, 200);
    assert_eq!(hosts[0]["name"], "c0", "{hosts}");

    // Plain HTTP on the API port is told to use https:// and gets nothing else.
    let request =
        format!("GET /v1/hosts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    let answer = plain_exchange(controller.addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("https://") && !answer.contains("c0"),
        "{answer}"
    );

    // The StarlingX listener stays plain HTTP.
    let answer = plain_exchange(
        controller.starlingx,
        "GET /nfvi-plugins/v1/instances HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    assert!(!answer.contains("https://"), "{answer}");
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_silent_and_untrusting_clients_do_not_stop_others_being_served() {
    let controller = TlsController::start(None).await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(controller.addr).await.unwrap());
    }
    let mut half = TcpStream::connect(controller.addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let garbage = plain_exchange(controller.addr, "\x16\x03\x01\x00\x05hello").await;
    assert!(!garbage.contains("200"), "{garbage}");
    let dir = temp_dir();
    let other = TestCa::new("other CA").write(dir.path(), "", &["127.0.0.1"]);
    let untrusting = https_client(tether_tls::client_config(Some(&other.ca)).unwrap());
    let url = format!("https://{}/v1/hosts", controller.addr);
    let refused = https_call(&untrusting, Method::GET, &url, "").await;
    let error = refused.unwrap_err();
    assert!(tether_tls::find_tls_error(&error).is_some(), "{error:?}");

    for _ in 0..5 {
        let (code, _) = controller.call(Method::GET, "/v1/hosts", "").await;
        assert_eq!(code, 200);
    }
    drop((silent, half));
    controller.stop().await;
}

#[tokio::test]
async fn unusable_certificate_files_stop_the_controller_from_opening() {
    let dir = temp_dir();
    let ca = TestCa::new("controller CA");
    let pki = ca.write(dir.path(), "", &["127.0.0.1"]);
    let other = ca.write(dir.path(), "other-", &["127.0.0.1"]);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all").unwrap();
    let missing = dir.path().join("missing.pem");
    let with = |cert: &Path, key: &Path, webhook_ca: Option<&Path>| {
        let mut config = config(dir.path(), &pki, webhook_ca.map(Path::to_path_buf));
        config.tls = Some(ServerCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
        });
        let error = Controller::open(config).err()?;
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        Some(format!("{error}: {}", cause.unwrap_or_default()))
    };
    let cases = [
        (with(&missing, &pki.key, None), "missing.pem"),
        (
            with(&pki.cert, &garbage, None),
            "garbage.pem holds no PEM private key",
        ),
        (
            with(&garbage, &pki.key, None),
            "garbage.pem holds no PEM certificate",
        ),
        (
            with(&pki.cert, &other.key, None),
            "does not belong to the certificate",
        ),
        (
            with(&pki.cert, &pki.key, Some(&garbage)),
            "webhook subscribers",
        ),
    ];
    for (error, says) in cases {
        let error = error.unwrap_or_default();
        assert!(error.contains(says), "{says}: {error}");
    }
    // Refused before the store was touched; the right files open.
    assert!(!dir.path().join("data").join("controller.db").exists());
    assert_eq!(with(&pki.cert, &pki.key, Some(&pki.ca)), None);
}

/// An HTTPS webhook subscriber recording the idempotency keys it accepted.
async fn https_subscriber(pki: &TestPki) -> (String, Arc<Mutex<Vec<String>>>) {
    let keys = Arc::new(Mutex::new(Vec::new()));
    let seen = keys.clone();
    let record = move |headers: axum::http::HeaderMap| {
        let seen = seen.clone();
        async move {
            let key = headers.get("idempotency-key").unwrap().to_str().unwrap();
            seen.lock().unwrap().push(key.to_owned());
            axum::http::StatusCode::NO_CONTENT
        }
    };
    let config = tether_tls::server_config(&pki.cert, &pki.key).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::new(tcp, config).unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    let app = axum::Router::new().fallback(record);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("https://localhost:{}/hook", addr.port()), keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_an_https_subscriber_that_the_webhook_ca_vouches_for() {
    let dir = temp_dir();
    let hooks_ca = TestCa::new("subscribers' CA");
    let trusted = hooks_ca.write(dir.path(), "trusted-", &["localhost"]);
    let stranger = TestCa::new("unknown CA").write(dir.path(), "stranger-", &["localhost"]);
    let controller = TlsController::start(Some(trusted.ca.clone())).await;
    let (good_url, good) = https_subscriber(&trusted).await;
    let (bad_url, bad) = https_subscriber(&stranger).await;
    let mut ids = Vec::new();
    for url in [&good_url, &bad_url] {
        let body = json!({"url": url, "secret": SECRET}).to_string();
        let (code, answer) = controller.call(Method::POST, "/v1/webhooks", &body).await;
        assert_eq!(code, 201, "{answer}");
        ids.push(answer["id"].as_u64().unwrap());
    }
    let body = registration("c0", &[("u1", "heartbeating")]).to_string();
    controller
        .call(Method::POST, "/v1/agents/register", &body)
        .await;
    let events = json!({"events": [
        event(1, "u1", "heartbeat_lost", json!({})),
        event(2, "u1", "recovery_done", json!({})),
    ]});
    let (code, _) = controller
        .call(Method::POST, "/v1/agents/c0/events", &events.to_string())
        .await;
    assert_eq!(code, 200);
    wait_for("both events reach the trusted subscriber", WAIT, || {
        good.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(*good.lock().unwrap(), ["c0:1", "c0:2"]);

    // The subscriber whose certificate no trusted CA signed gets nothing; the error says why.
    let status = |id: u64| {
        let client = controller.client.clone();
        let url = format!("https://{}/v1/webhooks/{id}", controller.addr);
        async move { https_call(&client, Method::GET, &url, "").await.unwrap().1 }
    };
    let last = Arc::new(Mutex::new(Value::Null));
    wait_until("the failed delivery is recorded", WAIT, || {
        let (last, answer) = (last.clone(), status(ids[1]));
        async move {
            let answer = answer.await;
            let failed = answer["last_error"].is_string();
            *last.lock().unwrap() = answer;
            failed
        }
    })
    .await;
    let failing = last.lock().unwrap().clone();
    let error = failing["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("UnknownIssuer"), "{failing}");
    assert_eq!(failing["delivered"], 0, "{failing}");
    assert!(bad.lock().unwrap().is_empty());
    assert_eq!(status(ids[0]).await["delivered"], 2);
    controller.stop().await;
}
