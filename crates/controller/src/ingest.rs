//! The bodies host agents send: their registration and their journal events.
//!
//! The wire types here follow the host agent's formats (its `GET /v1/instances` objects and
//! its journal lines) and stay separate from the store's records. Parsing validates every
//! field a later step relies on (names, lengths, timestamps, the order of sequence numbers)
//! and says which one is wrong; keys this version does not know are accepted and ignored
//! (instances) or kept as event details (events), so agents may add fields freely.

use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::clock::parse_ts_ms;
use crate::store::{InstanceReport, NewEvent, Registration};

/// Largest `POST /v1/agents/{host}/events` body.
pub const MAX_EVENTS_BODY: usize = 1 << 20;
/// Most events in one `POST /v1/agents/{host}/events`.
pub const MAX_EVENTS: usize = 1000;
/// Largest `POST /v1/agents/register` body (a host with 10,000 guests sends about 5 MiB).
pub const MAX_REGISTER_BODY: usize = 16 << 20;
/// Most instances in one registration.
pub const MAX_INSTANCES: usize = 20_000;

/// A body that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Malformed JSON, a missing or mistyped field, or a value out of range.
    #[error("{0}")]
    Invalid(String),
    /// More items than one request may carry.
    #[error("{0}")]
    TooLarge(String),
}

/// A host agent's registration: who it is and its full current state.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RegisterBody {
    /// The host's name: 1 to 253 letters, digits, `.`, `-`, `_`.
    host: String,
    /// Where the host agent's API listens (`http://` or `https://`), if the controller can
    /// reach it.
    #[serde(default)]
    api_url: Option<String>,
    /// Every instance the agent supervises now (at most 20,000).
    instances: Vec<WireInstance>,
}

/// One object of the host agent's `GET /v1/instances`; the fields not kept are ignored.
#[derive(Deserialize, ToSchema)]
pub(crate) struct WireInstance {
    /// Instance uuid: 1 to 128 visible characters, no `/`.
    uuid: String,
    /// Name from the guest's `init` (at most 256 bytes).
    #[serde(default)]
    name: String,
    /// The host agent's state name (1 to 64 of `a-z`, `0-9`, `_`).
    state: String,
    /// Heartbeat interval in use.
    #[serde(default)]
    interval_ms: Option<u32>,
    /// Health in the latest answer.
    #[serde(default)]
    health: Option<String>,
    /// The corrective action the guest asked for.
    #[serde(default)]
    corrective_action: Option<String>,
    /// The guest's latest reason text (at most 4096 bytes).
    #[serde(default)]
    reason: String,
}

/// Journal events of one host, in sequence order.
#[derive(Deserialize, ToSchema)]
pub(crate) struct EventsBody {
    /// At most 1000 events whose `seq` go up by one.
    events: Vec<WireEvent>,
}

/// One journal line with its per-host sequence number; every other key is kept as the
/// event's `details`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct WireEvent {
    /// Per-host sequence number, from 1.
    seq: u64,
    /// When it happened (RFC 3339).
    ts: String,
    /// Instance uuid.
    instance: String,
    /// Instance name (may be empty).
    #[serde(default)]
    name: String,
    /// The journal's event name (1 to 64 of `a-z`, `0-9`, `_`).
    event: String,
    /// The journal line's other keys.
    #[serde(flatten)]
    details: Map<String, Value>,
}

/// Parses and validates a `POST /v1/agents/register` body.
pub fn parse_registration(body: &[u8]) -> Result<Registration, BodyError> {
    let body: RegisterBody = serde_json::from_slice(body).map_err(|e| {
        BodyError::Invalid(format!(
            "The body must be {{\"host\": …, \"api_url\": …, \"instances\": [...]}}: {e}"
        ))
    })?;
    if body.instances.len() > MAX_INSTANCES {
        return Err(BodyError::TooLarge(format!(
            "{} instances in one registration; at most {MAX_INSTANCES}",
            body.instances.len()
        )));
    }
    check_host_name(&body.host).map_err(|e| invalid("host", e))?;
    if let Some(url) = &body.api_url {
        check_url(url).map_err(|e| invalid("api_url", e))?;
    }
    let mut instances = Vec::with_capacity(body.instances.len());
    for (i, wire) in body.instances.into_iter().enumerate() {
        let field = |name: &str| format!("instances[{i}].{name}");
        check_uuid(&wire.uuid).map_err(|e| invalid(&field("uuid"), e))?;
        check_word(&wire.state).map_err(|e| invalid(&field("state"), e))?;
        check_text(&wire.name, 256).map_err(|e| invalid(&field("name"), e))?;
        check_text(&wire.reason, 4096).map_err(|e| invalid(&field("reason"), e))?;
        for (name, value) in [
            ("health", &wire.health),
            ("corrective_action", &wire.corrective_action),
        ] {
            if let Some(value) = value {
                check_word(value).map_err(|e| invalid(&field(name), e))?;
            }
        }
        instances.push(InstanceReport {
            uuid: wire.uuid,
            name: wire.name,
            state: wire.state,
            interval_ms: wire.interval_ms,
            health: wire.health,
            corrective_action: wire.corrective_action,
            reason: wire.reason,
        });
    }
    Ok(Registration {
        host: body.host,
        api_url: body.api_url,
        instances,
    })
}

