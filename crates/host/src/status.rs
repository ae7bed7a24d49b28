//! What the agent knows about each guest, shared with the HTTP API and embedders.
//!
//! Each supervisor owns one [`StatusCell`] and rewrites it after every step (a short,
//! uncontended lock). [`AgentView`] is the read side: a cheap clone that lists or looks up
//! instances and returns owned snapshots, so a reader never holds a lock across an await.
//! It also holds the [`Reporting`] switches the controller sets through the API.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use serde::Serialize;

/// A guest's state as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestState {
    /// Not connected to the channel socket yet (or reconnecting with back-off).
    Connecting,
    /// Connected; waiting for the guest's `init` or its first healthy answer.
    WaitingInit,
    /// Answering every challenge, healthy.
    Heartbeating,
    /// At least the latest challenge went unanswered.
    Missed,
    /// The heartbeat was lost; waiting for the guest to re-init.
    Lost,
    /// The guest's latest answer said unhealthy.
    Unhealthy,
    /// A corrective action is being carried out.
    Recovering,
    /// More recoveries were needed than the rate limit allows; only logged now.
    Unrecoverable,
    /// The guest daemon exited (not a failure); waiting for it to re-init.
    Exited,
    /// Silent during a planned disruption it was told about (reboot, pause, migration);
    /// waiting for it to re-init, with no corrective action.
    Held,
}

impl GuestState {
    /// The name shown in the API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestState::Connecting => "connecting",
            GuestState::WaitingInit => "waiting_init",
            GuestState::Heartbeating => "heartbeating",
            GuestState::Missed => "missed",
            GuestState::Lost => "lost",
            GuestState::Unhealthy => "unhealthy",
            GuestState::Recovering => "recovering",
            GuestState::Unrecoverable => "unrecoverable",
            GuestState::Exited => "exited",
            GuestState::Held => "held",
        }
    }
}

