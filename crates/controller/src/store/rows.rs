//! Reading records out of SQLite rows, for [`super::SqliteStore`] and its helpers: the
//! column lists of hosts, instances and events, and the functions that map one row to one
//! record.

use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::{Map, Value};

use super::{GuestTimeouts, HostRecord, InstanceRecord, RecoveryMode, StoreError, StoredEvent};

pub(super) const HOST_COLUMNS: &str =
    "name, api_url, reporting_enabled, registered_at, last_seen, acked_seq, recovery_mode";
pub(super) const INSTANCE_COLUMNS: &str = "uuid, host, name, state, interval_ms, health, \
     corrective_action, reason, reporting_enabled, corrective_override, updated_at, \
     recovery_mode, vote_secs, shutdown_secs, suspend_secs, resume_secs, restart_secs";
pub(super) const EVENT_COLUMNS: &str = "id, host, host_seq, ts, instance, name, event, details";

pub(super) fn host_by_name(
    conn: &Connection,
    name: &str,
) -> Result<Option<HostRecord>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE name = ?1"))?;
    Ok(stmt.query_row([name], host_row).optional()?)
}

pub(super) fn instance_by_uuid(
    conn: &Connection,
    uuid: &str,
) -> Result<Option<InstanceRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE uuid = ?1"
    ))?;
    Ok(stmt.query_row([uuid], instance_row).optional()?)
}

pub(super) fn host_row(row: &Row<'_>) -> rusqlite::Result<HostRecord> {
    Ok(HostRecord {
        name: row.get(0)?,
        api_url: row.get(1)?,
        reporting_enabled: row.get(2)?,
        registered_at: row.get(3)?,
        last_seen: row.get(4)?,
        acked_seq: row.get(5)?,
        recovery_mode: mode_column(row.get(6)?).unwrap_or_default(),
    })
}

/// A `recovery_mode` column: NULL, or a name this build may not know (then ignored).
pub(super) fn mode_column(text: Option<String>) -> Option<RecoveryMode> {
    text.and_then(|t| t.parse().ok())
}

pub(super) fn instance_row(row: &Row<'_>) -> rusqlite::Result<InstanceRecord> {
    let corrective_override: Option<String> = row.get(9)?;
    Ok(InstanceRecord {
        uuid: row.get(0)?,
        host: row.get(1)?,
        name: row.get(2)?,
        state: row.get(3)?,
        interval_ms: row.get(4)?,
        health: row.get(5)?,
        corrective_action: row.get(6)?,
        reason: row.get(7)?,
        reporting_enabled: row.get(8)?,
        corrective_override: corrective_override.and_then(|a| a.parse().ok()),
        updated_at: row.get(10)?,
        recovery_mode: mode_column(row.get(11)?),
        guest_timeouts: timeouts_columns(row, 12)?,
    })
}

/// The guest's times from five columns starting at `at`; `None` unless all are set.
pub(super) fn timeouts_columns(
    row: &Row<'_>,
    at: usize,
) -> rusqlite::Result<Option<GuestTimeouts>> {
    let secs: [Option<u32>; 5] = [
        row.get(at)?,
        row.get(at + 1)?,
        row.get(at + 2)?,
        row.get(at + 3)?,
        row.get(at + 4)?,
    ];
    Ok(match secs {
        [Some(vote_secs), Some(shutdown_secs), Some(suspend_secs), Some(resume_secs), Some(restart_secs)] => {
            Some(GuestTimeouts {
                vote_secs,
                shutdown_secs,
                suspend_secs,
                resume_secs,
                restart_secs,
            })
        }
        _ => None,
    })
}

pub(super) fn event_row(row: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    event_row_at(row, 0)
}

/// An event whose [`EVENT_COLUMNS`] start at column `at`.
pub(super) fn event_row_at(row: &Row<'_>, at: usize) -> rusqlite::Result<StoredEvent> {
    let details: String = row.get(at + 7)?;
    let details = match serde_json::from_str::<Value>(&details) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    Ok(StoredEvent {
        id: row.get(at)?,
        host: row.get(at + 1)?,
        seq: row.get(at + 2)?,
        ts: row.get(at + 3)?,
        instance: row.get(at + 4)?,
        name: row.get(at + 5)?,
        event: row.get(at + 6)?,
        details,
    })
}
