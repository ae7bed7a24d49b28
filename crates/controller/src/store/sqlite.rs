//! [`Store`] on an embedded SQLite database, `<data_dir>/controller.db`.
//!
//! One connection behind a `std::sync::Mutex`. SQLite admits one writer at a time anyway, and
//! every call here is a short transaction, so a single connection costs no parallelism that
//! matters at the controller's request rates while keeping transactions trivially serial.
//! Calls block (a commit waits for `fsync`), so async code runs them on tokio's blocking pool
//! and never holds the lock across an await. The journal is in WAL mode with
//! `synchronous = FULL`: an event is on disk before the controller acknowledges it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Transaction};
use serde_json::Value;

use super::rows::{
    event_row, host_by_name, host_row, instance_by_uuid, instance_row, EVENT_COLUMNS, HOST_COLUMNS,
    INSTANCE_COLUMNS,
};
use super::vim;
use super::{
    migrations, outbox, recoveries, state_after, Appended, CorrectiveAction, DueDeliveries,
    EventQuery, HostRecord, InstanceFilter, InstanceRecord, NewDecision, NewEvent, PendingFailure,
    RecoveryDecision, RecoveryMode, Registration, Store, StoreError, StoredEvent, WebhookRecord,
    WebhookStatus, GONE,
};
use crate::clock::{format_ts, unix_ms};