impl fmt::Display for GuestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One guest as the agent sees it (the body of `GET /v1/instances/{uuid}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    /// Instance uuid, from the channel socket's name.
    pub uuid: String,
    /// Name from the guest's `init` (empty before one).
    pub name: String,
    /// Whether the channel socket is connected.
    pub connected: bool,
    /// Current state.
    pub state: GuestState,
    /// Heartbeat interval from the guest's `init`, after clamping.
    pub interval_ms: Option<u32>,
    /// Round-trip time of the latest answer, in microseconds.
    pub last_rtt_us: Option<u64>,
    /// Missed intervals since the agent started.
    pub misses_total: u64,
    /// Missed intervals in a row now.
    pub consecutive_misses: u32,
    /// Health in the latest answer (`healthy`, `unhealthy`).
    pub health: Option<String>,
    /// Corrective action from the guest's `init`.
    pub corrective_action: Option<String>,
    /// The guest's text from its latest unhealthy answer.
    pub reason: String,
    /// Corrective actions started for this guest.
    pub recoveries: u32,
    /// Challenges sent.
    pub challenges: u64,
    /// Messages from the guest that were refused.
    pub protocol_errors: u64,
    /// Successful connections to the channel socket.
    pub connects: u32,
    /// Whether this instance's failures lead to a corrective action (set by the controller;
    /// the host-wide switch must be on too, `GET /v1/reporting`).
    pub reporting_enabled: bool,
}

impl InstanceStatus {
    fn new(uuid: &str) -> InstanceStatus {
        InstanceStatus {
            uuid: uuid.to_owned(),
            name: String::new(),
            connected: false,
            state: GuestState::Connecting,
            interval_ms: None,
            last_rtt_us: None,
            misses_total: 0,
            consecutive_misses: 0,
            health: None,
            corrective_action: None,
            reason: String::new(),
            recoveries: 0,
            challenges: 0,
            protocol_errors: 0,
            connects: 0,
            reporting_enabled: true,
        }
    }
}

type Cells = BTreeMap<Arc<str>, StatusCell>;

/// The reporting switches: host-wide and per instance. While either is off for an instance,
/// its heartbeat loss or unhealthy answer is journaled but no corrective action starts. Both
/// start on; they live in memory only (the controller sets them again after it sees a
/// registration with `reporting_enabled` values it does not want).
#[derive(Debug, Clone)]
pub struct Reporting(Arc<Switches>);

#[derive(Debug)]
struct Switches {
    host: AtomicBool,
    disabled: Mutex<BTreeSet<String>>,
}

impl Default for Reporting {
    fn default() -> Reporting {
        Reporting(Arc::new(Switches {
            host: AtomicBool::new(true),
            disabled: Mutex::new(BTreeSet::new()),
        }))
    }
}

impl Reporting {
    /// Whether the host-wide switch is on.
    pub fn host_enabled(&self) -> bool {
        self.0.host.load(Ordering::Relaxed)
    }

    /// Turns the host-wide switch on or off.
    pub fn set_host(&self, enabled: bool) {
        self.0.host.store(enabled, Ordering::Relaxed);
    }

    /// Whether the instance's own switch is on.
    pub fn instance_enabled(&self, uuid: &str) -> bool {
        !self.disabled().contains(uuid)
    }

    /// Whether a failure of `uuid` may lead to a corrective action.
    pub fn allows_action(&self, uuid: &str) -> bool {
        self.host_enabled() && self.instance_enabled(uuid)
    }

    pub(crate) fn set_instance(&self, uuid: &str, enabled: bool) {
        let mut disabled = self.disabled();
        if enabled {
            disabled.remove(uuid);
        } else {
            disabled.insert(uuid.to_owned());
        }
    }

    fn disabled(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.0
            .disabled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Read access to every instance's status; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AgentView {
    cells: Arc<RwLock<Cells>>,
    reporting: Reporting,
}

impl AgentView {
    /// A snapshot of every known instance, ordered by uuid.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        let cells = self.cells.read().unwrap_or_else(PoisonError::into_inner);
        cells.values().map(|c| self.snapshot(c)).collect()
    }

    /// A snapshot of one instance.
    pub fn instance(&self, uuid: &str) -> Option<InstanceStatus> {
        let cells = self.cells.read().unwrap_or_else(PoisonError::into_inner);
        cells.get(uuid).map(|c| self.snapshot(c))
    }

    /// The reporting switches.
    pub fn reporting(&self) -> &Reporting {
        &self.reporting
    }

    /// Sets an instance's reporting switch; false when the instance is unknown.
    pub(crate) fn set_instance_reporting(&self, uuid: &str, enabled: bool) -> bool {
        let cells = self.cells.read().unwrap_or_else(PoisonError::into_inner);
        if !cells.contains_key(uuid) {
            return false;
        }
        self.reporting.set_instance(uuid, enabled);
        true
    }

    fn snapshot(&self, cell: &StatusCell) -> InstanceStatus {
        let mut status = cell.snapshot();
        status.reporting_enabled = self.reporting.instance_enabled(&status.uuid);
        status
    }

    /// Adds an instance in state `connecting` and returns its cell.
    pub(crate) fn insert(&self, uuid: &Arc<str>) -> StatusCell {
        let cell = StatusCell(Arc::new(Mutex::new(InstanceStatus::new(uuid))));
        let mut cells = self.cells.write().unwrap_or_else(PoisonError::into_inner);
        cells.insert(uuid.clone(), cell.clone());
        cell
    }

    /// Forgets an instance, and its reporting switch.
    pub(crate) fn remove(&self, uuid: &str) {
        let mut cells = self.cells.write().unwrap_or_else(PoisonError::into_inner);
        cells.remove(uuid);
        self.reporting.set_instance(uuid, true);
    }
}

/// One instance's status, written by its supervisor.
#[derive(Debug, Clone)]
pub(crate) struct StatusCell(Arc<Mutex<InstanceStatus>>);

impl StatusCell {
    /// Locks the status for an update.
    pub(crate) fn lock(&self) -> MutexGuard<'_, InstanceStatus> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self) -> InstanceStatus {
        self.lock().clone()
    }
}

/// Sets `slot` to `value` without allocating when it already holds it.
pub(crate) fn set_text(slot: &mut Option<String>, value: Option<&str>) {
    if slot.as_deref() != value {
        *slot = value.map(str::to_owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_lists_sorted_snapshots_and_forgets_removed_instances() {
        let view = AgentView::default();
        let b: Arc<str> = "b".into();
        let a: Arc<str> = "a".into();
        let cell = view.insert(&b);
        view.insert(&a);
        cell.lock().state = GuestState::Heartbeating;
        let uuids: Vec<_> = view.instances().into_iter().map(|s| s.uuid).collect();
        assert_eq!(uuids, ["a", "b"]);
        assert_eq!(
            view.instance("b").unwrap().state.to_string(),
            "heartbeating"
        );
        view.remove("b");
        assert!(view.instance("b").is_none());
    }

    #[test]
    fn reporting_switches_show_in_snapshots_and_combine() {
        let view = AgentView::default();
        view.insert(&"a".into());
        assert!(view.instance("a").unwrap().reporting_enabled);
        assert!(!view.set_instance_reporting("nope", false));
        assert!(view.set_instance_reporting("a", false));
        assert!(!view.instance("a").unwrap().reporting_enabled);
        assert!(!view.reporting().allows_action("a"));
        view.set_instance_reporting("a", true);
        view.reporting().set_host(false);
        assert!(!view.reporting().allows_action("a"));
        assert!(view.instance("a").unwrap().reporting_enabled);
        view.reporting().set_host(true);
        assert!(view.reporting().allows_action("a"));
    }

    #[test]
    fn states_serialize_as_their_names() {
        let json = serde_json::to_value(InstanceStatus::new("u")).unwrap();
        assert_eq!(json["state"], "connecting");
        assert_eq!(GuestState::WaitingInit.to_string(), "waiting_init");
    }
}
