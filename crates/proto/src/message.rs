//! Typed heartbeat v3 messages and the enumerated string values they carry.

use std::fmt;
use std::str::FromStr;

/// One heartbeat message, without its header (`version`, `revision`, `sequence`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Guest → host: register, asking for heartbeats at an interval.
    Init(Init),
    /// Host → guest: the init with this id is accepted.
    InitAck {
        /// Copied from the `init` being acknowledged.
        invocation_id: u32,
    },
    /// Host → guest: answer with this value.
    Challenge {
        /// A fresh random value in `0..=i32::MAX`.
        heartbeat_challenge: u32,
    },
    /// Guest → host: the answer to the latest challenge, with the guest's health.
    ChallengeResponse(ChallengeResponse),
    /// Host → guest: a vote request (revocable) or a notification (irrevocable).
    ActionNotify(ActionNotify),
    /// Guest → host: the answer to an `action_notify`.
    ActionResponse(ActionResponse),
    /// Guest → host: the guest daemon is shutting down; not a failure.
    Exit(Exit),
    /// Host → guest: the host could not process a guest message.
    Nack(Nack),
}

/// Body of an `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    /// Fresh random id for every init sent; echoed in `init_ack`.
    pub invocation_id: u32,
    /// Instance name, for logs (at most [`crate::MAX_NAME_LEN`] bytes on the wire).
    pub name: String,
    /// Challenge period the guest asks for.
    pub heartbeat_interval_ms: u32,
    /// Vote time in seconds (the guest's configured value plus one).
    pub vote_secs: u32,
    /// Shutdown notice time in seconds (plus one).
    pub shutdown_notice_secs: u32,
    /// Suspend notice time in seconds (plus one).
    pub suspend_notice_secs: u32,
    /// Resume notice time in seconds (plus one).
    pub resume_notice_secs: u32,
    /// How long to wait for the guest to come back after a reboot, in seconds (plus one).
    pub restart_secs: u32,
    /// What to do when the heartbeat is lost.
    pub corrective_action: CorrectiveAction,
}

/// Body of a `challenge_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeResponse {
    /// Must equal the latest challenge's `heartbeat_challenge`.
    pub heartbeat_response: u32,
    /// The guest's health.
    pub heartbeat_health: Health,
    /// The action the guest asks for (`none` suppresses re-reporting).
    pub corrective_action: CorrectiveAction,
    /// Reason text, may be empty.
    pub log_msg: String,
}

/// Body of an `action_notify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionNotify {
    /// The invocation id of the guest's last `init`.
    pub invocation_id: u32,
    /// What is about to happen (or has happened).
    pub event_type: EventType,
    /// Vote (`revocable`) or notification (`irrevocable`).
    pub notification_type: NotificationType,
    /// How long the host waits for the answer.
    pub timeout_ms: u32,
}

/// Body of an `action_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionResponse {
    /// Must equal the host's stored invocation id.
    pub invocation_id: u32,
    /// Echoed from the notify.
    pub event_type: EventType,
    /// Echoed from the notify.
    pub notification_type: NotificationType,
    /// The guest's answer.
    pub vote_result: VoteResult,
    /// Reject reason or error text, may be empty.
    pub log_msg: String,
}

/// Body of an `exit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Reason; the reference guest sends `Exiting...`.
    pub log_msg: String,
}

/// Body of a `nack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The host's stored invocation id (0 before any init).
    pub invocation_id: u32,
    /// What was wrong, e.g. `failed to parse heartbeat_health`.
    pub log_msg: String,
}

impl Message {
    /// The `msg_type` this message is sent with.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Message::Init(_) => MsgType::Init,
            Message::InitAck { .. } => MsgType::InitAck,
            Message::Challenge { .. } => MsgType::Challenge,
            Message::ChallengeResponse(_) => MsgType::ChallengeResponse,
            Message::ActionNotify(_) => MsgType::ActionNotify,
            Message::ActionResponse(_) => MsgType::ActionResponse,
            Message::Exit(_) => MsgType::Exit,
            Message::Nack(_) => MsgType::Nack,
        }
    }
}

/// A string that is not one of an enumeration's wire values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unknown value {value:?}")]
pub struct ParseEnumError {
    /// The refused string.
    pub value: String,
}

/// Declares a wire enumeration with its exact strings, `as_str`, `Display` and `FromStr`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string sent on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError { value: s.to_owned() }),
                }
            }
        }
    };
}