/// The database's file name inside the data directory.
pub const FILE_NAME: &str = "controller.db";

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating it and `data_dir` if needed) and migrates `<data_dir>/controller.db`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(FILE_NAME);
        let error = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(error)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(error)?;
        migrations::migrate(&mut conn, &path)?;
        Ok(SqliteStore {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for SqliteStore {
    fn register(&self, registration: &Registration, now: SystemTime) -> Result<u64, StoreError> {
        let now = format_ts(now);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO hosts (name, api_url, registered_at, last_seen) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET api_url = excluded.api_url,
                 last_seen = excluded.last_seen",
            params![registration.host, registration.api_url, now],
        )?;
        let mut listed = HashSet::new();
        for report in &registration.instances {
            tx.execute(
                "INSERT INTO instances (uuid, host, name, state, interval_ms, health,
                     corrective_action, reason, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (uuid) DO UPDATE SET host = excluded.host, name = excluded.name,
                     state = excluded.state, interval_ms = excluded.interval_ms,
                     health = excluded.health, corrective_action = excluded.corrective_action,
                     reason = excluded.reason, updated_at = excluded.updated_at",
                params![
                    report.uuid,
                    registration.host,
                    report.name,
                    report.state,
                    report.interval_ms,
                    report.health,
                    report.corrective_action,
                    report.reason,
                    now
                ],
            )?;
            listed.insert(report.uuid.as_str());
        }
        mark_gone(&tx, &registration.host, &listed, &now)?;
        let acked = acked_seq(&tx, &registration.host)?.unwrap_or(0);
        tx.commit()?;
        Ok(acked)
    }

    fn append_events(
        &self,
        host: &str,
        events: &[NewEvent],
        now: SystemTime,
    ) -> Result<Appended, StoreError> {
        let now_ms = unix_ms(now);
        let now = format_ts(now);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(mut acked) = acked_seq(&tx, host)? else {
            return Err(StoreError::UnknownHost(host.to_owned()));
        };
        let fresh: Vec<&NewEvent> = events.iter().filter(|e| e.seq > acked).collect();
        if fresh.first().is_some_and(|e| e.seq != acked + 1) {
            return Err(StoreError::SequenceGap { acked_seq: acked });
        }
        let mut stored = Vec::with_capacity(fresh.len());
        for event in fresh {
            let new = insert_event(&tx, host, event)?;
            outbox::enqueue(&tx, new.id, now_ms)?;
            stored.push(new);
            apply_to_instance(&tx, host, event, &now)?;
            acked = event.seq;
        }
        tx.execute(
            "UPDATE hosts SET acked_seq = ?2, last_seen = ?3 WHERE name = ?1",
            params![host, acked, now],
        )?;
        tx.commit()?;
        Ok(Appended {
            acked_seq: acked,
            stored,
        })
    }

    fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY name"))?;
        let rows = stmt.query_map([], host_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn host(&self, name: &str) -> Result<Option<HostRecord>, StoreError> {
        host_by_name(&self.conn(), name)
    }

    fn set_host_reporting(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<Option<HostRecord>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE hosts SET reporting_enabled = ?2 WHERE name = ?1",
            params![name, enabled],
        )?;
        host_by_name(&conn, name)
    }

    fn instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances
             WHERE (?1 IS NULL OR host = ?1) AND (?2 IS NULL OR state = ?2) ORDER BY uuid"
        ))?;
        let rows = stmt.query_map(params![filter.host, filter.state], instance_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn instance(&self, uuid: &str) -> Result<Option<InstanceRecord>, StoreError> {
        instance_by_uuid(&self.conn(), uuid)
    }

    fn set_instance_reporting(
        &self,
        uuid: &str,
        enabled: bool,
        now: SystemTime,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE instances SET reporting_enabled = ?2, updated_at = ?3 WHERE uuid = ?1",
            params![uuid, enabled, format_ts(now)],
        )?;
        instance_by_uuid(&conn, uuid)
    }

    fn set_corrective_override(
        &self,
        uuid: &str,
        action: Option<CorrectiveAction>,
        now: SystemTime,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE instances SET corrective_override = ?2, updated_at = ?3 WHERE uuid = ?1",
            params![uuid, action.map(CorrectiveAction::as_str), format_ts(now)],
        )?;
        instance_by_uuid(&conn, uuid)
    }

    fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1 = 1");
        let mut args: Vec<SqlValue> = Vec::new();
        let mut filter = |column: &str, value: SqlValue| {
            args.push(value);
            sql.push_str(&format!(" AND {column} ?{}", args.len()));
        };
        if let Some(instance) = &query.instance {
            filter("instance =", SqlValue::Text(instance.clone()));
        }
        if let Some(host) = &query.host {
            filter("host =", SqlValue::Text(host.clone()));
        }
        if let Some(event) = &query.event {
            filter("event =", SqlValue::Text(event.clone()));
        }
        if let Some(since) = query.since_ms {
            filter("ts_ms >=", SqlValue::Integer(since));
        }
        if let Some(after) = query.after {
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            filter("id >", SqlValue::Integer(after));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", query.limit));
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn last_event_id(&self) -> Result<u64, StoreError> {
        let conn = self.conn();
        let id = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |row| {
            row.get(0)
        })?;
        Ok(id)
    }

    fn add_webhook(
        &self,
        url: &str,
        secret: &str,
        now: SystemTime,
    ) -> Result<WebhookRecord, StoreError> {
        outbox::add(&self.conn(), url, secret, now)
    }

    fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        outbox::list(&self.conn())
    }

    fn webhook(&self, id: u64) -> Result<Option<WebhookStatus>, StoreError> {
        outbox::status(&self.conn(), id)
    }

    fn delete_webhook(&self, id: u64) -> Result<bool, StoreError> {
        outbox::delete(&mut self.conn(), id)
    }

    fn due_deliveries(&self, now_ms: i64, limit: u32) -> Result<DueDeliveries, StoreError> {
        outbox::due(&self.conn(), now_ms, limit)
    }

    fn mark_delivered(&self, id: u64, now_ms: i64) -> Result<(), StoreError> {
        outbox::delivered(&self.conn(), id, now_ms)
    }

    fn mark_failed(
        &self,
        id: u64,
        error: &str,
        next_at_ms: i64,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        outbox::failed(&mut self.conn(), id, error, next_at_ms, now)
    }

    fn set_host_recovery_mode(
        &self,
        name: &str,
        mode: RecoveryMode,
    ) -> Result<Option<HostRecord>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE hosts SET recovery_mode = ?2 WHERE name = ?1",
            params![name, mode.as_str()],
        )?;
        host_by_name(&conn, name)
    }

    fn set_instance_recovery_mode(
        &self,
        uuid: &str,
        mode: Option<RecoveryMode>,
        now: SystemTime,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE instances SET recovery_mode = ?2, updated_at = ?3 WHERE uuid = ?1",
            params![uuid, mode.map(RecoveryMode::as_str), format_ts(now)],
        )?;
        instance_by_uuid(&conn, uuid)
    }

    fn pending_failures(&self) -> Result<Vec<PendingFailure>, StoreError> {
        recoveries::pending(&self.conn())
    }

    fn record_recovery(
        &self,
        decision: &NewDecision,
        now: SystemTime,
    ) -> Result<RecoveryDecision, StoreError> {
        recoveries::record(&self.conn(), decision, now)
    }

    fn starlingx_host(&self, uuid: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT name FROM starlingx_hosts WHERE uuid = ?1")?;
        Ok(stmt.query_row([uuid], |row| row.get(0)).optional()?)
    }

    fn set_starlingx_host(&self, uuid: &str, name: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO starlingx_hosts (uuid, name) VALUES (?1, ?2)
             ON CONFLICT (uuid) DO UPDATE SET name = excluded.name",
            params![uuid, name],
        )?;
        Ok(())
    }

    fn recoveries(&self, uuid: &str, limit: u32) -> Result<Vec<RecoveryDecision>, StoreError> {
        recoveries::of_instance(&self.conn(), uuid, limit)
    }

    fn recoveries_ordered_since(&self, uuid: &str, since_ms: i64) -> Result<Vec<i64>, StoreError> {
        recoveries::ordered_since(&self.conn(), uuid, since_ms)
    }

    fn vim_cursor(&self) -> Result<Option<u64>, StoreError> {
        vim::cursor(&self.conn())
    }

    fn start_vim_cursor(&self) -> Result<u64, StoreError> {
        vim::start(&self.conn())
    }

    fn set_vim_cursor(&self, id: u64) -> Result<(), StoreError> {
        vim::advance(&self.conn(), id)
    }

    fn count_events_after(&self, after: u64) -> Result<u64, StoreError> {
        vim::count_after(&self.conn(), after)
    }

    fn previous_event(
        &self,
        instance: &str,
        before: u64,
        names: &[&str],
    ) -> Result<Option<String>, StoreError> {
        vim::previous(&self.conn(), instance, before, names)
    }
}

