//! The VIM event transmitter's position in the event log, in SQLite, for
//! [`super::SqliteStore`].
//!
//! `vim_cursor` holds one row (`id = 1`): the id of the last event whose PATCHes to the VIM
//! are done. The transmitter ([`crate::vim`]) creates the row at the newest event when it
//! first runs, so a controller that starts reporting to a VIM does not replay its history,
//! and moves it forward after each event.

use rusqlite::{params_from_iter, Connection, OptionalExtension};

use super::StoreError;

/// The stored position; `None` before the transmitter first ran.
pub(super) fn cursor(conn: &Connection) -> Result<Option<u64>, StoreError> {
    let found = conn
        .query_row(
            "SELECT last_event_id FROM vim_cursor WHERE id = 1",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(found)
}

/// The stored position, created at the newest event's id (0 if none) when there is none.
pub(super) fn start(conn: &Connection) -> Result<u64, StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO vim_cursor (id, last_event_id)
         SELECT 1, COALESCE(MAX(id), 0) FROM events",
        [],
    )?;
    Ok(cursor(conn)?.unwrap_or(0))
}

/// Moves the position to `event_id`.
pub(super) fn advance(conn: &Connection, event_id: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO vim_cursor (id, last_event_id) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET last_event_id = excluded.last_event_id",
        [event_id],
    )?;
    Ok(())
}

/// How many events have an id above `after`.
pub(super) fn count_after(conn: &Connection, after: u64) -> Result<u64, StoreError> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let count = conn.query_row(
        "SELECT COUNT(*) FROM events WHERE id > ?1",
        [after],
        |row| row.get(0),
    )?;
    Ok(count)
}

/// The name of `instance`'s newest event with an id below `before` and a name in `names`.
pub(super) fn previous(
    conn: &Connection,
    instance: &str,
    before: u64,
    names: &[&str],
) -> Result<Option<String>, StoreError> {
    if names.is_empty() {
        return Ok(None);
    }
    let marks = vec!["?"; names.len()].join(", ");
    let sql = format!(
        "SELECT event FROM events WHERE instance = ? AND id < ? AND event IN ({marks})
         ORDER BY id DESC LIMIT 1"
    );
    let before = i64::try_from(before).unwrap_or(i64::MAX);
    let mut args: Vec<rusqlite::types::Value> = vec![instance.to_owned().into(), before.into()];
    args.extend(names.iter().map(|n| (*n).to_owned().into()));
    let found = conn
        .prepare_cached(&sql)?
        .query_row(params_from_iter(args), |row| row.get(0))
        .optional()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::Map;

    use crate::store::{NewEvent, Registration, SqliteStore, Store};

    fn event(seq: u64, instance: &str, name: &str) -> NewEvent {
        NewEvent {
            seq,
            ts: "2026-01-02T03:04:05.000Z".into(),
            ts_ms: 1_767_323_045_000,
            instance: instance.into(),
            name: String::new(),
            event: name.into(),
            details: Map::new(),
        }
    }

    fn store_with(events: &[(&str, &str)]) -> (tether_testkit::TempDir, SqliteStore) {
        let dir = tether_testkit::temp_dir();
        let store = SqliteStore::open(dir.path()).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_767_323_045);
        let registration = Registration {
            host: "c0".into(),
            api_url: None,
            instances: Vec::new(),
        };
        store.register(&registration, now).unwrap();
        let events: Vec<NewEvent> = (1..)
            .zip(events)
            .map(|(seq, (instance, name))| event(seq, instance, name))
            .collect();
        store.append_events("c0", &events, now).unwrap();
        (dir, store)
    }

    #[test]
    fn the_cursor_starts_at_the_newest_event_and_survives_a_reopen() {
        let (dir, store) = store_with(&[("u1", "a"), ("u1", "b")]);
        assert_eq!(store.vim_cursor().unwrap(), None);
        assert_eq!(store.start_vim_cursor().unwrap(), 2);
        store.set_vim_cursor(1).unwrap();
        assert_eq!(store.start_vim_cursor().unwrap(), 1, "created only once");
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.vim_cursor().unwrap(), Some(1));
        assert_eq!(store.count_events_after(1).unwrap(), 1);
        assert_eq!(store.count_events_after(0).unwrap(), 2);
        assert_eq!(store.count_events_after(u64::MAX).unwrap(), 0);
    }

    #[test]
    fn an_empty_log_starts_the_cursor_at_zero() {
        let (_dir, store) = store_with(&[]);
        assert_eq!(store.start_vim_cursor().unwrap(), 0);
        assert_eq!(store.vim_cursor().unwrap(), Some(0));
    }

    #[test]
    fn the_previous_event_is_the_instances_newest_named_one_before() {
        let (_dir, store) = store_with(&[
            ("u1", "heartbeat_started"),
            ("u2", "heartbeat_lost"),
            ("u1", "heartbeat_missed"),
            ("u1", "heartbeat_lost"),
        ]);
        let names = ["heartbeat_started", "heartbeat_lost"];
        let previous = |instance, before| store.previous_event(instance, before, &names).unwrap();
        assert_eq!(previous("u1", 4).as_deref(), Some("heartbeat_started"));
        assert_eq!(previous("u1", 5).as_deref(), Some("heartbeat_lost"));
        assert_eq!(previous("u1", 1), None);
        assert_eq!(previous("u3", 5), None);
        assert_eq!(store.previous_event("u1", 5, &[]).unwrap(), None);
    }
}
