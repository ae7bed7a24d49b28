//! Decoding: one JSON object (a frame without its newlines) → typed [`Message`].
//!
//! Parsing is strict where the reference host is strict: every key the receiver needs must be
//! present with its JSON type (integers as JSON numbers, strings as JSON strings), the version
//! must be at least 3, and enumerated strings must be known values. Unknown extra keys are
//! ignored so that a higher protocol version can add fields. Every refusal is a
//! [`DecodeError`] that names what was wrong.

use serde_json::{Map, Value};

use crate::message::{
    ActionNotify, ActionResponse, ChallengeResponse, Exit, Health, Init, Message, MsgType, Nack,
};
use crate::{MAX_INT, MAX_MSG_SIZE, MAX_VALUE_LEN, VERSION};

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame is longer than [`MAX_MSG_SIZE`]; it was discarded up to the next newline.
    #[error("Message longer than {MAX_MSG_SIZE} bytes")]
    Oversized,
    /// The frame is not a JSON object.
    #[error("Message is not a JSON object")]
    NotAnObject,
    /// A key is missing, has the wrong JSON type, or holds a value out of range.
    #[error("Key {0} is missing or invalid")]
    BadField(&'static str),
    /// The version is below 3.
    #[error("Protocol version {0} is below {VERSION}")]
    BadVersion(i64),
    /// The `msg_type` is not one of the eight known types.
    #[error("Unsupported message type {0:?}")]
    UnsupportedType(String),
}

impl DecodeError {
    /// The `log_msg` of the `nack` the reference host answers this error with.
    pub fn nack_text(&self) -> String {
        match self {
            DecodeError::Oversized => format!("message longer than {MAX_MSG_SIZE} bytes"),
            DecodeError::NotAnObject => "failed to parse message".to_owned(),
            DecodeError::BadField(key) => format!("failed to parse {key}"),
            DecodeError::BadVersion(v) => format!("Bad version: {v}, expect version: {VERSION}"),
            DecodeError::UnsupportedType(t) => {
                format!(
                    "unsupported message type: {}",
                    crate::encode::truncate(t, MAX_VALUE_LEN)
                )
            }
        }
    }
}

/// Decodes one JSON object (no surrounding newlines needed; whitespace is allowed).
pub fn decode_message(frame: &[u8]) -> Result<Message, DecodeError> {
    if frame.len() > MAX_MSG_SIZE {
        return Err(DecodeError::Oversized);
    }
    let map: Map<String, Value> =
        serde_json::from_slice(frame).map_err(|_| DecodeError::NotAnObject)?;
    let obj = Obj(&map);
    let version = obj.int("version")?;
    if version < i64::from(VERSION) {
        return Err(DecodeError::BadVersion(version));
    }
    obj.int("revision")?;
    obj.int("sequence")?;
    let msg_type = obj.str("msg_type")?;
    let msg_type: MsgType = msg_type
        .parse()
        .map_err(|_| DecodeError::UnsupportedType(msg_type.to_owned()))?;
    decode_body(msg_type, &obj)
}

fn decode_body(msg_type: MsgType, obj: &Obj<'_>) -> Result<Message, DecodeError> {
    Ok(match msg_type {
        MsgType::Init => Message::Init(Init {
            invocation_id: obj.u32("invocation_id")?,
            name: obj.str("name")?.to_owned(),
            heartbeat_interval_ms: obj.u32("heartbeat_interval_ms")?,
            vote_secs: obj.u32("vote_secs")?,
            shutdown_notice_secs: obj.u32("shutdown_notice_secs")?,
            suspend_notice_secs: obj.u32("suspend_notice_secs")?,
            resume_notice_secs: obj.u32("resume_notice_secs")?,
            restart_secs: obj.u32("restart_secs")?,
            corrective_action: obj.parsed("corrective_action")?,
        }),
        MsgType::InitAck => Message::InitAck {
            invocation_id: obj.u32("invocation_id")?,
        },
        MsgType::Challenge => Message::Challenge {
            heartbeat_challenge: obj.u32("heartbeat_challenge")?,
        },
        MsgType::ChallengeResponse => Message::ChallengeResponse(ChallengeResponse {
            heartbeat_response: obj.u32("heartbeat_response")?,
            heartbeat_health: Health::from_wire_lenient(obj.str("heartbeat_health")?).0,
            corrective_action: obj.parsed("corrective_action")?,
            log_msg: obj.str("log_msg")?.to_owned(),
        }),
        MsgType::ActionNotify => Message::ActionNotify(ActionNotify {
            invocation_id: obj.u32("invocation_id")?,
            event_type: obj.parsed("event_type")?,
            notification_type: obj.parsed("notification_type")?,
            timeout_ms: obj.u32("timeout_ms")?,
        }),
        MsgType::ActionResponse => Message::ActionResponse(ActionResponse {
            invocation_id: obj.u32("invocation_id")?,
            event_type: obj.parsed("event_type")?,
            notification_type: obj.parsed("notification_type")?,
            vote_result: obj.parsed("vote_result")?,
            log_msg: obj.str("log_msg")?.to_owned(),
        }),
        MsgType::Exit => Message::Exit(Exit {
            log_msg: obj.str("log_msg")?.to_owned(),
        }),
        MsgType::Nack => Message::Nack(Nack {
            invocation_id: obj.u32("invocation_id")?,
            log_msg: obj.str("log_msg")?.to_owned(),
        }),
    })
}

