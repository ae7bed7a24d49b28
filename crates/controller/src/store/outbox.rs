//! The webhook subscriptions and their outbox in SQLite, for [`super::SqliteStore`].
//!
//! `deliveries` holds one row per (subscription, event): inserted by [`enqueue`] in the
//! transaction that stores the event, marked delivered once the subscriber accepts it, and
//! kept afterwards for the counts. A subscription's undelivered rows form its queue, served
//! head first so that each subscriber sees its events in log order.

use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::rows::{event_row_at, EVENT_COLUMNS};
use super::{Delivery, DueDeliveries, StoreError, WebhookRecord, WebhookStatus};
use crate::clock::format_ts;

const WEBHOOK_COLUMNS: &str = "id, url, created_at";

/// The head of every subscription's queue: its oldest undelivered delivery.
const HEADS: &str = "SELECT MIN(id) FROM deliveries WHERE delivered_at_ms IS NULL \
     GROUP BY webhook_id";

/// Enqueues event `event_id` for every subscription, due at `now_ms`.
pub(super) fn enqueue(tx: &Transaction<'_>, event_id: u64, now_ms: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO deliveries (webhook_id, event_id, next_at_ms)
         SELECT id, ?1, ?2 FROM webhooks",
    )?
    .execute(params![event_id, now_ms])?;
    Ok(())
}

pub(super) fn add(
    conn: &Connection,
    url: &str,
    secret: &str,
    now: SystemTime,
) -> Result<WebhookRecord, StoreError> {
    let created_at = format_ts(now);
    conn.execute(
        "INSERT INTO webhooks (url, secret, created_at) VALUES (?1, ?2, ?3)",
        params![url, secret, created_at],
    )?;
    Ok(WebhookRecord {
        id: u64::try_from(conn.last_insert_rowid()).unwrap_or(0),
        url: url.to_owned(),
        created_at,
    })
}

pub(super) fn list(conn: &Connection) -> Result<Vec<WebhookRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id"
    ))?;
    let rows = stmt.query_map([], webhook_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn status(conn: &Connection, id: u64) -> Result<Option<WebhookStatus>, StoreError> {
    let found = conn
        .query_row(
            &format!(
                "SELECT {WEBHOOK_COLUMNS}, last_error, last_error_at FROM webhooks WHERE id = ?1"
            ),
            [id],
            |row| Ok((webhook_row(row)?, row.get(3)?, row.get(4)?)),
        )
        .optional()?;
    let Some((webhook, last_error, last_error_at)) = found else {
        return Ok(None);
    };
    let (pending, delivered, failing) = conn.query_row(
        "SELECT COALESCE(SUM(delivered_at_ms IS NULL), 0),
                COALESCE(SUM(delivered_at_ms IS NOT NULL), 0),
                COALESCE(SUM(delivered_at_ms IS NULL AND attempts > 0), 0)
         FROM deliveries WHERE webhook_id = ?1",
        [id],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    Ok(Some(WebhookStatus {
        webhook,
        pending,
        delivered,
        failing,
        last_error,
        last_error_at,
    }))
}

pub(super) fn delete(conn: &mut Connection, id: u64) -> Result<bool, StoreError> {
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM deliveries WHERE webhook_id = ?1", [id])?;
    let deleted = tx.execute("DELETE FROM webhooks WHERE id = ?1", [id])? > 0;
    tx.commit()?;
    Ok(deleted)
}

pub(super) fn due(conn: &Connection, now_ms: i64, limit: u32) -> Result<DueDeliveries, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT d.id, d.webhook_id, w.url, w.secret, d.attempts, {events}
         FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
             JOIN events e ON e.id = d.event_id
         WHERE d.id IN ({HEADS}) AND d.next_at_ms <= ?1 ORDER BY d.id LIMIT ?2",
        events = prefixed("e.", EVENT_COLUMNS),
    ))?;
    let rows = stmt.query_map(params![now_ms, limit], delivery_row)?;
    let ready = rows.collect::<Result<_, _>>()?;
    let next_at_ms = conn.query_row(
        &format!(
            "SELECT MIN(next_at_ms) FROM deliveries WHERE id IN ({HEADS}) AND next_at_ms > ?1"
        ),
        [now_ms],
        |row| row.get(0),
    )?;
    Ok(DueDeliveries { ready, next_at_ms })
}

pub(super) fn delivered(conn: &Connection, id: u64, now_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE deliveries SET attempts = attempts + 1, delivered_at_ms = ?2 WHERE id = ?1",
        params![id, now_ms],
    )?;
    Ok(())
}

pub(super) fn failed(
    conn: &mut Connection,
    id: u64,
    error: &str,
    next_at_ms: i64,
    now: SystemTime,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE deliveries SET attempts = attempts + 1, last_error = ?2, next_at_ms = ?3
         WHERE id = ?1",
        params![id, error, next_at_ms],
    )?;
    tx.execute(
        "UPDATE webhooks SET last_error = ?2, last_error_at = ?3
         WHERE id = (SELECT webhook_id FROM deliveries WHERE id = ?1)",
        params![id, error, format_ts(now)],
    )?;
    tx.commit()?;
    Ok(())
}

/// `columns` (comma-separated) each with `prefix`.
fn prefixed(prefix: &str, columns: &str) -> String {
    let names: Vec<String> = columns
        .split(',')
        .map(|c| format!("{prefix}{}", c.trim()))
        .collect();
    names.join(", ")
}

fn webhook_row(row: &Row<'_>) -> rusqlite::Result<WebhookRecord> {
    Ok(WebhookRecord {
        id: row.get(0)?,
        url: row.get(1)?,
        created_at: row.get(2)?,
    })
}

/// A delivery row: five delivery columns, then [`EVENT_COLUMNS`].
fn delivery_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: row.get(0)?,
        webhook_id: row.get(1)?,
        url: row.get(2)?,
        secret: row.get(3)?,
        attempts: row.get(4)?,
        event: event_row_at(row, 5)?,
    })
}

#[cfg(test)]
mod tests;
