//! From the event log to the StarlingX VIM's events: which PATCHes one stored event becomes.
//!
//! [`patches`] is a pure function of the event and a [`Context`] read from the store when the
//! event is sent (the instance's and host's records, and the instance's state-setting event
//! before this one). Its rows follow what the reference guestAgent reports (heartbeat
//! started/stopped, loss, ill health, a guest's answer to a vote or notification); every other
//! event maps to nothing. [`VimPatch::body`] writes the exact JSON bodies the VIM's plugin
//! API takes.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::hostlink::encode_segment;
use crate::starlingx::handle::DEFAULT_TIMEOUTS;
use crate::store::{CorrectiveAction, HostRecord, InstanceRecord, StoredEvent};

/// The events that set an instance's state ([`crate::store::state_after`]): the newest of them
/// before an event says whether the guest was heartbeating when it happened.
pub const STATE_EVENTS: &[&str] = &[
    "heartbeat_started",
    "heartbeat_lost",
    "guest_unhealthy",
    "guest_exited",
    "heartbeat_held",
    "channel_disconnected",
    "recovery_started",
    "unrecoverable",
];

/// The state-setting events after which the guest heartbeats.
const HEARTBEATING: &[&str] = &["heartbeat_started", "guest_unhealthy"];

/// The events that end heartbeating when the guest was heartbeating.
const STOPS: &[&str] = &[
    "heartbeat_lost",
    "guest_exited",
    "heartbeat_held",
    "channel_disconnected",
];

/// What the mapping knows besides the event, read from the store when the event is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The event's instance (its reporting switch and corrective action override).
    pub instance: Option<InstanceRecord>,
    /// The event's host (its reporting switch).
    pub host: Option<HostRecord>,
    /// The name of the instance's newest [`STATE_EVENTS`] event before this one.
    pub previous: Option<String>,
}

/// One PATCH of `{vim_url}/nfvi-plugins/v1/instances/{uuid}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VimPatch {
    /// The instance the PATCH is about.
    pub uuid: String,
    /// What it tells the VIM.
    pub event: VimEvent,
}

/// The three kinds of event the VIM's plugin API takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VimEvent {
    /// `event-type: service`: the guest's heartbeat started (`status` `enabled`) or stopped.
    Service {
        /// The instance's host.
        hostname: String,
        /// The instance's reporting switch: `enabled` or `disabled`.
        state: &'static str,
        /// `enabled` while the guest heartbeats, else `disabled`.
        status: &'static str,
        /// The guest's restart time in seconds, `"0"` when it stopped.
        restart_timeout: String,
    },
    /// `event-type: alarm`: the guest failed (`failed`) or reports itself `unhealthy`.
    Alarm {
        /// The instance's host.
        hostname: String,
        /// `failed` or `unhealthy`.
        state: &'static str,
        /// The corrective action the VIM should take: `reboot`, `stop` or `log`.
        repair_action: String,
    },
    /// `event-type: action`: the guest's answer to a vote or notification.
    Action {
        /// The lifecycle event (`stop`, `reboot`, …).
        action: String,
        /// `allow`, `proceed`, `reject` or empty.
        guest_response: &'static str,
        /// The guest's reason, if any.
        reason: String,
    },
}

/// Whether `event` can map to any PATCH (others are passed over without reading the store).
pub fn relevant(event: &str) -> bool {
    matches!(
        event,
        "heartbeat_started" | "guest_unhealthy" | "operation_finished"
    ) || STOPS.contains(&event)
}

/// The PATCHes `event` becomes, in the order they must be sent.
pub fn patches(event: &StoredEvent, context: &Context) -> Vec<VimPatch> {
    let name = event.event.as_str();
    let mut out = Vec::new();
    if name == "heartbeat_started" {
        let restart = event.details.get("restart_secs").and_then(Value::as_u64);
        let restart = restart
            .unwrap_or(u64::from(DEFAULT_TIMEOUTS.restart_secs))
            .to_string();
        out.push(service(event, context, "enabled", restart));
    }
    let was_heartbeating = context
        .previous
        .as_deref()
        .is_some_and(|p| HEARTBEATING.contains(&p));
    if STOPS.contains(&name) && was_heartbeating {
        out.push(service(event, context, "disabled", "0".to_owned()));
    }
    if name == "heartbeat_lost" && reporting(context) {
        let asked = text(&event.details, "action").unwrap_or("unknown");
        out.push(alarm(event, context, "failed", asked));
    }
    if name == "guest_unhealthy" {
        let asked = text(&event.details, "action");
        if let Some(asked) = asked.filter(|a| a.parse::<CorrectiveAction>().is_ok()) {
            out.push(alarm(event, context, "unhealthy", asked));
        }
    }
    if name == "operation_finished" {
        out.extend(answer(event));
    }
    out
}

/// Whether failures of the event's instance are reported: both switches on (a record the
/// store does not have counts as on, the default).
fn reporting(context: &Context) -> bool {
    let host = context.host.as_ref().is_none_or(|h| h.reporting_enabled);
    host && instance_reporting(context)
}

fn instance_reporting(context: &Context) -> bool {
    context
        .instance
        .as_ref()
        .is_none_or(|i| i.reporting_enabled)
}

