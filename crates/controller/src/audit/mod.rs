//! The state audit: every [`DEFAULT_INTERVAL`] the controller compares its view of each host
//! with the host's own and repairs the drift, so a lost command or a missed registration is
//! corrected without waiting for the host to register again.
//!
//! Each round visits every stored host that has an `api_url`: `GET /v1/instances` and
//! `GET /v1/reporting` through the [`HostLink`](crate::hostlink::HostLink), then
//! [`drift`] says what differs. For instances the host is the truth (it supervises them):
//! unknown or stale ones are stored as the host has them and those it no longer has become
//! `gone`, in one [`Store::register`](crate::store::Store::register) with the host's list.
//! For reporting switches the store is the truth: a switch that differs is pushed to the host.
//! Missed events are not audited: the host API does not expose its journal's last sequence
//! number, and the host's own link replays unacknowledged events anyway.
//!
//! Each repair is logged on one line and the last round's [`AuditReport`] is served at
//! `GET /v1/audit`. A host that cannot be read is listed as unreachable, changes nothing and
//! is tried again next round; it is logged when it becomes unreachable and when it is back,
//! not every round.

pub mod drift;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use hyper::Method;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::ApiState;
use crate::clock::format_ts;
use crate::hostlink::{resync, HostLinkError};
use crate::store::{HostRecord, InstanceFilter, InstanceRecord, Registration};
use drift::{flag_drift, instance_drift, Repair, RepairKind};

/// How often the audit runs unless [`crate::Controller::with_audit_interval`] says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Most events fetched from a host's journal per round.
const JOURNAL_BATCH: usize = 500;

/// What the last audit round found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditReport {
    /// When the last round ended (RFC 3339, UTC); `null` before the first.
    #[schema(required = true)]
    pub last_run: Option<String>,
    /// Hosts with an `api_url` the round visited, reachable or not.
    pub hosts_checked: u64,
    /// Hosts that could not be read (no answer, or an error answer), by name; nothing was
    /// changed for them.
    pub unreachable: Vec<String>,
    /// Every repair made, host by host.
    pub repairs: Vec<Repair>,
}

/// The running audit; stops when dropped.
pub struct AuditTask(tokio::task::JoinHandle<()>);

