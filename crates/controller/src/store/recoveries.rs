//! Recovery decisions in SQLite, for [`super::SqliteStore`], and their records.
//!
//! A host agent that leaves a failure to the controller journals `recovery_deferred`. The
//! newest such event of an instance is *pending* until a row in `recoveries` refers to it (or
//! to a later event of the instance): every decision the controller takes about it, including
//! "nothing to do", is one row. So a decision survives a restart and is never taken twice,
//! and a failure the controller had not decided when it stopped is found again at start.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use rusqlite::{params, Connection, Row};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::StoreError;
use crate::clock::{format_ts, unix_ms};

/// Who decides to recover a failed guest: this controller's policy or the VIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryMode {
    /// The controller orders the host agent to apply the corrective action.
    #[default]
    Builtin,
    /// The controller only reports the failure; the VIM recovers the guest.
    Vim,
}

impl RecoveryMode {
    /// The mode's name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryMode::Builtin => "builtin",
            RecoveryMode::Vim => "vim",
        }
    }
}

impl fmt::Display for RecoveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecoveryMode {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "builtin" => Ok(RecoveryMode::Builtin),
            "vim" => Ok(RecoveryMode::Vim),
            _ => Err(()),
        }
    }
}

/// A failure a host agent left to the controller, not decided yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingFailure {
    /// The `recovery_deferred` event's id.
    pub event_id: u64,
    /// The host that deferred it.
    pub host: String,
    /// Instance uuid.
    pub instance: String,
    /// The action the guest asked for (`reboot`, `stop`, …; empty if the event lacks it).
    pub action: String,
    /// What failed (`heartbeat_lost`, `guest_unhealthy`; empty if the event lacks it).
    pub cause: String,
}

/// What the controller decided about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// The host was ordered to apply the action, and started it.
    Ordered,
    /// The recovery limit is reached: the host recorded the guest unrecoverable.
    GaveUp,
    /// The instance or its host is in VIM mode: the VIM recovers it.
    LeftToVim,
    /// Reporting is off for the instance or its host.
    ReportingOff,
    /// The guest came back (or was recovered) before an order was needed.
    Recovered,
    /// The instance is gone from its host.
    Gone,
    /// The corrective action is `log`: nothing to apply.
    Logged,
    /// The host refused the order (its own limit, another recovery running, …).
    RefusedByHost,
}

impl DecisionKind {
    /// The decision's name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Ordered => "ordered",
            DecisionKind::GaveUp => "gave_up",
            DecisionKind::LeftToVim => "left_to_vim",
            DecisionKind::ReportingOff => "reporting_off",
            DecisionKind::Recovered => "recovered",
            DecisionKind::Gone => "gone",
            DecisionKind::Logged => "logged",
            DecisionKind::RefusedByHost => "refused_by_host",
        }
    }
}

/// A decision to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDecision {
    /// The failure decided.
    pub failure: PendingFailure,
    /// The action applied or meant.
    pub action: String,
    /// The decision.
    pub kind: DecisionKind,
    /// Why, for a human.
    pub detail: String,
}

/// A stored recovery decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RecoveryDecision {
    /// The decision's id (increasing).
    pub id: u64,
    /// Instance uuid.
    pub instance: String,
    /// The host that deferred the failure.
    pub host: String,
    /// The `recovery_deferred` event decided.
    pub event_id: u64,
    /// What failed: `heartbeat_lost` or `guest_unhealthy`.
    pub cause: String,
    /// The corrective action applied or meant.
    pub action: String,
    /// When (RFC 3339, UTC).
    pub decided_at: String,
    /// `ordered`, `gave_up`, `left_to_vim`, `reporting_off`, `recovered`, `gone`, `logged`
    /// or `refused_by_host`.
    pub decision: String,
    /// Why, for a human.
    pub detail: String,
}

const DECISION_COLUMNS: &str =
    "id, instance, host, event_id, cause, action, decided_at, decision, detail";

/// The newest `recovery_deferred` event of each instance that no decision covers yet.
pub(super) fn pending(conn: &Connection) -> Result<Vec<PendingFailure>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.id, e.host, e.instance, e.details FROM events e
         WHERE e.id IN (SELECT MAX(id) FROM events WHERE event = 'recovery_deferred'
                        GROUP BY instance)
           AND e.id > COALESCE((SELECT MAX(event_id) FROM recoveries r
                                WHERE r.instance = e.instance), 0)
         ORDER BY e.id",
    )?;
    let rows = stmt.query_map([], |row| {
        let details: String = row.get(3)?;
        let details: Value = serde_json::from_str(&details).unwrap_or(Value::Null);
        let text = |key: &str| details[key].as_str().unwrap_or_default().to_owned();
        Ok(PendingFailure {
            event_id: row.get(0)?,
            host: row.get(1)?,
            instance: row.get(2)?,
            action: text("action"),
            cause: text("cause"),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn record(
    conn: &Connection,
    decision: &NewDecision,
    now: SystemTime,
) -> Result<RecoveryDecision, StoreError> {
    let failure = &decision.failure;
    let decided_at = format_ts(now);
    conn.execute(
        "INSERT INTO recoveries (instance, host, event_id, cause, action, decided_at,
             decided_at_ms, decision, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            failure.instance,
            failure.host,
            failure.event_id,
            failure.cause,
            decision.action,
            decided_at,
            unix_ms(now),
            decision.kind.as_str(),
            decision.detail
        ],
    )?;
    Ok(RecoveryDecision {
        id: u64::try_from(conn.last_insert_rowid()).unwrap_or(0),
        instance: failure.instance.clone(),
        host: failure.host.clone(),
        event_id: failure.event_id,
        cause: failure.cause.clone(),
        action: decision.action.clone(),
        decided_at,
        decision: decision.kind.as_str().to_owned(),
        detail: decision.detail.clone(),
    })
}

/// The instance's decisions, oldest first, at most the newest `limit`.
pub(super) fn of_instance(
    conn: &Connection,
    instance: &str,
    limit: u32,
) -> Result<Vec<RecoveryDecision>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DECISION_COLUMNS} FROM (SELECT * FROM recoveries WHERE instance = ?1
             ORDER BY id DESC LIMIT ?2) ORDER BY id"
    ))?;
    let rows = stmt.query_map(params![instance, limit], decision_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// When the instance's recoveries were ordered since `since_ms`, oldest first.
pub(super) fn ordered_since(
    conn: &Connection,
    instance: &str,
    since_ms: i64,
) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT decided_at_ms FROM recoveries
         WHERE instance = ?1 AND decision = 'ordered' AND decided_at_ms >= ?2 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![instance, since_ms], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn decision_row(row: &Row<'_>) -> rusqlite::Result<RecoveryDecision> {
    Ok(RecoveryDecision {
        id: row.get(0)?,
        instance: row.get(1)?,
        host: row.get(2)?,
        event_id: row.get(3)?,
        cause: row.get(4)?,
        action: row.get(5)?,
        decided_at: row.get(6)?,
        decision: row.get(7)?,
        detail: row.get(8)?,
    })
}
