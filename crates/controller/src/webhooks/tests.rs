//! Back-off, signatures, bodies and the checks on subscriptions.

use std::time::Duration;

use serde_json::{json, Map};

use super::*;
use crate::store::StoredEvent;

#[test]
fn back_off_doubles_up_to_its_maximum_and_jitter_only_shortens_it() {
    let backoff = Backoff::default();
    let secs = |attempts, jitter| backoff.delay(attempts, jitter).as_secs_f64();
    assert_eq!(secs(1, 0.0), 1.0);
    assert_eq!(secs(2, 0.0), 2.0);
    assert_eq!(secs(9, 0.0), 256.0);
    assert_eq!(secs(10, 0.0), 300.0);
    assert_eq!(secs(u32::MAX, 0.0), 300.0);
    assert_eq!(secs(3, 0.999_999), 3.000_001);
    assert!((3.0..=4.0).contains(&secs(3, 0.5)));
    let fast = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(40),
    };
    assert_eq!(fast.delay(5, 0.0), Duration::from_millis(40));
}

fn stored() -> StoredEvent {
    let details = json!({"misses": 3, "action": "reboot"});
    StoredEvent {
        id: 7,
        host: "compute-0".into(),
        seq: 42,
        ts: "2026-01-02T03:04:05.678Z".into(),
        instance: "u1".into(),
        name: "vm1".into(),
        event: "heartbeat_lost".into(),
        details: details.as_object().cloned().unwrap_or_else(Map::new),
    }
}

#[test]
fn the_body_has_the_event_fields_in_order_and_the_key_is_host_and_seq() {
    let text = String::from_utf8(body(&stored())).unwrap();
    assert_eq!(
        text,
        r#"{"id":7,"host":"compute-0","seq":42,"ts":"2026-01-02T03:04:05.678Z","instance":"u1","name":"vm1","event":"heartbeat_lost","details":{"action":"reboot","misses":3}}"#
    );
    assert_eq!(idempotency_key(&stored()), "compute-0:42");
}

#[test]
fn signatures_are_hmac_sha256_in_hex() {
    // RFC 4231 test case 2.
    assert_eq!(
        signature("Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn only_http_and_https_urls_with_a_host_and_visible_secrets_of_16_to_256_are_taken() {
    assert!(check_url("http://10.0.0.1:8080/hooks/tether").is_ok());
    assert!(check_url("http://vim.example/").is_ok());
    assert!(check_url("https://vim.example/").is_ok());
    assert!(check_url("https:///path").is_err());
    for bad in [
        "ftp://x/",
        "http://",
        "http:///path",
        "vim.example",
        "",
        "http://a b/",
    ] {
        assert!(check_url(bad).is_err(), "{bad}");
    }
    assert!(check_url(&format!("http://x/{}", "a".repeat(2048))).is_err());
    assert!(check_secret("0123456789abcdef").is_ok());
    assert!(check_secret(&"s".repeat(256)).is_ok());
    for bad in [
        "short".to_owned(),
        "s".repeat(257),
        "with a space 0123456".into(),
        "é".repeat(16),
    ] {
        assert!(check_secret(&bad).is_err(), "{bad}");
    }
}
