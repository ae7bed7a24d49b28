//! The application IPC frame codec (pure, no I/O).
//!
//! Applications and the guest daemon exchange fixed 228-byte frames over a UNIX stream socket,
//! in the machine's native byte order: a 20-byte header (the ASCII magic `FDFDA5A5`, version 2,
//! revision 1, the message type, a per-sender sequence number and the frame size) and a
//! zero-filled 208-byte body. [`encode`] writes one frame; [`Decoder`] cuts a byte stream into
//! frames, skipping anything before the next magic, so a stream recovers from garbage.
//! Numeric fields are kept as sent ([`u32`]) so that a frame decodes and encodes back to the
//! same bytes; [`crate::types`] gives them names.

/// The size of every frame.
pub const FRAME_SIZE: usize = 228;
/// The size of the header.
pub const HEADER_SIZE: usize = 20;
/// The magic that opens every frame.
pub const MAGIC: &[u8; 8] = b"FDFDA5A5";
/// The only version understood.
pub const VERSION: u8 = 2;
/// The revision sent.
pub const REVISION: u8 = 1;
/// The size of `application_name`, its terminating NUL included.
pub const NAME_SIZE: usize = 40;
/// The size of every `log_msg`, its terminating NUL included.
pub const LOG_SIZE: usize = 192;
/// How many bytes a [`Decoder`] holds at most between two calls.
pub const MAX_PENDING: usize = FRAME_SIZE - 1;

/// A registration (`INIT`, type 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    /// The application's name (at most 39 bytes on the wire).
    pub name: String,
    /// How often the daemon challenges the application.
    pub heartbeat_interval_ms: u32,
    /// How long a vote may take, in seconds.
    pub vote_secs: u32,
    /// How long a shutdown notification may take, in seconds.
    pub shutdown_notice_secs: u32,
    /// How long a suspend notification may take, in seconds.
    pub suspend_notice_secs: u32,
    /// How long a resume notification may take, in seconds.
    pub resume_notice_secs: u32,
    /// The corrective action on a heartbeat timeout (see [`crate::types::Action`]).
    pub corrective_action: u32,
}

/// The answer to a challenge (`CHALLENGE_RESPONSE`, type 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeResponse {
    /// The challenge being answered.
    pub heartbeat_response: u32,
    /// 1 healthy, anything else unhealthy.
    pub health: u32,
    /// The action asked for when unhealthy.
    pub corrective_action: u32,
    /// The reason (at most 191 bytes on the wire).
    pub log_msg: String,
}

/// A lifecycle action (`ACTION_NOTIFY`, type 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionNotify {
    /// Identifies this action; echoed in the response.
    pub invocation_id: u32,
    /// What happens (see [`crate::types::Event`]).
    pub event_type: u32,
    /// Vote or notification (see [`crate::types::Notify`]).
    pub notification_type: u32,
}

/// The answer to an action (`ACTION_RESPONSE`, type 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionResponse {
    /// From the notification.
    pub invocation_id: u32,
    /// From the notification.
    pub event_type: u32,
    /// From the notification.
    pub notification_type: u32,
    /// The answer (see [`crate::types::Vote`]).
    pub vote_result: u32,
    /// The reason (at most 191 bytes on the wire).
    pub log_msg: String,
}

/// The body of a frame, one variant per message type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Type 0, application → daemon.
    Init(Init),
    /// Type 1, daemon → application: 1 accepted, 0 refused.
    InitAck {
        /// 1 accepted, 0 refused.
        accepted: u32,
    },
    /// Type 2, application → daemon: deregistration.
    Final {
        /// Why.
        log_msg: String,
    },
    /// Type 3, daemon → application.
    Challenge {
        /// The value to echo.
        heartbeat_challenge: u32,
    },
    /// Type 4, application → daemon.
    ChallengeResponse(ChallengeResponse),
    /// Type 5, daemon → application.
    ActionNotify(ActionNotify),
    /// Type 6, application → daemon.
    ActionResponse(ActionResponse),
}

