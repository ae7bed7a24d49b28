//! Encoding: typed message → `"\n" + JSON + "\n"`.
//!
//! Keys come in the order the reference emits them (`version`, `revision`, `msg_type`,
//! `sequence`, then the body). Strings are cut to the protocol's limits on a character
//! boundary, control characters (newlines among them) become spaces, and quotes and
//! backslashes are escaped, so what we send is always one valid line of JSON that fits the
//! reference guest's fixed buffers.

use crate::message::{ActionNotify, ActionResponse, ChallengeResponse, Init, Message};
use crate::{MAX_LOG_LEN, MAX_NAME_LEN, REVISION, VERSION};

/// Encodes `message` with the given `sequence` number into a new buffer.
pub fn encode(sequence: u32, message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    encode_into(&mut out, sequence, message);
    out
}

/// Appends the encoding of `message` to `out` (reusing the caller's buffer).
pub fn encode_into(out: &mut Vec<u8>, sequence: u32, message: &Message) {
    let mut w = JsonWriter { out };
    w.raw("\n{\"version\":");
    w.int(u64::from(VERSION));
    w.raw(",\"revision\":");
    w.int(u64::from(REVISION));
    w.raw(",\"msg_type\":\"");
    w.raw(message.msg_type().as_str());
    w.raw("\",\"sequence\":");
    w.int(u64::from(sequence));
    match message {
        Message::Init(init) => body_init(&mut w, init),
        Message::InitAck { invocation_id } => w.int_field("invocation_id", *invocation_id),
        Message::Challenge {
            heartbeat_challenge,
        } => w.int_field("heartbeat_challenge", *heartbeat_challenge),
        Message::ChallengeResponse(r) => body_challenge_response(&mut w, r),
        Message::ActionNotify(n) => body_action_notify(&mut w, n),
        Message::ActionResponse(r) => body_action_response(&mut w, r),
        Message::Exit(e) => w.str_field("log_msg", &e.log_msg, MAX_LOG_LEN),
        Message::Nack(n) => {
            w.int_field("invocation_id", n.invocation_id);
            w.str_field("log_msg", &n.log_msg, MAX_LOG_LEN);
        }
    }
    w.raw("}\n");
}

fn body_init(w: &mut JsonWriter<'_>, m: &Init) {
    w.int_field("invocation_id", m.invocation_id);
    w.str_field("name", &m.name, MAX_NAME_LEN);
    w.int_field("heartbeat_interval_ms", m.heartbeat_interval_ms);
    w.int_field("vote_secs", m.vote_secs);
    w.int_field("shutdown_notice_secs", m.shutdown_notice_secs);
    w.int_field("suspend_notice_secs", m.suspend_notice_secs);
    w.int_field("resume_notice_secs", m.resume_notice_secs);
    w.int_field("restart_secs", m.restart_secs);
    w.enum_field("corrective_action", m.corrective_action.as_str());
}

fn body_challenge_response(w: &mut JsonWriter<'_>, m: &ChallengeResponse) {
    w.int_field("heartbeat_response", m.heartbeat_response);
    w.enum_field("heartbeat_health", m.heartbeat_health.as_str());
    w.enum_field("corrective_action", m.corrective_action.as_str());
    w.str_field("log_msg", &m.log_msg, MAX_LOG_LEN);
}

fn body_action_notify(w: &mut JsonWriter<'_>, m: &ActionNotify) {
    w.int_field("invocation_id", m.invocation_id);
    w.enum_field("event_type", m.event_type.as_str());
    w.enum_field("notification_type", m.notification_type.as_str());
    w.int_field("timeout_ms", m.timeout_ms);
}

fn body_action_response(w: &mut JsonWriter<'_>, m: &ActionResponse) {
    w.int_field("invocation_id", m.invocation_id);
    w.enum_field("event_type", m.event_type.as_str());
    w.enum_field("notification_type", m.notification_type.as_str());
    w.enum_field("vote_result", m.vote_result.as_str());
    w.str_field("log_msg", &m.log_msg, MAX_LOG_LEN);
}

/// Writes the few JSON shapes the protocol uses straight into a byte buffer.
struct JsonWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl JsonWriter<'_> {
    fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, value: u64) {
        let mut digits = [0u8; 20];
        let mut n = value;
        let mut i = digits.len();
        loop {
            i -= 1;
            // `n % 10` is below 10, so the cast cannot truncate.
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&digits[i..]);
    }

    fn key(&mut self, key: &str) {
        self.raw(",\"");
        self.raw(key);
        self.raw("\":");
    }

    fn int_field(&mut self, key: &str, value: u32) {
        self.key(key);
        self.int(u64::from(value.min(crate::MAX_INT)));
    }

    /// A value from a fixed enumeration: plain ASCII, never needs escaping.
    fn enum_field(&mut self, key: &str, value: &str) {
        self.key(key);
        self.raw("\"");
        self.raw(value);
        self.raw("\"");
    }

    fn str_field(&mut self, key: &str, value: &str, max_len: usize) {
        self.key(key);
        self.out.push(b'"');
        for c in truncate(value, max_len).chars() {
            match c {
                '"' => self.raw("\\\""),
                '\\' => self.raw("\\\\"),
                c if c.is_control() => self.out.push(b' '),
                c => {
                    let mut buf = [0u8; 4];
                    self.raw(c.encode_utf8(&mut buf));
                }
            }
        }
        self.out.push(b'"');
    }
}

/// The longest prefix of `s` of at most `max_len` bytes that ends on a character boundary.
pub(crate) fn truncate(s: &str, max_len: usize) -> &str {
    if s.len() <= max_len {
        return s;
    }
    let mut end = max_len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{CorrectiveAction, Exit};

    #[test]
    fn init_bytes_match_the_reference_layout() {
        let init = Message::Init(Init {
            invocation_id: 1804289383,
            name: "vm1".into(),
            heartbeat_interval_ms: 1000,
            vote_secs: 9,
            shutdown_notice_secs: 9,
            suspend_notice_secs: 9,
            resume_notice_secs: 14,
            restart_secs: 601,
            corrective_action: CorrectiveAction::Reboot,
        });
        let expected = "\n{\"version\":3,\"revision\":1,\"msg_type\":\"init\",\"sequence\":1,\
            \"invocation_id\":1804289383,\"name\":\"vm1\",\"heartbeat_interval_ms\":1000,\
            \"vote_secs\":9,\"shutdown_notice_secs\":9,\"suspend_notice_secs\":9,\
            \"resume_notice_secs\":14,\"restart_secs\":601,\"corrective_action\":\"reboot\"}\n";
        assert_eq!(String::from_utf8(encode(1, &init)).unwrap(), expected);
    }

    #[test]
    fn log_text_is_escaped_and_never_breaks_the_line() {
        let exit = Message::Exit(Exit {
            log_msg: "a \"quoted\"\nline\\ end\r".into(),
        });
        let bytes = encode(7, &exit);
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.matches('\n').count(), 2);
        let json: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(json["log_msg"], "a \"quoted\" line\\ end ");
    }

    #[test]
    fn long_strings_are_cut_on_a_char_boundary() {
        let exit = Message::Exit(Exit {
            log_msg: "é".repeat(200),
        });
        let text = String::from_utf8(encode(1, &exit)).unwrap();
        let json: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let log = json["log_msg"].as_str().unwrap();
        assert!(log.len() <= MAX_LOG_LEN);
        assert_eq!(log.len(), 222);
    }
}
