//! The TLS listener and the client connector against each other over real loopback TCP, with
//! certificates made by a throwaway CA when the test runs.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tether_testkit::pki::{TestCa, TestPki};
use tether_testkit::{temp_dir, TempDir};
use tether_tls::{client_config, connector, find_tls_error, ClientConfig, TlsListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LONG: Duration = Duration::from_secs(20);

/// An HTTPS server answering `GET /` with "hello", its PKI and address.
struct Server {
    _dir: TempDir,
    pki: TestPki,
    addr: SocketAddr,
}

async fn serve(names: &[&str], handshake_timeout: Duration) -> Server {
    let dir = temp_dir();
    let pki = TestCa::new("test CA").write(dir.path(), "", names);
    let config = tether_tls::server_config(&pki.cert, &pki.key).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::with_handshake_timeout(tcp, config, handshake_timeout).unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    let app = Router::new().route("/", get(|| async { "hello" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        _dir: dir,
        pki,
        addr,
    }
}

impl Server {
    /// A client trusting the server's CA is answered.
    async fn assert_served(&self) {
        let tls = client_config(Some(&self.pki.ca)).unwrap();
        let body = fetch(tls, &format!("https://{}/", self.addr)).await;
        assert_eq!(body.unwrap(), "hello");
    }
}

/// `GET url` with a client trusting `tls`; the body, or the error.
async fn fetch(
    tls: Arc<ClientConfig>,
    url: &str,
) -> Result<String, hyper_util::client::legacy::Error> {
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(connector(tls, Duration::from_secs(5)));
    let response = client.get(url.parse().unwrap()).await?;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_client_trusting_the_ca_is_served_over_tls() {
    let server = serve(&["127.0.0.1"], LONG).await;
    server.assert_served().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_or_for_another_name_does_not_verify() {
    let server = serve(&["127.0.0.1"], LONG).await;
    let dir = temp_dir();
    let other = TestCa::new("other CA").write(dir.path(), "", &["127.0.0.1"]);
    let url = format!("https://{}/", server.addr);
    let err = fetch(client_config(Some(&other.ca)).unwrap(), &url)
        .await
        .unwrap_err();
    let tls = find_tls_error(&err).unwrap_or_else(|| panic!("no TLS error in {err:?}"));
    assert!(
        matches!(
            tls,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{tls}"
    );

    // The right CA, but the certificate names only "localhost".
    let named = serve(&["localhost"], LONG).await;
    let url = format!("https://127.0.0.1:{}/", named.addr.port());
    let err = fetch(client_config(Some(&named.pki.ca)).unwrap(), &url)
        .await
        .unwrap_err();
    let tls = find_tls_error(&err).unwrap_or_else(|| panic!("no TLS error in {err:?}"));
    assert!(tls.to_string().contains("not valid for name"), "{tls}");
    let ok = fetch(
        client_config(Some(&named.pki.ca)).unwrap(),
        &format!("https://localhost:{}/", named.addr.port()),
    )
    .await;
    assert_eq!(ok.unwrap(), "hello");
}

#[tokio::test]
async fn the_connector_still_speaks_plain_http() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let app = Router::new().route("/", get(|| async { "plain" }));
    tokio::spawn(async move { axum::serve(tcp, app).await });
    let tls = tether_tls::client_config_trusting_nothing();
    assert_eq!(
        fetch(tls, &format!("http://{addr}/")).await.unwrap(),
        "plain"
    );
}

#[tokio::test]
async fn a_plain_http_client_is_told_to_use_https_and_others_are_still_served() {
    let server = serve(&["127.0.0.1"], LONG).await;
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(LONG, plain.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("use an https:// URL"), "{answer}");

    // Garbage that starts like a handshake record fails the handshake and is closed.
    let mut garbage = TcpStream::connect(server.addr).await.unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2])
        .await
        .unwrap();
    server.assert_served().await;
}

#[tokio::test]
async fn a_silent_client_holds_no_one_up_and_is_closed_after_the_handshake_limit() {
    let server = serve(&["127.0.0.1"], Duration::from_millis(300)).await;
    let mut silent: Vec<TcpStream> = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    server.assert_served().await;
    for mut stream in silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(LONG, stream.read(&mut buf)).await;
        // Closed by the server: end of stream (or a reset).
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }
}
