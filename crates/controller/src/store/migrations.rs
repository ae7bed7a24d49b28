//! The database schema, as numbered migrations applied in order.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Opening a database applies
//! the missing ones, each in its own transaction together with its new `user_version`, so a
//! crash leaves the file at one version or the next. A file whose version is above
//! [`SCHEMA_VERSION`] was written by a newer controller and is refused: this build cannot know
//! what the newer schema means. Migrations are only ever appended, never edited.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`.
const MIGRATIONS: &[&str] = &[
    // 1: hosts, instances and the event log.
    "CREATE TABLE hosts (
        name TEXT PRIMARY KEY NOT NULL,
        api_url TEXT,
        reporting_enabled INTEGER NOT NULL DEFAULT 1,
        registered_at TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        acked_seq INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE instances (
        uuid TEXT PRIMARY KEY NOT NULL,
        host TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        interval_ms INTEGER,
        health TEXT,
        corrective_action TEXT,
        reason TEXT NOT NULL DEFAULT '',
        reporting_enabled INTEGER NOT NULL DEFAULT 1,
        corrective_override TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX instances_host ON instances (host);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        host TEXT NOT NULL,
        host_seq INTEGER NOT NULL,
        ts TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        instance TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        event TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '{}',
        UNIQUE (host, host_seq)
    );
    CREATE INDEX events_instance ON events (instance, id);
    CREATE INDEX events_ts ON events (ts_ms);",
    // 2: webhook subscriptions and their outbox, one delivery per (webhook, event).
    "CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_error TEXT,
        last_error_at TEXT
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        webhook_id INTEGER NOT NULL,
        event_id INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at_ms INTEGER NOT NULL,
        last_error TEXT,
        delivered_at_ms INTEGER,
        UNIQUE (webhook_id, event_id)
    );
    CREATE INDEX deliveries_pending ON deliveries (webhook_id, id)
        WHERE delivered_at_ms IS NULL;",
    // 3: who recovers a failed guest (per host, per instance), the recovery decisions taken,
    // the guest's notice times, the StarlingX VIM's host uuids, and the VIM event
    // transmitter's position in the event log.
    "ALTER TABLE hosts ADD COLUMN recovery_mode TEXT;
    ALTER TABLE instances ADD COLUMN recovery_mode TEXT;
    ALTER TABLE instances ADD COLUMN vote_secs INTEGER;
    ALTER TABLE instances ADD COLUMN shutdown_secs INTEGER;
    ALTER TABLE instances ADD COLUMN suspend_secs INTEGER;
    ALTER TABLE instances ADD COLUMN resume_secs INTEGER;
    ALTER TABLE instances ADD COLUMN restart_secs INTEGER;
    CREATE TABLE starlingx_hosts (
        uuid TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL
    );
    CREATE TABLE recoveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        instance TEXT NOT NULL,
        host TEXT NOT NULL,
        event_id INTEGER NOT NULL,
        cause TEXT NOT NULL,
        action TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        decided_at_ms INTEGER NOT NULL,
        decision TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX recoveries_instance ON recoveries (instance, id);
    CREATE INDEX events_event ON events (event, instance, id);
    CREATE TABLE vim_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_event_id INTEGER NOT NULL
    );",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database at `path` (open as `conn`) up to [`SCHEMA_VERSION`].
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for version in found + 1..=SCHEMA_VERSION {
        let error = |source| StoreError::Migrate {
            path: path.to_owned(),
            version,
            source,
        };
        let sql = MIGRATIONS[(version - 1) as usize];
        let tx = conn.transaction().map_err(error)?;
        tx.execute_batch(sql).map_err(error)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(error)?;
        tx.commit().map_err(error)?;
        tracing::info!(path = %path.display(), version, "Migrated the controller database");
    }
    Ok(())
}