/// The host's acknowledged sequence number; `None` if it never registered.
fn acked_seq(tx: &Transaction<'_>, host: &str) -> rusqlite::Result<Option<u64>> {
    tx.query_row(
        "SELECT acked_seq FROM hosts WHERE name = ?1",
        [host],
        |row| row.get(0),
    )
    .optional()
}

/// Marks the host's instances that are not in `listed` as gone.
fn mark_gone(
    tx: &Transaction<'_>,
    host: &str,
    listed: &HashSet<&str>,
    now: &str,
) -> rusqlite::Result<()> {
    let known: Vec<String> = {
        let mut stmt = tx.prepare_cached("SELECT uuid FROM instances WHERE host = ?1")?;
        let rows = stmt.query_map([host], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for uuid in known.iter().filter(|u| !listed.contains(u.as_str())) {
        tx.execute(
            "UPDATE instances SET state = ?2, updated_at = ?3 WHERE uuid = ?1 AND state != ?2",
            params![uuid, GONE, now],
        )?;
    }
    Ok(())
}

fn insert_event(
    tx: &Transaction<'_>,
    host: &str,
    event: &NewEvent,
) -> rusqlite::Result<StoredEvent> {
    let details = Value::Object(event.details.clone()).to_string();
    tx.execute(
        "INSERT INTO events (host, host_seq, ts, ts_ms, instance, name, event, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            host,
            event.seq,
            event.ts,
            event.ts_ms,
            event.instance,
            event.name,
            event.event,
            details
        ],
    )?;
    let id = u64::try_from(tx.last_insert_rowid()).unwrap_or(0);
    Ok(StoredEvent {
        id,
        host: host.to_owned(),
        seq: event.seq,
        ts: event.ts.clone(),
        instance: event.instance.clone(),
        name: event.name.clone(),
        event: event.event.clone(),
        details: event.details.clone(),
    })
}

/// Creates or updates the event's instance: its host, name and the state the event implies.
fn apply_to_instance(
    tx: &Transaction<'_>,
    host: &str,
    event: &NewEvent,
    now: &str,
) -> rusqlite::Result<()> {
    let state = state_after(&event.event);
    tx.execute(
        "INSERT INTO instances (uuid, host, name, state, updated_at)
         VALUES (?1, ?2, ?3, COALESCE(?4, 'unknown'), ?5)
         ON CONFLICT (uuid) DO UPDATE SET host = excluded.host,
             name = CASE WHEN excluded.name != '' THEN excluded.name ELSE instances.name END,
             state = COALESCE(?4, instances.state), updated_at = excluded.updated_at",
        params![event.instance, host, event.name, state, now],
    )?;
    let text = |key: &str| event.details.get(key).and_then(Value::as_str);
    match event.event.as_str() {
        "guest_unhealthy" => {
            tx.execute(
                "UPDATE instances SET health = 'unhealthy', reason = COALESCE(?2, reason),
                     corrective_action = COALESCE(?3, corrective_action) WHERE uuid = ?1",
                params![event.instance, text("reason"), text("action")],
            )?;
        }
        "heartbeat_started" => {
            let interval = event
                .details
                .get("interval_ms")
                .and_then(Value::as_u64)
                .and_then(|ms| u32::try_from(ms).ok());
            tx.execute(
                "UPDATE instances SET health = 'healthy', reason = '',
                     interval_ms = COALESCE(?2, interval_ms),
                     corrective_action = COALESCE(?3, corrective_action) WHERE uuid = ?1",
                params![event.instance, interval, text("action")],
            )?;
            let secs = |key: &str| {
                event
                    .details
                    .get(key)
                    .and_then(Value::as_u64)
                    .and_then(|s| u32::try_from(s).ok())
            };
            tx.execute(
                "UPDATE instances SET vote_secs = COALESCE(?2, vote_secs),
                     shutdown_secs = COALESCE(?3, shutdown_secs),
                     suspend_secs = COALESCE(?4, suspend_secs),
                     resume_secs = COALESCE(?5, resume_secs),
                     restart_secs = COALESCE(?6, restart_secs) WHERE uuid = ?1",
                params![
                    event.instance,
                    secs("vote_secs"),
                    secs("shutdown_secs"),
                    secs("suspend_secs"),
                    secs("resume_secs"),
                    secs("restart_secs")
                ],
            )?;
        }
        _ => {}
    }
    Ok(())
}