impl AuditTask {
    /// Runs a round every `every` (the first one `every` after now) until dropped.
    pub fn spawn(state: ApiState, every: Duration) -> AuditTask {
        AuditTask(tokio::spawn(async move {
            let start = tokio::time::Instant::now() + every;
            let mut ticks = tokio::time::interval_at(start, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut down = HashSet::new();
            loop {
                ticks.tick().await;
                let report = round(&state, &mut down).await;
                state.set_audit(report);
            }
        }))
    }
}

impl Drop for AuditTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One audit round over every host; `down` holds the hosts unreachable last round (for
/// logging only the changes).
pub async fn round(state: &ApiState, down: &mut HashSet<String>) -> AuditReport {
    let mut report = AuditReport::default();
    let hosts = match state.store(|store| store.hosts()).await {
        Ok(hosts) => hosts,
        Err(e) => {
            let error = crate::api::error_chain(&e);
            tracing::warn!(%error, "Cannot read the hosts to audit them");
            report.last_run = Some(format_ts(SystemTime::now()));
            return report;
        }
    };
    for host in hosts.iter().filter(|h| h.api_url.is_some()) {
        report.hosts_checked += 1;
        match audit_host(state, host).await {
            Ok(repairs) => {
                if down.remove(&host.name) {
                    tracing::info!(host = %host.name, "The host is reachable again for the audit");
                }
                report.repairs.extend(repairs);
            }
            Err(e) => {
                if down.insert(host.name.clone()) {
                    let error = crate::api::error_chain(&e);
                    tracing::warn!(host = %host.name, %error,
                        "Cannot audit the host; trying again every round");
                }
                report.unreachable.push(host.name.clone());
            }
        }
    }
    down.retain(|name| report.unreachable.contains(name));
    report.last_run = Some(format_ts(SystemTime::now()));
    report
}

/// Why a host could not be audited.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The host could not be read.
    #[error(transparent)]
    Host(#[from] HostLinkError),
    /// The host answered something that is not its instance list or switch.
    #[error("Host {host:?} answered {path} with an unexpected body: {message}")]
    BadView {
        /// The host's name.
        host: String,
        /// The path read.
        path: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Audits one host: reads its view, repairs the store's instances, pushes stale switches.
async fn audit_host(state: &ApiState, host: &HostRecord) -> Result<Vec<Repair>, AuditError> {
    let missed = missed_events(state, host).await?;
    let (instances, flags, host_enabled) = read_host(state, host).await?;
    let uuids = instances.instances.iter().map(|i| i.uuid.clone()).collect();
    let stored = stored_view(state, &host.name, uuids).await?;
    let mut repairs = instance_drift(&host.name, &stored, &instances.instances);
    repairs.splice(0..0, missed);
    let stored = if repairs.is_empty() {
        stored
    } else {
        state
            .store(move |s| s.register(&instances, SystemTime::now()))
            .await?;
        stored_view(state, &host.name, Vec::new()).await?
    };
    if host_enabled != host.reporting_enabled && resync::push_host(state, host).await {
        repairs.push(Repair {
            kind: RepairKind::StaleReportingFlag,
            host: host.name.clone(),
            instance: None,
            detail: format!(
                "The host's switch was {}; pushed {}",
                on_off(host_enabled),
                on_off(host.reporting_enabled)
            ),
        });
    }
    for (uuid, enabled) in flag_drift(&host.name, &stored, &flags) {
        let Some(record) = stored.iter().find(|i| i.uuid == uuid) else {
            continue;
        };
        if resync::push_instance(state, record).await {
            repairs.push(Repair {
                kind: RepairKind::StaleReportingFlag,
                host: host.name.clone(),
                instance: Some(uuid),
                detail: format!(
                    "The host's switch was {}; pushed {}",
                    on_off(!enabled),
                    on_off(enabled)
                ),
            });
        }
    }
    for repair in &repairs {
        tracing::info!(host = %repair.host, instance = repair.instance.as_deref(),
            repair = repair.kind.as_str(), detail = %repair.detail, "Audit repaired drift");
    }
    Ok(repairs)
}

/// Fetches from the host's journal (`GET /v1/journal`) the events the store lacks, at most
/// one batch a round, and stores them as if the host had sent them: its own link may be cut
/// in one direction only. A host without the route (404) is skipped.
async fn missed_events(state: &ApiState, host: &HostRecord) -> Result<Option<Repair>, AuditError> {
    let path = format!("/v1/journal?after={}&limit={JOURNAL_BATCH}", host.acked_seq);
    let answer = match state.hostlink().call(host, Method::GET, &path, None).await {
        Ok(answer) if answer.status == hyper::StatusCode::NOT_FOUND => return Ok(None),
        Err(HostLinkError::BadAnswer { status, .. }) if status == hyper::StatusCode::NOT_FOUND => {
            return Ok(None)
        }
        other => other?,
    };
    let answer = crate::hostlink::success(host, answer)?;
    let bad = |message: String| AuditError::BadView {
        host: host.name.clone(),
        path: "/v1/journal",
        message,
    };
    let bytes = serde_json::to_vec(&answer.body).map_err(|e| bad(e.to_string()))?;
    let events = crate::ingest::parse_events(&bytes).map_err(|e| bad(e.to_string()))?;
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(None);
    };
    let (first, last) = (first.seq, last.seq);
    let appended = state.ingest(host.name.clone(), events).await?;
    if appended.stored.is_empty() {
        return Ok(None); // the host's link delivered them meanwhile
    }
    Ok(Some(Repair {
        kind: RepairKind::MissedEvents,
        host: host.name.clone(),
        instance: None,
        detail: format!(
            "{} events (seq {first} to {last}) were fetched from the host's journal",
            appended.stored.len()
        ),
    }))
}

/// The host's instances (as a registration of its current list), their switches and the
/// host's switch.
async fn read_host(
    state: &ApiState,
    host: &HostRecord,
) -> Result<(Registration, HashMap<String, bool>, bool), AuditError> {
    let bad = |path: &'static str, message: String| AuditError::BadView {
        host: host.name.clone(),
        path,
        message,
    };
    let link = state.hostlink();
    let answer = link.call(host, Method::GET, "/v1/instances", None).await?;
    let answer = crate::hostlink::success(host, answer)?;
    let body = serde_json::json!({
        "host": host.name, "api_url": host.api_url, "instances": answer.body,
    })
    .to_string();
    let registration = crate::ingest::parse_registration(body.as_bytes())
        .map_err(|e| bad("/v1/instances", e.to_string()))?;
    let flags = resync::reported_flags(body.as_bytes());
    let answer = link.call(host, Method::GET, "/v1/reporting", None).await?;
    let answer = crate::hostlink::success(host, answer)?;
    let Some(enabled) = answer.body["enabled"].as_bool() else {
        return Err(bad("/v1/reporting", "no boolean \"enabled\"".into()));
    };
    Ok((registration, flags, enabled))
}

/// The stored instances of `host`, and those of `uuids` the store has on other hosts.
async fn stored_view(
    state: &ApiState,
    host: &str,
    uuids: Vec<String>,
) -> Result<Vec<InstanceRecord>, AuditError> {
    let filter = InstanceFilter {
        host: Some(host.to_owned()),
        state: None,
    };
    let stored = state
        .store(move |s| {
            let mut stored = s.instances(&filter)?;
            let here: HashSet<String> = stored.iter().map(|i| i.uuid.clone()).collect();
            for uuid in uuids.iter().filter(|u| !here.contains(*u)) {
                stored.extend(s.instance(uuid)?);
            }
            Ok(stored)
        })
        .await?;
    Ok(stored)
}

fn on_off(enabled: bool) -> &'static str {
    if enabled {
        "on"
    } else {
        "off"
    }
}
