//! Golden bytes for every message type, resynchronisation, and round-trip properties.

use proptest::prelude::*;

use super::*;

fn header(msg_type: u16, sequence: u32) -> Vec<u8> {
    let mut h = b"FDFDA5A5".to_vec();
    h.extend_from_slice(&[2, 1]);
    h.extend_from_slice(&msg_type.to_le_bytes());
    h.extend_from_slice(&sequence.to_le_bytes());
    h.extend_from_slice(&228u32.to_le_bytes());
    h
}

/// The expected frame: header, then `(offset, bytes)` patches on a zeroed body.
fn golden(msg_type: u16, sequence: u32, patches: &[(usize, &[u8])]) -> Vec<u8> {
    let mut f = header(msg_type, sequence);
    f.resize(228, 0);
    for (at, bytes) in patches {
        f[20 + at..20 + at + bytes.len()].copy_from_slice(bytes);
    }
    f
}

fn le(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn all_frames() -> Vec<(Frame, Vec<u8>)> {
    let f = |sequence, body| Frame { sequence, body };
    vec![
        (
            f(
                1,
                Body::Init(Init {
                    name: "sample-app".into(),
                    heartbeat_interval_ms: 1000,
                    vote_secs: 8,
                    shutdown_notice_secs: 5,
                    suspend_notice_secs: 6,
                    resume_notice_secs: 7,
                    corrective_action: 2,
                }),
            ),
            golden(
                0,
                1,
                &[(0, b"sample-app"), (40, &le(&[1000, 8, 5, 6, 7, 2]))],
            ),
        ),
        (
            f(2, Body::InitAck { accepted: 1 }),
            golden(1, 2, &[(0, &le(&[1]))]),
        ),
        (
            f(
                3,
                Body::Final {
                    log_msg: "bye".into(),
                },
            ),
            golden(2, 3, &[(0, b"bye")]),
        ),
        (
            f(
                0x0102_0304,
                Body::Challenge {
                    heartbeat_challenge: 0xdead_beef,
                },
            ),
            golden(3, 0x0102_0304, &[(0, &le(&[0xdead_beef]))]),
        ),
        (
            f(
                5,
                Body::ChallengeResponse(ChallengeResponse {
                    heartbeat_response: 77,
                    health: 0,
                    corrective_action: 3,
                    log_msg: "disk full".into(),
                }),
            ),
            golden(4, 5, &[(0, &le(&[77, 0, 3])), (12, b"disk full")]),
        ),
        (
            f(
                6,
                Body::ActionNotify(ActionNotify {
                    invocation_id: 9,
                    event_type: 12,
                    notification_type: 2,
                }),
            ),
            golden(5, 6, &[(0, &le(&[9, 12, 2]))]),
        ),
        (
            f(
                7,
                Body::ActionResponse(ActionResponse {
                    invocation_id: 9,
                    event_type: 1,
                    notification_type: 1,
                    vote_result: 2,
                    log_msg: "no".into(),
                }),
            ),
            golden(6, 7, &[(0, &le(&[9, 1, 1, 2])), (16, b"no")]),
        ),
    ]
}

#[cfg(target_endian = "little")]
#[test]
fn every_message_type_has_its_pinned_layout() {
    for (frame, bytes) in all_frames() {
        assert_eq!(to_bytes(&frame), bytes, "{frame:?}");
        let mut got = Vec::new();
        Decoder::new().feed(&bytes, |r| got.push(r));
        assert_eq!(got, vec![Ok(frame)]);
    }
}

#[test]
fn strings_are_cut_to_leave_their_nul() {
    let long = "x".repeat(100);
    let frame = Frame {
        sequence: 0,
        body: Body::Init(Init {
            name: long.clone(),
            heartbeat_interval_ms: 0,
            vote_secs: 0,
            shutdown_notice_secs: 0,
            suspend_notice_secs: 0,
            resume_notice_secs: 0,
            corrective_action: 0,
        }),
    };
    let bytes = to_bytes(&frame);
    assert_eq!(&bytes[20..59], "x".repeat(39).as_bytes());
    assert_eq!(bytes[59], 0);
    assert_eq!(cut("ab\0cd", 10), "ab");
    assert_eq!(cut("ééé", 4), "é");
}

#[test]
fn garbage_is_skipped_and_the_stream_resynchronises() {
    let (frame, bytes) = all_frames().remove(4);
    let mut stream = b"junkFDFD".to_vec();
    stream.extend_from_slice(&bytes);
    stream.extend_from_slice(b"FDFDA5");
    stream.extend_from_slice(&bytes);
    let mut got = Vec::new();
    let mut d = Decoder::new();
    // One byte at a time: split frames and split magics.
    for b in &stream {
        d.feed(std::slice::from_ref(b), |r| got.push(r));
        assert!(d.pending() <= MAX_PENDING);
    }
    let frames: Vec<_> = got.iter().filter_map(|r| r.clone().ok()).collect();
    assert_eq!(frames, vec![frame.clone(), frame]);
    let skipped: usize = got
        .iter()
        .map(|r| match r {
            Err(FrameError::Garbage(n)) => *n,
            _ => 0,
        })
        .sum();
    assert_eq!(skipped, 8 + 6);
}

#[test]
fn bad_version_size_and_type_are_reported_and_skipped() {
    let (frame, good) = all_frames().remove(1);
    let mut v1 = good.clone();
    v1[8] = 1;
    let mut size = good.clone();
    size[16] = 200;
    let mut kind = good.clone();
    kind[10] = 9;
    let mut stream = v1;
    stream.extend(size);
    stream.extend(kind);
    stream.extend(good);
    let mut got = Vec::new();
    Decoder::new().feed(&stream, |r| got.push(r));
    assert_eq!(got[0], Err(FrameError::Version(1)));
    assert!(got.contains(&Err(FrameError::Size(200))));
    assert!(got.contains(&Err(FrameError::MsgType(9))));
    assert_eq!(got.last(), Some(&Ok(frame)));
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9 é.<>-]{{0,{max}}}"))
        .expect("valid regex")
        .prop_map(move |s| cut(&s, max + 1).to_owned())
}