/// Parses and validates a `POST /v1/agents/{host}/events` body: at most [`MAX_EVENTS`]
/// events whose sequence numbers start at 1 or above and go up by one.
pub fn parse_events(body: &[u8]) -> Result<Vec<NewEvent>, BodyError> {
    let body: EventsBody = serde_json::from_slice(body).map_err(|e| {
        BodyError::Invalid(format!(
            "The body must be {{\"events\": [{{\"seq\", \"ts\", \"instance\", \"event\", …}}]}}: {e}"
        ))
    })?;
    if body.events.len() > MAX_EVENTS {
        return Err(BodyError::TooLarge(format!(
            "{} events in one request; at most {MAX_EVENTS}",
            body.events.len()
        )));
    }
    let mut events: Vec<NewEvent> = Vec::with_capacity(body.events.len());
    for (i, wire) in body.events.into_iter().enumerate() {
        let field = |name: &str| format!("events[{i}].{name}");
        let expected = events.last().map(|e| e.seq + 1);
        if wire.seq == 0 || wire.seq > i64::MAX as u64 {
            return Err(invalid(&field("seq"), "must be from 1 to 2^63-1".into()));
        }
        if let Some(expected) = expected.filter(|n| *n != wire.seq) {
            let message = format!("must be {expected} (one more than the previous event's)");
            return Err(invalid(
                &field("seq"),
                format!("{message}, not {}", wire.seq),
            ));
        }
        let ts_ms = parse_ts_ms(&wire.ts).ok_or_else(|| {
            invalid(
                &field("ts"),
                format!("{:?} is not an RFC 3339 timestamp", wire.ts),
            )
        })?;
        check_uuid(&wire.instance).map_err(|e| invalid(&field("instance"), e))?;
        check_word(&wire.event).map_err(|e| invalid(&field("event"), e))?;
        check_text(&wire.name, 256).map_err(|e| invalid(&field("name"), e))?;
        events.push(NewEvent {
            seq: wire.seq,
            ts: wire.ts,
            ts_ms,
            instance: wire.instance,
            name: wire.name,
            event: wire.event,
            details: wire.details,
        });
    }
    Ok(events)
}

fn invalid(field: &str, problem: String) -> BodyError {
    BodyError::Invalid(format!("{field} {problem}"))
}

/// A host name: 1 to 253 letters, digits, `.`, `-`, `_`.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.is_empty() || name.len() > 253 || !name.chars().all(ok) {
        return Err(format!(
            "{name:?} is not a host name (1 to 253 letters, digits, '.', '-', '_')"
        ));
    }
    Ok(())
}

/// An instance id: 1 to 128 visible ASCII characters other than `/`.
pub fn check_uuid(uuid: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_graphic() && c != '/';
    if uuid.is_empty() || uuid.len() > 128 || !uuid.chars().all(ok) {
        return Err(format!(
            "{uuid:?} is not an instance id (1 to 128 visible characters, no '/')"
        ));
    }
    Ok(())
}

/// A state, health, action or event name: 1 to 64 of `a-z`, `0-9`, `_`.
pub fn check_word(word: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if word.is_empty() || word.len() > 64 || !word.chars().all(ok) {
        return Err(format!("{word:?} is not a name (1 to 64 of a-z, 0-9, '_')"));
    }
    Ok(())
}

fn check_text(text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        return Err(format!("is {} bytes long; at most {max}", text.len()));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), String> {
    let scheme = url.starts_with("http://") || url.starts_with("https://");
    if !scheme || url.len() > 2048 || !url.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