/// Typed look-ups in a decoded JSON object; each failure names its key.
struct Obj<'a>(&'a Map<String, Value>);

impl Obj<'_> {
    fn int(&self, key: &'static str) -> Result<i64, DecodeError> {
        self.0
            .get(key)
            .and_then(Value::as_i64)
            .ok_or(DecodeError::BadField(key))
    }

    fn u32(&self, key: &'static str) -> Result<u32, DecodeError> {
        let value = self.int(key)?;
        u32::try_from(value)
            .ok()
            .filter(|v| *v <= MAX_INT)
            .ok_or(DecodeError::BadField(key))
    }

    fn str(&self, key: &'static str) -> Result<&str, DecodeError> {
        self.0
            .get(key)
            .and_then(Value::as_str)
            .ok_or(DecodeError::BadField(key))
    }

    fn parsed<T: std::str::FromStr>(&self, key: &'static str) -> Result<T, DecodeError> {
        self.str(key)?
            .parse()
            .map_err(|_| DecodeError::BadField(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{CorrectiveAction, EventType, NotificationType, VoteResult};

    fn header(msg_type: &str) -> String {
        format!(r#""version":3,"revision":1,"msg_type":"{msg_type}","sequence":5"#)
    }

    #[test]
    fn decodes_a_challenge_response() {
        let text = format!(
            r#"{{{},"heartbeat_response":42,"heartbeat_health":"unhealthy","corrective_action":"stop","log_msg":"disk full"}}"#,
            header("challenge_response")
        );
        assert_eq!(
            decode_message(text.as_bytes()),
            Ok(Message::ChallengeResponse(ChallengeResponse {
                heartbeat_response: 42,
                heartbeat_health: Health::Unhealthy,
                corrective_action: CorrectiveAction::Stop,
                log_msg: "disk full".into(),
            }))
        );
    }

    #[test]
    fn anything_but_healthy_is_unhealthy() {
        let text = format!(
            r#"{{{},"heartbeat_response":1,"heartbeat_health":"fine","corrective_action":"log","log_msg":""}}"#,
            header("challenge_response")
        );
        let Ok(Message::ChallengeResponse(r)) = decode_message(text.as_bytes()) else {
            panic!("not decoded");
        };
        assert_eq!(r.heartbeat_health, Health::Unhealthy);
    }

    #[test]
    fn decodes_an_action_response_with_unordered_and_extra_keys() {
        let text = r#"{"log_msg":"no","vote_result":"reject","future":[1,2],"notification_type":"revocable","event_type":"stop","invocation_id":9,"sequence":1,"msg_type":"action_response","revision":1,"version":4}"#;
        assert_eq!(
            decode_message(text.as_bytes()),
            Ok(Message::ActionResponse(ActionResponse {
                invocation_id: 9,
                event_type: EventType::Stop,
                notification_type: NotificationType::Revocable,
                vote_result: VoteResult::Reject,
                log_msg: "no".into(),
            }))
        );
    }

    #[test]
    fn errors_name_what_was_wrong_and_give_the_reference_nack() {
        let cases: &[(&str, DecodeError, &str)] = &[
            (
                r#"{"version":2,"revision":1,"msg_type":"exit","sequence":1,"log_msg":""}"#,
                DecodeError::BadVersion(2),
                "Bad version: 2, expect version: 3",
            ),
            (
                r#"{"version":"3","revision":1,"msg_type":"exit","sequence":1,"log_msg":""}"#,
                DecodeError::BadField("version"),
                "failed to parse version",
            ),
            (
                r#"{"version":3,"revision":1,"msg_type":"hello","sequence":1}"#,
                DecodeError::UnsupportedType("hello".into()),
                "unsupported message type: hello",
            ),
            (
                r#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":1,"heartbeat_response":"7","heartbeat_health":"healthy","corrective_action":"log","log_msg":""}"#,
                DecodeError::BadField("heartbeat_response"),
                "failed to parse heartbeat_response",
            ),
            (
                r#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":1,"heartbeat_response":7,"heartbeat_health":"healthy","log_msg":""}"#,
                DecodeError::BadField("corrective_action"),
                "failed to parse corrective_action",
            ),
            (
                r#"{"version":3,"revision":1,"msg_type":"init_ack","sequence":1,"invocation_id":-1}"#,
                DecodeError::BadField("invocation_id"),
                "failed to parse invocation_id",
            ),
            (
                "[1,2,3]",
                DecodeError::NotAnObject,
                "failed to parse message",
            ),
            (
                "{\"version\":3",
                DecodeError::NotAnObject,
                "failed to parse message",
            ),
        ];
        for (text, error, nack) in cases {
            assert_eq!(
                decode_message(text.as_bytes()).as_ref(),
                Err(error),
                "{text}"
            );
            assert_eq!(error.nack_text(), *nack);
        }
    }
}
