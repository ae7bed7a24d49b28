use super::*;
use tether_testkit::pki::TestCa;
use tether_testkit::temp_dir;

#[test]
fn a_certificate_and_its_key_make_a_server_config_offering_http1() {
    let dir = temp_dir();
    let pki = TestCa::new("test CA").write(dir.path(), "", &["127.0.0.1", "localhost"]);
    let config = server_config(&pki.cert, &pki.key).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    let same = ServerCert {
        cert: pki.cert.clone(),
        key: pki.key.clone(),
    };
    assert!(same.load().is_ok());
}

#[test]
fn missing_files_are_named_with_what_they_should_hold() {
    let dir = temp_dir();
    let pki = TestCa::new("test CA").write(dir.path(), "", &["localhost"]);
    let missing = dir.path().join("nope.pem");
    let err = server_config(&missing, &pki.key).unwrap_err();
    assert!(matches!(
        err,
        TlsError::Read {
            what: "certificate",
            ..
        }
    ));
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let err = server_config(&pki.cert, &missing).unwrap_err();
    assert!(err.to_string().contains("private key file"), "{err}");
    let err = client_config(Some(&missing)).unwrap_err();
    assert!(err.to_string().contains("CA file"), "{err}");
}

#[test]
fn garbage_and_swapped_files_say_what_is_missing() {
    let dir = temp_dir();
    let pki = TestCa::new("test CA").write(dir.path(), "", &["localhost"]);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n\x00\x01").unwrap();
    let err = server_config(&garbage, &pki.key).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    assert!(err.to_string().contains("garbage.pem"), "{err}");
    // The key given as the certificate and the certificate as the key.
    let err = server_config(&pki.key, &pki.cert).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    let err = server_config(&pki.cert, &pki.cert).unwrap_err();
    assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    assert!(err.to_string().contains("server.pem"), "{err}");
    let err = client_config(Some(&garbage)).unwrap_err();
    assert!(
        matches!(err, TlsError::NoCertificate { what: "CA", .. }),
        "{err}"
    );
}

#[test]
fn a_damaged_pem_block_is_not_valid_pem() {
    let dir = temp_dir();
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nnot*base64*at*all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = client_config(Some(&broken)).unwrap_err();
    assert!(matches!(err, TlsError::BadPem { .. }), "{err}");
    let truncated = dir.path().join("truncated.pem");
    std::fs::write(&truncated, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    let err = client_config(Some(&truncated)).unwrap_err();
    assert!(matches!(err, TlsError::BadPem { .. }), "{err}");
    assert!(err.to_string().contains("truncated.pem"), "{err}");
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let dir = temp_dir();
    let ca = TestCa::new("test CA");
    let one = ca.write(dir.path(), "one-", &["localhost"]);
    let two = ca.write(dir.path(), "two-", &["localhost"]);
    let err = server_config(&one.cert, &two.key).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("one-server.pem") && text.contains("two-server.key"),
        "{text}"
    );
}

#[test]
fn a_ca_file_with_several_certificates_trusts_them_all() {
    let dir = temp_dir();
    let (a, b) = (TestCa::new("CA a"), TestCa::new("CA b"));
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, format!("{}{}", a.cert_pem(), b.cert_pem())).unwrap();
    let roots = file_roots(&bundle).unwrap();
    assert_eq!(roots.len(), 2);
}

#[test]
fn the_system_roots_are_found_here() {
    // The build machines carry a CA bundle in /etc/ssl/certs.
    if Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        assert!(client_config(None).is_ok());
    }
}
