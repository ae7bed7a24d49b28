//! The stream decoder: bytes as they arrive from a channel → decoded frames.
//!
//! The channel is a byte stream: one read may hold several messages, and one message may be
//! split over several reads. [`Decoder`] keeps the bytes of at most one unfinished frame (never
//! more than [`MAX_MSG_SIZE`]), splits on `\n`, skips empty segments, and decodes each complete
//! one. A segment that grows past the limit is reported once as [`DecodeError::Oversized`] and
//! its bytes are dropped up to the next newline, so a guest that never sends a newline costs a
//! bounded buffer and nothing else.

use crate::decode::{decode_message, DecodeError};
use crate::message::Message;
use crate::MAX_MSG_SIZE;

/// Reassembles newline-framed messages from a byte stream. One per connection.
#[derive(Debug, Default)]
pub struct Decoder {
    partial: Vec<u8>,
    discarding: bool,
}

impl Decoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of an unfinished frame held now (at most [`MAX_MSG_SIZE`]).
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Forgets any unfinished frame, as after a reconnect.
    pub fn reset(&mut self) {
        self.partial.clear();
        self.discarding = false;
    }

    /// Feeds the bytes of one read; calls `on_frame` for every frame they complete, in order.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut on_frame: impl FnMut(Result<Message, DecodeError>),
    ) {
        while let Some(pos) = input.iter().position(|b| *b == b'\n') {
            let (segment, rest) = (&input[..pos], &input[pos + 1..]);
            input = rest;
            if self.discarding {
                self.discarding = false;
                continue;
            }
            if self.partial.is_empty() {
                decode_segment(segment, &mut on_frame);
            } else if self.partial.len() + segment.len() > MAX_MSG_SIZE {
                self.partial.clear();
                on_frame(Err(DecodeError::Oversized));
            } else {
                self.partial.extend_from_slice(segment);
                let whole = std::mem::take(&mut self.partial);
                decode_segment(&whole, &mut on_frame);
                self.partial = whole;
                self.partial.clear();
            }
        }
        self.keep_unfinished(input, &mut on_frame);
    }

    fn keep_unfinished(
        &mut self,
        tail: &[u8],
        on_frame: &mut impl FnMut(Result<Message, DecodeError>),
    ) {
        if self.discarding || tail.is_empty() {
            return;
        }
        if self.partial.len() + tail.len() > MAX_MSG_SIZE {
            self.partial.clear();
            self.discarding = true;
            on_frame(Err(DecodeError::Oversized));
        } else {
            self.partial.extend_from_slice(tail);
        }
    }
}

fn decode_segment(segment: &[u8], on_frame: &mut impl FnMut(Result<Message, DecodeError>)) {
    if segment.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    on_frame(decode_message(segment));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::encode;
    use crate::message::Exit;

    fn collect(decoder: &mut Decoder, input: &[u8]) -> Vec<Result<Message, DecodeError>> {
        let mut out = Vec::new();
        decoder.feed(input, |f| out.push(f));
        out
    }

    fn exit(text: &str) -> Message {
        Message::Exit(Exit {
            log_msg: text.into(),
        })
    }

    #[test]
    fn several_messages_in_one_read() {
        let mut bytes = encode(1, &exit("a"));
        bytes.extend(encode(2, &exit("b")));
        let frames = collect(&mut Decoder::new(), &bytes);
        assert_eq!(frames, vec![Ok(exit("a")), Ok(exit("b"))]);
    }

    #[test]
    fn a_message_split_byte_by_byte() {
        let bytes = encode(1, &exit("split"));
        let mut decoder = Decoder::new();
        let mut frames = Vec::new();
        for b in &bytes {
            frames.extend(collect(&mut decoder, std::slice::from_ref(b)));
        }
        assert_eq!(frames, vec![Ok(exit("split"))]);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn an_endless_line_is_reported_once_and_bounded() {
        let mut decoder = Decoder::new();
        let junk = vec![b'x'; 700];
        let mut frames = Vec::new();
        for _ in 0..10 {
            frames.extend(collect(&mut decoder, &junk));
            assert!(decoder.buffered() <= MAX_MSG_SIZE);
        }
        assert_eq!(frames, vec![Err(DecodeError::Oversized)]);
        // The next newline ends the junk; a good message after it decodes.
        let frames = collect(&mut decoder, &encode(3, &exit("after")));
        assert_eq!(frames, vec![Ok(exit("after"))]);
    }

    #[test]
    fn garbage_between_messages_yields_one_error_each() {
        let mut bytes = b"\nnot json\n".to_vec();
        bytes.extend(encode(1, &exit("ok")));
        let frames = collect(&mut Decoder::new(), &bytes);
        assert_eq!(frames, vec![Err(DecodeError::NotAnObject), Ok(exit("ok"))]);
    }
}
