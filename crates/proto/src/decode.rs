//! Decoding: one JSON object (a frame without its newlines) → typed [`Message`].
//!
//! Parsing is strict where the reference host is strict: every key the receiver needs must be
//! present with its JSON type (integers as JSON numbers, strings as JSON strings), the version
//! must be at least 3, and enumerated strings must be known values. Unknown extra keys are
//! ignored so that a higher protocol version can add fields. Every refusal is a
//! [`DecodeError`] that names what was wrong.

use crate::fields::{Field, Fields, Key};
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
    let fields = Fields::parse(frame).ok_or(DecodeError::NotAnObject)?;
    decode_fields(&fields)
}

/// The message in a frame's known keys.
fn decode_fields(obj: &Fields<'_>) -> Result<Message, DecodeError> {
    let version = obj.int(Key::Version)?;
    if version < i64::from(VERSION) {
        return Err(DecodeError::BadVersion(version));
    }
    obj.int(Key::Revision)?;
    obj.int(Key::Sequence)?;
    let msg_type = obj.str(Key::MsgType)?;
    let msg_type: MsgType = msg_type
        .parse()
        .map_err(|_| DecodeError::UnsupportedType(msg_type.to_owned()))?;
    decode_body(msg_type, obj)
}

fn decode_body(msg_type: MsgType, obj: &Fields<'_>) -> Result<Message, DecodeError> {
    Ok(match msg_type {
        MsgType::Init => Message::Init(Init {
            invocation_id: obj.u32(Key::InvocationId)?,
            name: obj.str(Key::Name)?.to_owned(),
            heartbeat_interval_ms: obj.u32(Key::HeartbeatIntervalMs)?,
            vote_secs: obj.u32(Key::VoteSecs)?,
            shutdown_notice_secs: obj.u32(Key::ShutdownNoticeSecs)?,
            suspend_notice_secs: obj.u32(Key::SuspendNoticeSecs)?,
            resume_notice_secs: obj.u32(Key::ResumeNoticeSecs)?,
            restart_secs: obj.u32(Key::RestartSecs)?,
            corrective_action: obj.parsed(Key::CorrectiveAction)?,
        }),
        MsgType::InitAck => Message::InitAck {
            invocation_id: obj.u32(Key::InvocationId)?,
        },
        MsgType::Challenge => Message::Challenge {
            heartbeat_challenge: obj.u32(Key::HeartbeatChallenge)?,
        },
        MsgType::ChallengeResponse => Message::ChallengeResponse(ChallengeResponse {
            heartbeat_response: obj.u32(Key::HeartbeatResponse)?,
            heartbeat_health: Health::from_wire_lenient(obj.str(Key::HeartbeatHealth)?).0,
            corrective_action: obj.parsed(Key::CorrectiveAction)?,
            log_msg: obj.str(Key::LogMsg)?.to_owned(),
        }),
        MsgType::ActionNotify => Message::ActionNotify(ActionNotify {
            invocation_id: obj.u32(Key::InvocationId)?,
            event_type: obj.parsed(Key::EventType)?,
            notification_type: obj.parsed(Key::NotificationType)?,
            timeout_ms: obj.u32(Key::TimeoutMs)?,
        }),
        MsgType::ActionResponse => Message::ActionResponse(ActionResponse {
            invocation_id: obj.u32(Key::InvocationId)?,
            event_type: obj.parsed(Key::EventType)?,
            notification_type: obj.parsed(Key::NotificationType)?,
            vote_result: obj.parsed(Key::VoteResult)?,
            log_msg: obj.str(Key::LogMsg)?.to_owned(),
        }),
        MsgType::Exit => Message::Exit(Exit {
            log_msg: obj.str(Key::LogMsg)?.to_owned(),
        }),
        MsgType::Nack => Message::Nack(Nack {
            invocation_id: obj.u32(Key::InvocationId)?,
            log_msg: obj.str(Key::LogMsg)?.to_owned(),
        }),
    })
}

/// Typed look-ups in a frame's known keys; each failure names its key.
impl Fields<'_> {
    fn int(&self, key: Key) -> Result<i64, DecodeError> {
        match self.get(key) {
            Field::Int(value) => Ok(*value),
            _ => Err(DecodeError::BadField(key.name())),
        }
    }

    fn u32(&self, key: Key) -> Result<u32, DecodeError> {
        let value = self.int(key)?;
        u32::try_from(value)
            .ok()
            .filter(|v| *v <= MAX_INT)
            .ok_or(DecodeError::BadField(key.name()))
    }

    fn str(&self, key: Key) -> Result<&str, DecodeError> {
        match self.get(key) {
            Field::Str(text) => Ok(text),
            _ => Err(DecodeError::BadField(key.name())),
        }
    }

    fn parsed<T: std::str::FromStr>(&self, key: Key) -> Result<T, DecodeError> {
        self.str(key)?
            .parse()
            .map_err(|_| DecodeError::BadField(key.name()))
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
