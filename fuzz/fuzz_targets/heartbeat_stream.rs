//! Feeds arbitrary bytes to the heartbeat stream decoder, cut into reads at points the input
//! chooses, and checks that the decoder stays bounded and that cutting never changes the result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::{Decoder, MAX_MSG_SIZE};

fuzz_target!(|data: &[u8]| {
    let Some((&cut_seed, stream)) = data.split_first() else {
        return;
    };
    let mut whole = Vec::new();
    Decoder::new().feed(stream, |frame| whole.push(frame));

    let step = usize::from(cut_seed).max(1);
    let mut decoder = Decoder::new();
    let mut pieces = Vec::new();
    for chunk in stream.chunks(step) {
        decoder.feed(chunk, |frame| pieces.push(frame));
        assert!(decoder.buffered() <= MAX_MSG_SIZE);
    }
    assert_eq!(whole, pieces);
});
