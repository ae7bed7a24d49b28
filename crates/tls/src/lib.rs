//! TLS for tether's HTTP links: the controller's API and the clients that call it.
//!
//! Built on rustls with the `ring` provider; nothing here reads a process-wide default, so the
//! library never depends on which provider another crate installed. Three parts:
//!
//! - [`config`]: rustls configurations from PEM files. [`server_config`] takes a certificate
//!   chain and its private key; [`client_config`] trusts the CA bundle it is given and nothing
//!   else, or the system's roots when given none. Every failure is a [`TlsError`] naming the
//!   file and what is wrong with it.
//! - [`listener`]: [`TlsListener`], an `axum::serve` listener that runs each TLS handshake in
//!   its own task with a time limit, so a slow, silent or plain-text client never holds up
//!   another; failed handshakes are logged at a bounded rate. [`serve`] serves a router over
//!   it, or over plain TCP when no TLS is configured.
//! - [`client`]: [`connector`], a connector for hyper-util's client that speaks `http://` and
//!   `https://`, and [`find_tls_error`], which finds the rustls error (an untrusted
//!   certificate, …) inside a client error so callers can say what went wrong.

pub mod client;
pub mod config;
pub mod listener;

use std::path::PathBuf;

pub use client::{connector, find_tls_error, Connector};
pub use config::{
    client_config, client_config_trusting_nothing, server_config, system_client_config, ServerCert,
};
pub use listener::{serve, TlsListener};
pub use rustls;
pub use rustls::{ClientConfig, ServerConfig};

/// A certificate, key or CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read (missing, no permission, …).
    #[error("Cannot read the {what} file {path}")]
    Read {
        /// What the file should hold ("certificate", "private key", "CA").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("The {what} file {path} is not valid PEM")]
    BadPem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The file holds no `CERTIFICATE` block.
    #[error("The {what} file {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The file holds no private key block.
    #[error("The private key file {path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key cannot be used for TLS (an unsupported algorithm or a damaged key).
    #[error("The private key in {path} cannot be used")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The private key is not the one of the certificate.
    #[error("The private key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A certificate of a CA bundle cannot be a trust anchor.
    #[error("A certificate in the CA file {path} cannot be used as a trust anchor")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// No CA file was given and the system has no usable root certificates.
    #[error("This system has no trusted root certificates ({details}); give a CA file to trust")]
    NoSystemRoots {
        /// What the loader reported.
        details: String,
    },
}
