//! Property tests of the codec: nothing panics on arbitrary bytes, every message survives an
//! encode/decode round trip, and the way a stream is cut into reads never changes what is
//! decoded.

use proptest::prelude::*;
use tether_proto::*;

fn arb_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect())
}

fn arb_u31() -> impl Strategy<Value = u32> {
    0..=MAX_INT
}

fn arb_enum<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(all)
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            arb_u31(),
            arb_text(80),
            arb_u31(),
            (arb_u31(), arb_u31(), arb_u31(), arb_u31(), arb_u31()),
            arb_enum(CorrectiveAction::ALL)
        )
            .prop_map(|(id, name, interval, (v, sd, su, re, rs), action)| {
                Message::Init(Init {
                    invocation_id: id,
                    name,
                    heartbeat_interval_ms: interval,
                    vote_secs: v,
                    shutdown_notice_secs: sd,
                    suspend_notice_secs: su,
                    resume_notice_secs: re,
                    restart_secs: rs,
                    corrective_action: action,
                })
            }),
        arb_u31().prop_map(|invocation_id| Message::InitAck { invocation_id }),
        arb_u31().prop_map(|heartbeat_challenge| Message::Challenge {
            heartbeat_challenge
        }),
        (
            arb_u31(),
            arb_enum(Health::ALL),
            arb_enum(CorrectiveAction::ALL),
            arb_text(300)
        )
            .prop_map(|(r, h, a, log)| {
                Message::ChallengeResponse(ChallengeResponse {
                    heartbeat_response: r,
                    heartbeat_health: h,
                    corrective_action: a,
                    log_msg: log,
                })
            }),
        (
            arb_u31(),
            arb_enum(EventType::ALL),
            arb_enum(NotificationType::ALL),
            arb_u31()
        )
            .prop_map(|(id, e, n, t)| {
                Message::ActionNotify(ActionNotify {
                    invocation_id: id,
                    event_type: e,
                    notification_type: n,
                    timeout_ms: t,
                })
            }),
        (
            arb_u31(),
            arb_enum(EventType::ALL),
            arb_enum(NotificationType::ALL),
            arb_enum(VoteResult::ALL),
            arb_text(300)
        )
            .prop_map(|(id, e, n, v, log)| {
                Message::ActionResponse(ActionResponse {
                    invocation_id: id,
                    event_type: e,
                    notification_type: n,
                    vote_result: v,
                    log_msg: log,
                })
            }),
        arb_text(300).prop_map(|log_msg| Message::Exit(Exit { log_msg })),
        (arb_u31(), arb_text(300)).prop_map(|(invocation_id, log_msg)| Message::Nack(Nack {
            invocation_id,
            log_msg
        })),
    ]
}

/// What the receiver sees of a sent string: cut to the limit, control characters as spaces.
fn as_sent(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn normalised(message: Message) -> Message {
    match message {
        Message::Init(mut m) => {
            m.name = as_sent(&m.name, MAX_NAME_LEN);
            Message::Init(m)
        }
        Message::ChallengeResponse(mut m) => {
            m.log_msg = as_sent(&m.log_msg, MAX_LOG_LEN);
            Message::ChallengeResponse(m)
        }
        Message::ActionResponse(mut m) => {
            m.log_msg = as_sent(&m.log_msg, MAX_LOG_LEN);
            Message::ActionResponse(m)
        }
        Message::Exit(mut m) => {
            m.log_msg = as_sent(&m.log_msg, MAX_LOG_LEN);
            Message::Exit(m)
        }
        Message::Nack(mut m) => {
            m.log_msg = as_sent(&m.log_msg, MAX_LOG_LEN);
            Message::Nack(m)
        }
        other => other,
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(chunks in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..2048), 0..8)) {
        let mut decoder = Decoder::new();
        for chunk in &chunks {
            decoder.feed(chunk, |_| {});
            prop_assert!(decoder.buffered() <= MAX_MSG_SIZE);
        }
        for chunk in &chunks {
            let _ = decode_message(chunk);
        }
    }

    #[test]
    fn every_message_round_trips(message in arb_message(), seq in any::<u32>()) {
        let bytes = encode(seq, &message);
        prop_assert!(bytes.len() <= MAX_MSG_SIZE);
        prop_assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 2);
        let mut frames = Vec::new();
        Decoder::new().feed(&bytes, |f| frames.push(f));
        prop_assert_eq!(frames, vec![Ok(normalised(message))]);
    }

    #[test]
    fn how_the_stream_is_cut_does_not_matter(
        messages in proptest::collection::vec(arb_message(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let stream: Vec<u8> = messages.iter().enumerate()
            .flat_map(|(i, m)| encode(i as u32, m)).collect();
        let mut whole = Vec::new();
        Decoder::new().feed(&stream, |f| whole.push(f));

        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut pieces = Vec::new();
        let mut decoder = Decoder::new();
        for pair in points.windows(2) {
            decoder.feed(&stream[pair[0]..pair[1]], |f| pieces.push(f));
        }
        prop_assert_eq!(&pieces, &whole);
        prop_assert_eq!(whole.len(), messages.len());
    }
}