fn switch(on: bool) -> &'static str {
    if on {
        "enabled"
    } else {
        "disabled"
    }
}

fn text<'a>(details: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    details.get(key).and_then(Value::as_str)
}

fn service(
    event: &StoredEvent,
    context: &Context,
    status: &'static str,
    restart: String,
) -> VimPatch {
    VimPatch {
        uuid: event.instance.clone(),
        event: VimEvent::Service {
            hostname: event.host.clone(),
            state: switch(instance_reporting(context)),
            status,
            restart_timeout: restart,
        },
    }
}

/// An alarm asking for `asked`, or for the operator's override of the instance's action.
fn alarm(event: &StoredEvent, context: &Context, state: &'static str, asked: &str) -> VimPatch {
    let imposed = context
        .instance
        .as_ref()
        .and_then(|i| i.corrective_override);
    VimPatch {
        uuid: event.instance.clone(),
        event: VimEvent::Alarm {
            hostname: event.host.clone(),
            state,
            repair_action: imposed.map_or(asked, |a| a.as_str()).to_owned(),
        },
    }
}

/// The action event of a vote or notification run alone (`only`); `None` for the full
/// sequence, which the VIM did not ask for.
fn answer(event: &StoredEvent) -> Option<VimPatch> {
    let details = &event.details;
    let revocable = match text(details, "only")? {
        "vote" => true,
        "notify" => false,
        _ => return None,
    };
    let action = text(details, "action")?;
    let guest_response = if text(details, "outcome") == Some("rejected") {
        "reject"
    } else {
        match details.get("vote_result") {
            // No answer: counted as the host counts silence, accept or complete.
            None => counted(revocable),
            Some(Value::String(v)) if v == "accept" || v == "complete" => counted(revocable),
            Some(Value::String(v)) if v == "reject" => "reject",
            Some(_) => "",
        }
    };
    Some(VimPatch {
        uuid: event.instance.clone(),
        event: VimEvent::Action {
            action: action.to_owned(),
            guest_response,
            reason: text(details, "reason").unwrap_or("").to_owned(),
        },
    })
}

/// The VIM's word for a guest that goes along: `allow` a vote, `proceed` after a notice.
fn counted(revocable: bool) -> &'static str {
    if revocable {
        "allow"
    } else {
        "proceed"
    }
}

impl VimPatch {
    /// The PATCH's URL under the VIM's base URL (`http://host:port`, no trailing slash).
    pub fn url(&self, base: &str) -> String {
        format!(
            "{base}/nfvi-plugins/v1/instances/{}",
            encode_segment(&self.uuid)
        )
    }

    /// The exact JSON body.
    pub fn body(&self) -> Vec<u8> {
        let uuid = self.uuid.as_str();
        let written = match &self.event {
            VimEvent::Service {
                hostname,
                state,
                status,
                restart_timeout,
            } => {
                let data = ServiceData {
                    service: "heartbeat",
                    state,
                    status,
                    restart_timeout,
                };
                serde_json::to_vec(&HostBody::new(uuid, hostname, "service", data))
            }
            VimEvent::Alarm {
                hostname,
                state,
                repair_action,
            } => {
                let data = AlarmData {
                    service: "heartbeat",
                    state,
                    repair_action,
                };
                serde_json::to_vec(&HostBody::new(uuid, hostname, "alarm", data))
            }
            VimEvent::Action {
                action,
                guest_response,
                reason,
            } => serde_json::to_vec(&ActionBody {
                uuid,
                event_type: "action",
                event_data: ActionData {
                    action,
                    guest_response,
                    reason,
                },
            }),
        };
        // Structs of strings always serialise.
        written.unwrap_or_default()
    }
}

/// The service and alarm events' outer shape.
#[derive(Serialize)]
struct HostBody<'a, S> {
    uuid: &'a str,
    hostname: &'a str,
    #[serde(rename = "event-type")]
    event_type: &'static str,
    #[serde(rename = "event-data")]
    event_data: Services<S>,
}

impl<'a, S> HostBody<'a, S> {
    fn new(uuid: &'a str, hostname: &'a str, event_type: &'static str, service: S) -> Self {
        HostBody {
            uuid,
            hostname,
            event_type,
            event_data: Services {
                services: [service],
            },
        }
    }
}

#[derive(Serialize)]
struct Services<S> {
    services: [S; 1],
}

#[derive(Serialize)]
struct ServiceData<'a> {
    service: &'static str,
    state: &'a str,
    status: &'a str,
    #[serde(rename = "restart-timeout")]
    restart_timeout: &'a str,
}

#[derive(Serialize)]
struct AlarmData<'a> {
    service: &'static str,
    state: &'a str,
    #[serde(rename = "repair-action")]
    repair_action: &'a str,
}

/// The action event: no hostname.
#[derive(Serialize)]
struct ActionBody<'a> {
    uuid: &'a str,
    #[serde(rename = "event-type")]
    event_type: &'static str,
    #[serde(rename = "event-data")]
    event_data: ActionData<'a>,
}

#[derive(Serialize)]
struct ActionData<'a> {
    action: &'a str,
    #[serde(rename = "guest-response")]
    guest_response: &'a str,
    reason: &'a str,
}

#[cfg(test)]
mod tests;
