//! The controller's durable state: hosts, instances, the event log, the webhook outbox and
//! the VIM event transmitter's position.
//!
//! [`Store`] is the typed boundary between the HTTP API and the database: handlers parse and
//! validate a request into the records below (never JSON into the store), then call one
//! method, which does its whole change in one transaction. [`SqliteStore`] is the embedded
//! implementation.

mod migrations;
mod outbox;
mod recoveries;
mod rows;
mod sqlite;
mod vim;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

pub use migrations::SCHEMA_VERSION;
pub use recoveries::{DecisionKind, NewDecision, PendingFailure, RecoveryDecision, RecoveryMode};
pub use sqlite::{SqliteStore, FILE_NAME};

/// A compute host that registered with the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HostRecord {
    /// The host's name, as the agent gave it.
    pub name: String,
    /// Where the host agent's API listens, if it serves one the controller can reach.
    #[schema(required = true)]
    pub api_url: Option<String>,
    /// Whether failures on this host are reported (to the VIM and recovery).
    pub reporting_enabled: bool,
    /// When the host first registered (RFC 3339, UTC).
    pub registered_at: String,
    /// When the host last registered or sent events.
    pub last_seen: String,
    /// The highest per-host event sequence number stored (0 before any).
    pub acked_seq: u64,
    /// Who recovers the host's failed guests (an instance may override it).
    pub recovery_mode: RecoveryMode,
}

/// A guest as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct InstanceRecord {
    /// Instance uuid.
    pub uuid: String,
    /// The host that last reported it.
    pub host: String,
    /// Name from the guest's `init` (empty before one).
    pub name: String,
    /// The host agent's state name (`heartbeating`, `lost`, …), or `gone` once its host
    /// re-registered without it.
    pub state: String,
    /// Heartbeat interval in use.
    #[schema(required = true)]
    pub interval_ms: Option<u32>,
    /// Health in the latest answer.
    #[schema(required = true)]
    pub health: Option<String>,
    /// The corrective action the guest asked for.
    #[schema(required = true)]
    pub corrective_action: Option<String>,
    /// The guest's latest reason text.
    pub reason: String,
    /// Whether failures of this instance are reported.
    pub reporting_enabled: bool,
    /// An operator's corrective action that replaces the guest's, if set.
    #[schema(required = true)]
    pub corrective_override: Option<CorrectiveAction>,
    /// Who recovers this guest when it fails, if set for it; `null` follows its host.
    #[schema(required = true)]
    pub recovery_mode: Option<RecoveryMode>,
    /// The guest's vote and notice times from its `init`, once it heartbeated.
    #[schema(required = true)]
    pub guest_timeouts: Option<GuestTimeouts>,
    /// When the row last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// A guest's vote and notice times, in seconds, as its `init` gave them (the reference guest
/// adds one second to each of its settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct GuestTimeouts {
    /// Time for a vote.
    pub vote_secs: u32,
    /// Notice before stop and reboot.
    pub shutdown_secs: u32,
    /// Notice before pause, suspend and the start of a resize or migration.
    pub suspend_secs: u32,
    /// Notice after unpause, resume and the end of a resize or migration.
    pub resume_secs: u32,
    /// How long the guest may take to come back after a reboot.
    pub restart_secs: u32,
}

/// A corrective action an operator can impose on an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CorrectiveAction {
    /// Reboot the guest.
    Reboot,
    /// Stop the guest.
    Stop,
    /// Only log the failure.
    Log,
}

impl CorrectiveAction {
    /// The action's name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CorrectiveAction::Reboot => "reboot",
            CorrectiveAction::Stop => "stop",
            CorrectiveAction::Log => "log",
        }
    }
}

impl fmt::Display for CorrectiveAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CorrectiveAction {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "reboot" => Ok(CorrectiveAction::Reboot),
            "stop" => Ok(CorrectiveAction::Stop),
            "log" => Ok(CorrectiveAction::Log),
            _ => Err(()),
        }
    }
}