fn body() -> impl Strategy<Value = Body> {
    let n = any::<u32>;
    prop_oneof![
        (text(39), n(), n(), n(), n(), n(), n()).prop_map(|(name, a, b, c, d, e, f)| Body::Init(
            Init {
                name,
                heartbeat_interval_ms: a,
                vote_secs: b,
                shutdown_notice_secs: c,
                suspend_notice_secs: d,
                resume_notice_secs: e,
                corrective_action: f,
            }
        )),
        n().prop_map(|accepted| Body::InitAck { accepted }),
        text(191).prop_map(|log_msg| Body::Final { log_msg }),
        n().prop_map(|heartbeat_challenge| Body::Challenge {
            heartbeat_challenge
        }),
        (n(), n(), n(), text(191)).prop_map(|(a, b, c, log_msg)| Body::ChallengeResponse(
            ChallengeResponse {
                heartbeat_response: a,
                health: b,
                corrective_action: c,
                log_msg,
            }
        )),
        (n(), n(), n()).prop_map(|(a, b, c)| Body::ActionNotify(ActionNotify {
            invocation_id: a,
            event_type: b,
            notification_type: c,
        })),
        (n(), n(), n(), n(), text(191)).prop_map(|(a, b, c, d, log_msg)| Body::ActionResponse(
            ActionResponse {
                invocation_id: a,
                event_type: b,
                notification_type: c,
                vote_result: d,
                log_msg,
            }
        )),
    ]
}

proptest! {
    #[test]
    fn frames_round_trip_through_any_chunking(
        bodies in proptest::collection::vec((any::<u32>(), body()), 1..6),
        chunk in 1usize..300,
        junk in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let frames: Vec<Frame> = bodies
            .into_iter()
            .map(|(sequence, body)| Frame { sequence, body })
            .collect();
        let mut stream = Vec::new();
        for f in &frames {
            // Junk without an 'F' cannot start a magic.
            stream.extend(junk.iter().map(|b| if *b == b'F' { 0 } else { *b }));
            encode(f, &mut stream);
        }
        let mut got = Vec::new();
        let mut d = Decoder::new();
        for piece in stream.chunks(chunk) {
            d.feed(piece, |r| if let Ok(f) = r { got.push(f) });
            prop_assert!(d.pending() <= MAX_PENDING);
        }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn any_bytes_decode_without_panic_and_bounded(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        chunk in 1usize..500,
    ) {
        let mut whole = Vec::new();
        Decoder::new().feed(&bytes, |r| whole.extend(r.ok()));
        let mut pieces = Vec::new();
        let mut d = Decoder::new();
        for piece in bytes.chunks(chunk) {
            d.feed(piece, |r| pieces.extend(r.ok()));
            prop_assert!(d.pending() <= MAX_PENDING);
        }
        prop_assert_eq!(whole, pieces);
    }
}