impl Body {
    /// The message type number in the header.
    pub fn msg_type(&self) -> u16 {
        match self {
            Body::Init(_) => 0,
            Body::InitAck { .. } => 1,
            Body::Final { .. } => 2,
            Body::Challenge { .. } => 3,
            Body::ChallengeResponse(_) => 4,
            Body::ActionNotify(_) => 5,
            Body::ActionResponse(_) => 6,
        }
    }
}

/// One frame: the sender's sequence number and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The sender's counter.
    pub sequence: u32,
    /// The message.
    pub body: Body,
}

/// Why bytes of the stream were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Bytes before the next magic.
    #[error("{0} bytes of garbage skipped")]
    Garbage(usize),
    /// A header of another version (its magic is skipped).
    #[error("unsupported version {0}")]
    Version(u8),
    /// A header whose size field is not 228 (its magic is skipped).
    #[error("bad frame size {0}")]
    Size(u32),
    /// A whole frame of an unknown type.
    #[error("unknown message type {0}")]
    MsgType(u16),
}

/// Appends the 228 bytes of `frame` to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + FRAME_SIZE, 0);
    let buf = &mut out[start..start + FRAME_SIZE];
    buf[..8].copy_from_slice(MAGIC);
    buf[8] = VERSION;
    buf[9] = REVISION;
    buf[10..12].copy_from_slice(&frame.body.msg_type().to_ne_bytes());
    put_u32(buf, 12, frame.sequence);
    put_u32(buf, 16, FRAME_SIZE as u32);
    let body = &mut buf[HEADER_SIZE..];
    match &frame.body {
        Body::Init(i) => {
            put_str(body, 0, NAME_SIZE, &i.name);
            let values = [
                i.heartbeat_interval_ms,
                i.vote_secs,
                i.shutdown_notice_secs,
                i.suspend_notice_secs,
                i.resume_notice_secs,
                i.corrective_action,
            ];
            put_u32s(body, NAME_SIZE, &values);
        }
        Body::InitAck { accepted } => put_u32(body, 0, *accepted),
        Body::Final { log_msg } => put_str(body, 0, LOG_SIZE, log_msg),
        Body::Challenge {
            heartbeat_challenge,
        } => put_u32(body, 0, *heartbeat_challenge),
        Body::ChallengeResponse(r) => {
            put_u32s(
                body,
                0,
                &[r.heartbeat_response, r.health, r.corrective_action],
            );
            put_str(body, 12, LOG_SIZE, &r.log_msg);
        }
        Body::ActionNotify(n) => {
            put_u32s(
                body,
                0,
                &[n.invocation_id, n.event_type, n.notification_type],
            );
        }
        Body::ActionResponse(r) => {
            let values = [
                r.invocation_id,
                r.event_type,
                r.notification_type,
                r.vote_result,
            ];
            put_u32s(body, 0, &values);
            put_str(body, 16, LOG_SIZE, &r.log_msg);
        }
    }
}

/// The 228 bytes of `frame`.
pub fn to_bytes(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_SIZE);
    encode(frame, &mut out);
    out
}

