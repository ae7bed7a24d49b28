//! Parses arbitrary text as a `guest_heartbeat.conf`: it must never panic, and whatever is
//! accepted must satisfy the rules the parser enforces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_guest::GuestConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = GuestConfig::parse(text) {
        assert!(config.heartbeat_interval_ms >= 400);
    }
});
