//! A throwaway certificate authority for TLS tests, made with rcgen when the test runs.
//!
//! [`TestCa::new`] makes a CA; [`TestCa::write`] writes its certificate and a server
//! certificate it signed for the given names (DNS names or IP addresses) with that
//! certificate's key, as PEM files in a directory. Nothing is downloaded and nothing outlives
//! the test's temp dir. Every key is ECDSA P-256.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that lives as long as the test.
pub struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// The PEM files [`TestCa::write`] wrote.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA's certificate (the trust anchor clients are given).
    pub ca: PathBuf,
    /// The server's certificate, signed by the CA.
    pub cert: PathBuf,
    /// The server certificate's private key (PKCS#8).
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA whose certificate is named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA's certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (e.g. `["127.0.0.1", "localhost"]`) signed by this
    /// CA: its PEM and its key's PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap_or_else(|e| panic!("{e}"));
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("{e}"));
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `<prefix>ca.pem`, `<prefix>server.pem` and `<prefix>server.key` under `dir`, the
    /// server certificate being for `names`.
    pub fn write(&self, dir: &Path, prefix: &str, names: &[&str]) -> TestPki {
        let (cert_pem, key_pem) = self.issue(names);
        let pki = TestPki {
            ca: dir.join(format!("{prefix}ca.pem")),
            cert: dir.join(format!("{prefix}server.pem")),
            key: dir.join(format!("{prefix}server.key")),
        };
        for (path, text) in [
            (&pki.ca, self.cert_pem.as_str()),
            (&pki.cert, &cert_pem),
            (&pki.key, &key_pem),
        ] {
            std::fs::write(path, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
        pki
    }
}
