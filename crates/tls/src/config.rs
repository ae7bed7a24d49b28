//! rustls configurations from PEM files.
//!
//! A server presents one certificate chain (`cert`, leaf first) with its private key (PKCS#8,
//! PKCS#1 or SEC1). A client trusts either the CA bundle it is given, and nothing else, or the
//! system's root certificates (found as OpenSSL would: `SSL_CERT_FILE`, `SSL_CERT_DIR`, then
//! `/etc/ssl/certs`). Both speak TLS 1.2 and 1.3 with rustls's safe defaults and offer
//! HTTP/1.1 by ALPN.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::TlsError;

/// A server's certificate chain and private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCert {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

impl ServerCert {
    /// Loads both files into a server configuration; see [`server_config`].
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        server_config(&self.cert, &self.key)
    }
}

/// The one provider every configuration here is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls refuses the safe default versions only for a provider without suites for them;
/// ring's default provider has suites for both TLS 1.2 and 1.3.
const RING_HAS_BOTH_VERSIONS: &str = "ring's default provider supports TLS 1.2 and 1.3";

/// A server configuration presenting the chain in `cert_pem` with the key in `key_pem`.
///
/// Fails, naming the file, when a file cannot be read, is not PEM, holds no certificate or no
/// key, or when the key is not the certificate's.
pub fn server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certificates("certificate", cert_pem)?;
    let key = read_key(key_pem)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("{RING_HAS_BOTH_VERSIONS}"))
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: cert_pem.to_owned(),
                key: key_pem.to_owned(),
            },
            source => TlsError::BadKey {
                path: key_pem.to_owned(),
                source,
            },
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting the certificates in `ca_pem` and nothing else, or, without
/// a file, the system's root certificates ([`TlsError::NoSystemRoots`] when it has none).
pub fn client_config(ca_pem: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca_pem {
        Some(path) => file_roots(path)?,
        None => system_roots()?,
    };
    Ok(with_roots(roots))
}

/// The system's roots ([`client_config`] without a file) or, when the system has none, a
/// configuration that trusts no server, after a warning that names `whom` it was for. For
/// clients that must start whatever the system holds and may never meet an `https://` URL.
pub fn system_client_config(whom: &str) -> Arc<ClientConfig> {
    client_config(None).unwrap_or_else(|error| {
        tracing::warn!(error = %error, "{whom} at https:// URLs cannot be verified");
        client_config_trusting_nothing()
    })
}

/// A client configuration that trusts no server: for a client whose URLs are all `http://`,
/// where an `https://` URL must fail rather than be trusted.
pub fn client_config_trusting_nothing() -> Arc<ClientConfig> {
    with_roots(RootCertStore::empty())
}

fn with_roots(roots: RootCertStore) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("{RING_HAS_BOTH_VERSIONS}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Every certificate of a CA bundle as a trust anchor.
fn file_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates("CA", path)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// The system's roots; the ones that cannot be parsed are skipped.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let details = match found.errors.first() {
            Some(error) => error.to_string(),
            None => "none found in SSL_CERT_FILE, SSL_CERT_DIR or /etc/ssl/certs".to_owned(),
        };
        return Err(TlsError::NoSystemRoots { details });
    }
    Ok(roots)
}

/// Every `CERTIFICATE` block of `path`, in order; at least one.
fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| bad_pem(what, path, source))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key block of `path`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("private key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        source => bad_pem("private key", path, source),
    })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn bad_pem(what: &'static str, path: &Path, source: pem::Error) -> TlsError {
    TlsError::BadPem {
        what,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests;