wire_enum! {
    /// The `msg_type` of a message.
    MsgType {
        /// `init`
        Init = "init",
        /// `init_ack`
        InitAck = "init_ack",
        /// `challenge`
        Challenge = "challenge",
        /// `challenge_response`
        ChallengeResponse = "challenge_response",
        /// `action_notify`
        ActionNotify = "action_notify",
        /// `action_response`
        ActionResponse = "action_response",
        /// `exit`
        Exit = "exit",
        /// `nack`
        Nack = "nack",
    }
}

wire_enum! {
    /// A guest's health in a `challenge_response`.
    Health {
        /// `healthy`
        Healthy = "healthy",
        /// `unhealthy`
        Unhealthy = "unhealthy",
    }
}

wire_enum! {
    /// The corrective action a guest asks for. Ordered by severity: `stop` wins a merge.
    CorrectiveAction {
        /// `unknown`
        Unknown = "unknown",
        /// `none`: do nothing (used to suppress a repeated report).
        None = "none",
        /// `log`: only record the failure.
        Log = "log",
        /// `reboot`: reset the VM.
        Reboot = "reboot",
        /// `stop`: stop the VM.
        Stop = "stop",
    }
}

wire_enum! {
    /// A lifecycle event in `action_notify` / `action_response`.
    EventType {
        /// `unknown`
        Unknown = "unknown",
        /// `stop`
        Stop = "stop",
        /// `reboot`
        Reboot = "reboot",
        /// `suspend`
        Suspend = "suspend",
        /// `pause`
        Pause = "pause",
        /// `unpause`
        Unpause = "unpause",
        /// `resume`
        Resume = "resume",
        /// `resize_begin`
        ResizeBegin = "resize_begin",
        /// `resize_end`
        ResizeEnd = "resize_end",
        /// `live_migrate_begin`
        LiveMigrateBegin = "live_migrate_begin",
        /// `live_migrate_end`
        LiveMigrateEnd = "live_migrate_end",
        /// `cold_migrate_begin`
        ColdMigrateBegin = "cold_migrate_begin",
        /// `cold_migrate_end`
        ColdMigrateEnd = "cold_migrate_end",
    }
}

wire_enum! {
    /// Whether an `action_notify` is a vote or a notification.
    NotificationType {
        /// `unknown`
        Unknown = "unknown",
        /// `revocable`: a vote; the guest may reject.
        Revocable = "revocable",
        /// `irrevocable`: a notification; the guest prepares and completes.
        Irrevocable = "irrevocable",
    }
}

wire_enum! {
    /// The guest's answer in an `action_response`.
    VoteResult {
        /// `unknown`
        Unknown = "unknown",
        /// `accept`
        Accept = "accept",
        /// `reject`
        Reject = "reject",
        /// `complete`
        Complete = "complete",
        /// `timeout`
        Timeout = "timeout",
        /// `error`
        Error = "error",
    }
}

impl Health {
    /// Reads a health string the way the reference host does: anything but `healthy` is
    /// unhealthy. The flag says whether the string was a valid value.
    pub fn from_wire_lenient(s: &str) -> (Health, bool) {
        match s.parse() {
            Ok(h) => (h, true),
            Err(_) => (Health::Unhealthy, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_strings_round_trip() {
        for e in EventType::ALL {
            assert_eq!(e.as_str().parse::<EventType>(), Ok(*e));
        }
        for a in CorrectiveAction::ALL {
            assert_eq!(a.as_str().parse::<CorrectiveAction>(), Ok(*a));
        }
        for v in VoteResult::ALL {
            assert_eq!(v.as_str().parse::<VoteResult>(), Ok(*v));
        }
        assert!("Healthy".parse::<Health>().is_err());
    }

    #[test]
    fn corrective_actions_order_by_severity() {
        assert!(CorrectiveAction::Stop > CorrectiveAction::Reboot);
        assert!(CorrectiveAction::Reboot > CorrectiveAction::Log);
        assert!(CorrectiveAction::Log > CorrectiveAction::None);
    }

    #[test]
    fn msg_type_names_match_the_reference() {
        let names: Vec<_> = MsgType::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(
            names,
            [
                "init",
                "init_ack",
                "challenge",
                "challenge_response",
                "action_notify",
                "action_response",
                "exit",
                "nack"
            ]
        );
        for name in names {
            assert_eq!(name.parse::<MsgType>().map(MsgType::as_str), Ok(name));
        }
    }
}
