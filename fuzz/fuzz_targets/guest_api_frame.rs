//! The application IPC frame decoder on arbitrary bytes, cut into reads at points the input
//! chooses: it never panics, holds less than one frame between reads, cutting never changes
//! what it yields, and a yielded frame is stable through encode and decode (after the one
//! clean-up of text fields that were not valid UTF-8).
#![no_main]

use guest_heartbeat_api::wire::{to_bytes, Decoder, Frame, MAX_PENDING};
use libfuzzer_sys::fuzz_target;

fn round_trip(frame: &Frame) -> Frame {
    let mut out = Vec::new();
    Decoder::new().feed(&to_bytes(frame), |r| out.push(r));
    match out.as_slice() {
        [Ok(again)] => again.clone(),
        other => panic!("{frame:?} encoded to {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut_seed, stream)) = data.split_first() else {
        return;
    };
    let mut whole = Vec::new();
    Decoder::new().feed(stream, |r| whole.extend(r.ok()));

    let step = usize::from(cut_seed).max(1);
    let mut decoder = Decoder::new();
    let mut pieces = Vec::new();
    for chunk in stream.chunks(step) {
        decoder.feed(chunk, |r| pieces.extend(r.ok()));
        assert!(decoder.pending() <= MAX_PENDING);
    }
    assert_eq!(whole, pieces);
    for frame in whole {
        let once = round_trip(&frame);
        assert_eq!(round_trip(&once), once);
    }
});