/// One instance in a host's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceReport {
    /// Instance uuid.
    pub uuid: String,
    /// Name from the guest's `init`.
    pub name: String,
    /// The host agent's state name.
    pub state: String,
    /// Heartbeat interval in use.
    pub interval_ms: Option<u32>,
    /// Health in the latest answer.
    pub health: Option<String>,
    /// The corrective action the guest asked for.
    pub corrective_action: Option<String>,
    /// The guest's latest reason text.
    pub reason: String,
}

/// A host agent's registration: who it is and its full current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The host's name.
    pub host: String,
    /// Where its API listens, if anywhere.
    pub api_url: Option<String>,
    /// Every instance it supervises now.
    pub instances: Vec<InstanceReport>,
}

/// An event from a host agent's journal, validated, not yet stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Per-host sequence number, from 1, contiguous.
    pub seq: u64,
    /// When it happened, as the host wrote it (RFC 3339).
    pub ts: String,
    /// `ts` in milliseconds since the Unix epoch, for time queries.
    pub ts_ms: i64,
    /// Instance uuid.
    pub instance: String,
    /// Instance name (may be empty).
    pub name: String,
    /// The journal's event name (`heartbeat_lost`, …).
    pub event: String,
    /// Every other key of the journal line.
    pub details: Map<String, Value>,
}

/// An event in the controller's log.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoredEvent {
    /// Global position in the log (increasing).
    pub id: u64,
    /// The host that reported it.
    pub host: String,
    /// The host's sequence number for it.
    pub seq: u64,
    /// When it happened, as the host wrote it.
    pub ts: String,
    /// Instance uuid.
    pub instance: String,
    /// Instance name (may be empty).
    pub name: String,
    /// Event name.
    pub event: String,
    /// The event's other fields.
    pub details: Map<String, Value>,
}

/// What [`Store::append_events`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The host's highest stored sequence number afterwards.
    pub acked_seq: u64,
    /// The events newly stored, in log order (replayed ones are not repeated).
    pub stored: Vec<StoredEvent>,
}

/// Which instances to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    /// Only those on this host.
    pub host: Option<String>,
    /// Only those in this state.
    pub state: Option<String>,
}

/// Default number of events a query returns.
pub const DEFAULT_EVENT_LIMIT: u32 = 100;
/// Most events a query returns.
pub const MAX_EVENT_LIMIT: u32 = 1000;

/// Which events to read; every set field must match. Results are ordered by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this instance's.
    pub instance: Option<String>,
    /// Only this host's.
    pub host: Option<String>,
    /// Only events of this name.
    pub event: Option<String>,
    /// Only events at or after this time (milliseconds since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only events with an id above this.
    pub after: Option<u64>,
    /// At most this many (1..=[`MAX_EVENT_LIMIT`]).
    pub limit: u32,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            instance: None,
            host: None,
            event: None,
            since_ms: None,
            after: None,
            limit: DEFAULT_EVENT_LIMIT,
        }
    }
}

/// A webhook subscription, as the API shows it (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WebhookRecord {
    /// The subscription's id.
    pub id: u64,
    /// Where events are POSTed.
    pub url: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
}

/// A webhook subscription with the state of its deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WebhookStatus {
    /// The subscription.
    #[serde(flatten)]
    pub webhook: WebhookRecord,
    /// Deliveries not delivered yet.
    pub pending: u64,
    /// Deliveries the subscriber accepted.
    pub delivered: u64,
    /// Pending deliveries that failed at least once.
    pub failing: u64,
    /// The latest failed attempt's error, if any attempt ever failed.
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// When that attempt failed (RFC 3339, UTC).
    #[schema(required = true)]
    pub last_error_at: Option<String>,
}

/// An undelivered event for one subscriber: what the delivery task sends.
#[derive(Clone, PartialEq)]
pub struct Delivery {
    /// The delivery's id in the outbox.
    pub id: u64,
    /// The subscription it is for.
    pub webhook_id: u64,
    /// The subscriber's URL.
    pub url: String,
    /// The subscriber's signing secret.
    pub secret: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// The event to send.
    pub event: StoredEvent,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("webhook_id", &self.webhook_id)
            .field("url", &self.url)
            .field("attempts", &self.attempts)
            .field("event", &self.event.id)
            .finish_non_exhaustive()
    }
}

