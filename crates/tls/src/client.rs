//! Client side: a connector for hyper-util's client that speaks `http://` and `https://`.
//!
//! `https://` URLs are verified against the [`ClientConfig`]'s roots and the URL's host (a DNS
//! name or an IP address, which the certificate must name); `http://` URLs go over plain TCP
//! as before. [`find_tls_error`] digs the rustls error out of a failed request, so a caller
//! can tell an untrusted certificate from a refused connection.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::ClientConfig;

/// The connector [`connector`] builds.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A connector for `http://` and `https://` URLs, trusting what `tls` trusts; TCP connects
/// give up after `connect_timeout` and send without delay (`TCP_NODELAY`).
pub fn connector(tls: Arc<ClientConfig>, connect_timeout: Duration) -> Connector {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_nodelay(true);
    HttpsConnectorBuilder::new()
        .with_tls_config(ClientConfig::clone(&tls))
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp)
}

/// The rustls error somewhere in `error`'s chain of sources, if TLS is what failed (an
/// untrusted or expired certificate, a name mismatch, a server that does not speak TLS, …).
pub fn find_tls_error<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        next = cause(current);
    }
    None
}

/// The error `error` wraps. An `io::Error` hides the error it wraps from `source()` (it
/// answers that error's own source), so it is opened with `get_ref` instead.
fn cause<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    match error.downcast_ref::<std::io::Error>() {
        Some(io) => match io.get_ref() {
            Some(inner) => Some(inner),
            None => io.source(),
        },
        None => error.source(),
    }
}
