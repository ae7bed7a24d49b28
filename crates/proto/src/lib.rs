//! Wire types and framing of the guest heartbeat protocol.
//!
//! tether speaks the StarlingX / Titanium Cloud guest heartbeat protocol, version 3, on the
//! virtio-serial channel between `tether host` and `tether-guest`. Every message is one JSON
//! object with a newline written right before and right after it (`"\n{...}\n"`). This crate
//! holds the typed messages ([`Message`]), the encoder ([`encode`]) and the stream decoder
//! ([`Decoder`]) that both sides use. It does no I/O.
//!
//! Receivers accept version 3 and any higher version (unknown keys are ignored); they refuse
//! lower versions with [`DecodeError::BadVersion`], from which the host builds the `nack` that
//! the reference guestServer sends ([`DecodeError::nack_text`]).

mod decode;
mod encode;
mod fields;
mod message;
mod stream;

pub use decode::{decode_message, DecodeError};
pub use encode::{encode, encode_into};
pub use message::{
    ActionNotify, ActionResponse, ChallengeResponse, CorrectiveAction, EventType, Exit, Health,
    Init, Message, MsgType, Nack, NotificationType, ParseEnumError, VoteResult,
};

/// Largest integer either side sends or accepts for ids, challenges and times (json-c's `int`).
pub const MAX_INT: u32 = i32::MAX as u32;
pub use stream::Decoder;

/// The protocol version this crate writes; receivers accept it and any higher one.
pub const VERSION: u32 = 3;
/// The protocol revision this crate writes (receivers require an integer, never check it).
pub const REVISION: u32 = 1;
/// Largest message in bytes, the two newlines included.
pub const MAX_MSG_SIZE: usize = 1056;
/// Longest enumerated string value in bytes (`msg_type`, `event_type`, …).
pub const MAX_VALUE_LEN: usize = 31;
/// Longest instance `name` in bytes.
pub const MAX_NAME_LEN: usize = 63;
/// Longest `log_msg` in bytes.
pub const MAX_LOG_LEN: usize = 223;
/// Smallest heartbeat interval a host accepts; smaller requests are raised to it.
pub const MIN_INTERVAL_MS: u32 = 400;