/// What [`Store::due_deliveries`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DueDeliveries {
    /// Deliveries to attempt now, oldest first; at most one per subscription (its oldest
    /// undelivered one, so each subscriber gets its events in order).
    pub ready: Vec<Delivery>,
    /// When the earliest delivery that is not due yet becomes due (milliseconds since the
    /// Unix epoch); `None` when nothing else waits.
    pub next_at_ms: Option<i64>,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file cannot be created or opened.
    #[error("Cannot open the database {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The data directory cannot be created.
    #[error("Cannot create the data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer controller.
    #[error(
        "The database {path} has schema version {found}, newer than this controller's \
         {supported}; run a controller at least as new as the one that wrote it"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A migration could not be applied.
    #[error("Cannot migrate the database {path} to schema version {version}")]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The version being applied.
        version: i64,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// Events were posted for a host that never registered.
    #[error("Host {0:?} has not registered")]
    UnknownHost(String),
    /// The first new event does not follow the last stored one.
    #[error("Expected the host's event {} next", acked_seq + 1)]
    SequenceGap {
        /// The host's highest stored sequence number.
        acked_seq: u64,
    },
    /// A query or update failed.
    #[error("Database error")]
    Sqlite(#[from] rusqlite::Error),
    /// A background task running a store call failed.
    #[error("A store task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// The controller's durable state.
///
/// Methods are synchronous and each one is a single transaction; async callers run them on
/// the blocking pool (see [`crate::api`]). Mutations take the wall-clock `now` to stamp rows.
pub trait Store: Send + Sync + 'static {
    /// Upserts the host and its instances; instances of the host missing from
    /// `registration` become `gone`. Returns the host's acknowledged sequence number.
    fn register(&self, registration: &Registration, now: SystemTime) -> Result<u64, StoreError>;

    /// Stores the events not stored yet (sequence numbers above the host's acknowledged one)
    /// and updates their instances. `events` must be contiguous and ascending. Fails with
    /// [`StoreError::UnknownHost`] or [`StoreError::SequenceGap`] without storing anything.
    fn append_events(
        &self,
        host: &str,
        events: &[NewEvent],
        now: SystemTime,
    ) -> Result<Appended, StoreError>;

    /// Every host, ordered by name.
    fn hosts(&self) -> Result<Vec<HostRecord>, StoreError>;

    /// One host.
    fn host(&self, name: &str) -> Result<Option<HostRecord>, StoreError>;

    /// Turns a host's reporting on or off; `None` if there is no such host.
    fn set_host_reporting(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<Option<HostRecord>, StoreError>;

    /// Instances matching `filter`, ordered by uuid.
    fn instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>, StoreError>;

    /// One instance.
    fn instance(&self, uuid: &str) -> Result<Option<InstanceRecord>, StoreError>;

    /// Turns an instance's reporting on or off; `None` if there is no such instance.
    fn set_instance_reporting(
        &self,
        uuid: &str,
        enabled: bool,
        now: SystemTime,
    ) -> Result<Option<InstanceRecord>, StoreError>;

    /// Sets or clears an instance's corrective action override.
    fn set_corrective_override(
        &self,
        uuid: &str,
        action: Option<CorrectiveAction>,
        now: SystemTime,
    ) -> Result<Option<InstanceRecord>, StoreError>;

    /// Events matching `query`, ordered by id.
    fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;

    /// The id of the newest event (0 when there is none).
    fn last_event_id(&self) -> Result<u64, StoreError>;

    /// Subscribes `url` (signing with `secret`) to every event stored from now on.
    /// [`Store::append_events`] enqueues one delivery per subscription and new event, in the
    /// transaction that stores the event.
    fn add_webhook(
        &self,
        url: &str,
        secret: &str,
        now: SystemTime,
    ) -> Result<WebhookRecord, StoreError>;

    /// Every subscription, ordered by id.
    fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError>;

    /// One subscription with the counts of its deliveries.
    fn webhook(&self, id: u64) -> Result<Option<WebhookStatus>, StoreError>;

    /// Removes a subscription and all its deliveries; `false` if there is no such one.
    fn delete_webhook(&self, id: u64) -> Result<bool, StoreError>;

    /// The head of each subscription's queue (its oldest undelivered delivery) that is due
    /// at `now_ms`, oldest first, at most `limit`; and when the next one not due yet is.
    fn due_deliveries(&self, now_ms: i64, limit: u32) -> Result<DueDeliveries, StoreError>;

    /// Records that the subscriber accepted delivery `id`. A delivery that no longer exists
    /// (its subscription was deleted) is ignored.
    fn mark_delivered(&self, id: u64, now_ms: i64) -> Result<(), StoreError>;

    /// Records a failed attempt at delivery `id` and when to try it again.
    fn mark_failed(
        &self,
        id: u64,
        error: &str,
        next_at_ms: i64,
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// Sets who recovers a host's failed guests; `None` if there is no such host.
    fn set_host_recovery_mode(
        &self,
        name: &str,
        mode: RecoveryMode,
    ) -> Result<Option<HostRecord>, StoreError>;

    /// Sets or clears (`None`: follow the host) who recovers an instance; `None` if there is
    /// no such instance.
    fn set_instance_recovery_mode(
        &self,
        uuid: &str,
        mode: Option<RecoveryMode>,
        now: SystemTime,
    ) -> Result<Option<InstanceRecord>, StoreError>;

    /// Every failure left to the controller and not decided yet, oldest first (the newest
    /// `recovery_deferred` event of each instance without a decision).
    fn pending_failures(&self) -> Result<Vec<PendingFailure>, StoreError>;

    /// Stores a decision about a pending failure.
    fn record_recovery(
        &self,
        decision: &NewDecision,
        now: SystemTime,
    ) -> Result<RecoveryDecision, StoreError>;

    /// An instance's newest `limit` decisions, oldest first.
    fn recoveries(&self, uuid: &str, limit: u32) -> Result<Vec<RecoveryDecision>, StoreError>;

    /// The host name the StarlingX VIM's host `uuid` stands for, as it said earlier.
    fn starlingx_host(&self, uuid: &str) -> Result<Option<String>, StoreError>;

    /// Remembers that the StarlingX VIM calls host `name` by `uuid`.
    fn set_starlingx_host(&self, uuid: &str, name: &str) -> Result<(), StoreError>;

    /// When an instance's recoveries were ordered, at or after `since_ms` (ms since the Unix
    /// epoch), oldest first.
    fn recoveries_ordered_since(&self, uuid: &str, since_ms: i64) -> Result<Vec<i64>, StoreError>;
    /// The VIM event transmitter's position: the id of the last event it is done with;
    /// `None` before it first ran.
    fn vim_cursor(&self) -> Result<Option<u64>, StoreError>;

    /// The VIM event transmitter's position, first set (and stored) to the newest event's id
    /// (0 if none) when there is none, so that the history is not sent.
    fn start_vim_cursor(&self) -> Result<u64, StoreError>;

    /// Moves the VIM event transmitter's position to event `id`.
    fn set_vim_cursor(&self, id: u64) -> Result<(), StoreError>;

    /// How many events have an id above `after`.
    fn count_events_after(&self, after: u64) -> Result<u64, StoreError>;

    /// The name of `instance`'s newest event before event `before` whose name is in
    /// `names`, if any.
    fn previous_event(
        &self,
        instance: &str,
        before: u64,
        names: &[&str],
    ) -> Result<Option<String>, StoreError>;
}

/// The state an event puts its instance in, if it changes it.
pub fn state_after(event: &str) -> Option<&'static str> {
    Some(match event {
        "heartbeat_started" => "heartbeating",
        "heartbeat_lost" => "lost",
        "guest_unhealthy" => "unhealthy",
        "guest_exited" => "exited",
        "heartbeat_held" => "held",
        "channel_disconnected" => "connecting",
        "recovery_started" => "recovering",
        "unrecoverable" => "unrecoverable",
        _ => return None,
    })
}

/// The state of an instance whose host re-registered without it.
pub const GONE: &str = "gone";

#[cfg(test)]
mod tests;
