//! Decodes arbitrary bytes as one heartbeat message; whatever decodes must encode and decode
//! back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::{decode_message, encode, Decoder};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = decode_message(data) else {
        return;
    };
    let bytes = encode(1, &message);
    let mut again = Vec::new();
    Decoder::new().feed(&bytes, |frame| again.push(frame));
    // Strings may be cut or have control characters replaced on the way out, so compare the
    // re-decoded message with a second round trip rather than with the input.
    let [Ok(first)] = again.as_slice() else {
        panic!("re-encoded message did not decode: {again:?}");
    };
    assert_eq!(decode_message(&encode(2, first)).as_ref(), Ok(first));
});
