//! The comparison itself: what differs between the store and one host's answers, as pure
//! functions of the two views (no I/O), so each kind of drift is tested on its own.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{InstanceRecord, InstanceReport, GONE};

/// What an audit repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RepairKind {
    /// The host supervises an instance the store did not know; it was added.
    UnknownInstance,
    /// The store had another state or name for an instance; the host's was stored.
    StaleState,
    /// The store listed an instance on the host that the host no longer has; it is `gone`.
    VanishedInstance,
    /// A reporting switch on the host differed from the stored one; the stored one was pushed.
    StaleReportingFlag,
    /// The host's journal held events the store lacked; they were fetched and stored.
    MissedEvents,
}

impl RepairKind {
    /// The kind's name on the wire and in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairKind::UnknownInstance => "unknown_instance",
            RepairKind::StaleState => "stale_state",
            RepairKind::VanishedInstance => "vanished_instance",
            RepairKind::StaleReportingFlag => "stale_reporting_flag",
            RepairKind::MissedEvents => "missed_events",
        }
    }
}

/// One repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Repair {
    /// What was repaired.
    pub kind: RepairKind,
    /// The host audited.
    pub host: String,
    /// The instance, or `null` for the host-wide reporting switch.
    #[schema(required = true)]
    pub instance: Option<String>,
    /// What differed, for a human.
    pub detail: String,
}

/// The instance repairs that bring the store to `on_host`, the host's own list: instances the
/// store lacks or has with another state or name, and those it lists on `host` (not `gone`
/// yet) that the host no longer has.
pub fn instance_drift(
    host: &str,
    stored: &[InstanceRecord],
    on_host: &[InstanceReport],
) -> Vec<Repair> {
    let known: HashMap<&str, &InstanceRecord> =
        stored.iter().map(|i| (i.uuid.as_str(), i)).collect();
    let mut repairs = Vec::new();
    for report in on_host {
        let repair = |kind, detail| Repair {
            kind,
            host: host.to_owned(),
            instance: Some(report.uuid.clone()),
            detail,
        };
        match known.get(report.uuid.as_str()) {
            None => repairs.push(repair(
                RepairKind::UnknownInstance,
                format!("Added in state {:?}", report.state),
            )),
            Some(record) if record.host != host => repairs.push(repair(
                RepairKind::StaleState,
                format!("Stored on host {:?}; the host supervises it", record.host),
            )),
            Some(record) if record.state != report.state || record.name != report.name => {
                repairs.push(repair(
                    RepairKind::StaleState,
                    format!(
                        "Stored as {:?} in state {:?}; the host has {:?} in state {:?}",
                        record.name, record.state, report.name, report.state
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let listed: HashSet<&str> = on_host.iter().map(|r| r.uuid.as_str()).collect();
    for record in stored {
        if record.host == host && record.state != GONE && !listed.contains(record.uuid.as_str()) {
            repairs.push(Repair {
                kind: RepairKind::VanishedInstance,
                host: host.to_owned(),
                instance: Some(record.uuid.clone()),
                detail: format!("Was in state {:?}; the host no longer has it", record.state),
            });
        }
    }
    repairs
}

/// The stored instance switches that differ from the host's `flags` (uuid → the host's
/// `reporting_enabled`), as (uuid, the stored value to push). Instances `gone`, on another
/// host or that the host does not report a flag for are left alone.
pub fn flag_drift(
    host: &str,
    stored: &[InstanceRecord],
    flags: &HashMap<String, bool>,
) -> Vec<(String, bool)> {
    stored
        .iter()
        .filter(|i| i.host == host && i.state != GONE)
        .filter(|i| {
            flags
                .get(&i.uuid)
                .is_some_and(|on| *on != i.reporting_enabled)
        })
        .map(|i| (i.uuid.clone(), i.reporting_enabled))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uuid: &str, host: &str, state: &str, reporting: bool) -> InstanceRecord {
        InstanceRecord {
            uuid: uuid.into(),
            host: host.into(),
            name: format!("vm-{uuid}"),
            state: state.into(),
            interval_ms: None,
            health: None,
            corrective_action: None,
            reason: String::new(),
            reporting_enabled: reporting,
            corrective_override: None,
            updated_at: String::new(),
            recovery_mode: None,
            guest_timeouts: None,
        }
    }

    fn report(uuid: &str, state: &str) -> InstanceReport {
        InstanceReport {
            uuid: uuid.into(),
            name: format!("vm-{uuid}"),
            state: state.into(),
            interval_ms: None,
            health: None,
            corrective_action: None,
            reason: String::new(),
        }
    }

    fn kinds(repairs: &[Repair]) -> Vec<(RepairKind, &str)> {
        repairs
            .iter()
            .map(|r| (r.kind, r.instance.as_deref().unwrap_or("")))
            .collect()
    }

    #[test]
    fn the_same_view_needs_no_repair() {
        let stored = [
            record("a", "h", "heartbeating", true),
            record("g", "h", GONE, true),
        ];
        assert!(instance_drift("h", &stored, &[report("a", "heartbeating")]).is_empty());
    }

    #[test]
    fn each_difference_is_one_repair() {
        let stored = [
            record("a", "h", "heartbeating", true),
            record("b", "h", "heartbeating", true),
            record("m", "other", "heartbeating", true),
            record("x", "other", "heartbeating", true),
        ];
        let on_host = [
            report("a", "lost"),
            report("m", "heartbeating"),
            report("n", "held"),
        ];
        let repairs = instance_drift("h", &stored, &on_host);
        assert_eq!(
            kinds(&repairs),
            [
                (RepairKind::StaleState, "a"),
                (RepairKind::StaleState, "m"),
                (RepairKind::UnknownInstance, "n"),
                (RepairKind::VanishedInstance, "b"),
            ]
        );
    }

    #[test]
    fn a_renamed_instance_is_stale() {
        let stored = [record("a", "h", "heartbeating", true)];
        let mut renamed = report("a", "heartbeating");
        renamed.name = "new".into();
        assert_eq!(
            kinds(&instance_drift("h", &stored, &[renamed])),
            [(RepairKind::StaleState, "a")]
        );
    }

    #[test]
    fn only_differing_flags_of_live_instances_are_pushed() {
        let stored = [
            record("a", "h", "heartbeating", false),
            record("b", "h", "heartbeating", true),
            record("g", "h", GONE, false),
            record("o", "other", "heartbeating", false),
            record("s", "h", "heartbeating", false),
        ];
        let flags: HashMap<String, bool> = [("a", true), ("b", true), ("g", true), ("o", true)]
            .into_iter()
            .map(|(u, on)| (u.to_owned(), on))
            .collect();
        assert_eq!(flag_drift("h", &stored, &flags), [("a".to_owned(), false)]);
    }
}