/// `text` cut to fit a `size`-byte C string (a character boundary, no inner NUL).
pub fn cut(text: &str, size: usize) -> &str {
    let text = text.split('\0').next().unwrap_or("");
    let mut end = text.len().min(size - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn put_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

fn put_u32s(buf: &mut [u8], at: usize, values: &[u32]) {
    for (i, v) in values.iter().enumerate() {
        put_u32(buf, at + 4 * i, *v);
    }
}

fn put_str(buf: &mut [u8], at: usize, size: usize, text: &str) {
    let text = cut(text, size);
    buf[at..at + text.len()].copy_from_slice(text.as_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_ne_bytes(b)
}

/// A C string of at most `size` bytes: up to the first NUL, invalid UTF-8 replaced.
fn get_str(buf: &[u8], at: usize, size: usize) -> String {
    let field = &buf[at..at + size];
    let end = field.iter().position(|b| *b == 0).unwrap_or(size);
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Decodes one whole frame (`bytes.len() == 228`, magic already checked).
pub fn decode_frame(bytes: &[u8; FRAME_SIZE]) -> Result<Frame, FrameError> {
    if bytes[8] != VERSION {
        return Err(FrameError::Version(bytes[8]));
    }
    let size = get_u32(bytes, 16);
    if size as usize != FRAME_SIZE {
        return Err(FrameError::Size(size));
    }
    let msg_type = u16::from_ne_bytes([bytes[10], bytes[11]]);
    Ok(Frame {
        sequence: get_u32(bytes, 12),
        body: decode_body(msg_type, &bytes[HEADER_SIZE..])?,
    })
}

/// The body of type `msg_type` from the 208 bytes after the header.
fn decode_body(msg_type: u16, b: &[u8]) -> Result<Body, FrameError> {
    Ok(match msg_type {
        0 => Body::Init(Init {
            name: get_str(b, 0, NAME_SIZE),
            heartbeat_interval_ms: get_u32(b, 40),
            vote_secs: get_u32(b, 44),
            shutdown_notice_secs: get_u32(b, 48),
            suspend_notice_secs: get_u32(b, 52),
            resume_notice_secs: get_u32(b, 56),
            corrective_action: get_u32(b, 60),
        }),
        1 => Body::InitAck {
            accepted: get_u32(b, 0),
        },
        2 => Body::Final {
            log_msg: get_str(b, 0, LOG_SIZE),
        },
        3 => Body::Challenge {
            heartbeat_challenge: get_u32(b, 0),
        },
        4 => Body::ChallengeResponse(ChallengeResponse {
            heartbeat_response: get_u32(b, 0),
            health: get_u32(b, 4),
            corrective_action: get_u32(b, 8),
            log_msg: get_str(b, 12, LOG_SIZE),
        }),
        5 => Body::ActionNotify(ActionNotify {
            invocation_id: get_u32(b, 0),
            event_type: get_u32(b, 4),
            notification_type: get_u32(b, 8),
        }),
        6 => Body::ActionResponse(ActionResponse {
            invocation_id: get_u32(b, 0),
            event_type: get_u32(b, 4),
            notification_type: get_u32(b, 8),
            vote_result: get_u32(b, 12),
            log_msg: get_str(b, 16, LOG_SIZE),
        }),
        other => return Err(FrameError::MsgType(other)),
    })
}

/// Cuts a byte stream into frames; holds at most [`MAX_PENDING`] bytes between calls.
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    pending: Vec<u8>,
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// How many bytes wait for the rest of their frame.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds `data`; reports every frame and every dropped stretch, in stream order.
    pub fn feed(&mut self, data: &[u8], mut out: impl FnMut(Result<Frame, FrameError>)) {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        while let Some(step) = step(&self.pending[at..]) {
            match step {
                Step::Skip(n, error) => {
                    at += n;
                    out(Err(error));
                }
                Step::Frame(result) => {
                    at += if matches!(result, Err(FrameError::Version(_) | FrameError::Size(_))) {
                        MAGIC.len()
                    } else {
                        FRAME_SIZE
                    };
                    out(result);
                }
            }
        }
        self.pending.drain(..at);
    }
}

/// What to do with the start of `buf`, or `None` to wait for more bytes.
fn step(buf: &[u8]) -> Option<Step> {
    match find_magic(buf) {
        Some(0) => {
            let frame: &[u8; FRAME_SIZE] = buf.get(..FRAME_SIZE)?.try_into().ok()?;
            Some(Step::Frame(decode_frame(frame)))
        }
        Some(n) => Some(Step::Skip(n, FrameError::Garbage(n))),
        // Keep a tail that may be the start of a magic.
        None => {
            let keep = partial_magic(buf);
            let n = buf.len() - keep;
            (n > 0).then_some(Step::Skip(n, FrameError::Garbage(n)))
        }
    }
}

enum Step {
    Skip(usize, FrameError),
    Frame(Result<Frame, FrameError>),
}

fn find_magic(buf: &[u8]) -> Option<usize> {
    buf.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// The length of the longest suffix of `buf` that is a proper prefix of the magic.
fn partial_magic(buf: &[u8]) -> usize {
    (1..MAGIC.len().min(buf.len() + 1))
        .rev()
        .find(|&n| buf[buf.len() - n..] == MAGIC[..n])
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
