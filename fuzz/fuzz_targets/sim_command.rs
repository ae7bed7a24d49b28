//! Parses arbitrary text as a simulator command: it must never panic, and an accepted
//! command names a VM unless it is `list`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_sim::command::{parse, Command};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(command) = parse(text) {
        assert_eq!(command.vm().is_none(), command == Command::List);
    }
});
