//! The outbox on a real SQLite file: enqueueing with the events, queue heads, retries, counts.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Map;

use crate::store::*;

const T0: i64 = 1_700_000_000_000;

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms as u64)
}

fn event(seq: u64) -> NewEvent {
    NewEvent {
        seq,
        ts: "2026-01-02T03:04:05.000Z".into(),
        ts_ms: T0,
        instance: "u1".into(),
        name: String::new(),
        event: "heartbeat_lost".into(),
        details: Map::new(),
    }
}

/// A store with host `h1` registered.
fn store() -> (tether_testkit::TempDir, SqliteStore) {
    let dir = tether_testkit::temp_dir();
    let store = SqliteStore::open(dir.path()).unwrap();
    let registration = Registration {
        host: "h1".into(),
        api_url: None,
        instances: vec![],
    };
    store.register(&registration, at(T0)).unwrap();
    (dir, store)
}

fn subscribe(store: &SqliteStore, name: &str) -> WebhookRecord {
    let secret = format!("secret-{name}-0123456789");
    store
        .add_webhook(&format!("http://{name}/"), &secret, at(T0))
        .unwrap()
}

fn append(store: &SqliteStore, events: &[NewEvent]) {
    store.append_events("h1", events, at(T0)).unwrap();
}

fn ready(due: &DueDeliveries) -> Vec<(u64, u64)> {
    due.ready
        .iter()
        .map(|d| (d.webhook_id, d.event.seq))
        .collect()
}

#[test]
fn events_are_enqueued_for_the_subscriptions_that_exist_when_they_are_stored() {
    let (_dir, store) = store();
    let a = subscribe(&store, "a");
    append(&store, &[event(1), event(2)]);
    let b = subscribe(&store, "b");
    append(&store, &[event(2), event(3)]);
    assert_eq!(store.webhooks().unwrap(), [a.clone(), b.clone()]);
    // One head per subscription, oldest first; the replayed seq 2 was not enqueued again.
    let due = store.due_deliveries(T0, 10).unwrap();
    assert_eq!(ready(&due), [(a.id, 1), (b.id, 3)]);
    assert_eq!(due.ready[0].secret, "secret-a-0123456789");
    assert_eq!(due.ready[0].url, "http://a/");
    assert_eq!(due.next_at_ms, None);
    assert_eq!(store.webhook(a.id).unwrap().unwrap().pending, 3);
    assert_eq!(store.webhook(b.id).unwrap().unwrap().pending, 1);
    assert!(store.due_deliveries(T0 - 1, 10).unwrap().ready.is_empty());
    assert_eq!(store.due_deliveries(T0, 1).unwrap().ready.len(), 1);
}

#[test]
fn a_failed_head_waits_for_its_retry_and_holds_its_queue_back() {
    let (_dir, store) = store();
    let a = subscribe(&store, "a");
    append(&store, &[event(1), event(2)]);
    let head = store.due_deliveries(T0, 10).unwrap().ready[0].clone();
    store
        .mark_failed(head.id, "HTTP 500", T0 + 1000, at(T0 + 5))
        .unwrap();
    let due = store.due_deliveries(T0 + 10, 10).unwrap();
    assert!(due.ready.is_empty(), "{due:?}");
    assert_eq!(due.next_at_ms, Some(T0 + 1000));
    let status = store.webhook(a.id).unwrap().unwrap();
    assert_eq!(
        (status.pending, status.failing, status.delivered),
        (2, 1, 0)
    );
    assert_eq!(status.last_error.as_deref(), Some("HTTP 500"));
    assert!(status.last_error_at.is_some());

    let retry = store.due_deliveries(T0 + 1000, 10).unwrap().ready[0].clone();
    assert_eq!((retry.id, retry.attempts), (head.id, 1));
    store.mark_delivered(retry.id, T0 + 1001).unwrap();
    assert_eq!(
        ready(&store.due_deliveries(T0 + 1001, 10).unwrap()),
        [(a.id, 2)]
    );
    let status = store.webhook(a.id).unwrap().unwrap();
    assert_eq!(
        (status.pending, status.failing, status.delivered),
        (1, 0, 1)
    );
}

#[test]
fn deleting_a_subscription_drops_its_deliveries_and_survives_a_reopen() {
    let (dir, store) = store();
    let a = subscribe(&store, "a");
    let b = subscribe(&store, "b");
    append(&store, &[event(1)]);
    assert!(store.delete_webhook(a.id).unwrap());
    assert!(!store.delete_webhook(a.id).unwrap());
    assert_eq!(store.webhook(a.id).unwrap(), None);
    // A late result for a deleted delivery changes nothing.
    store.mark_delivered(1, T0).unwrap();
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.webhooks().unwrap(), std::slice::from_ref(&b));
    assert_eq!(ready(&store.due_deliveries(T0, 10).unwrap()), [(b.id, 1)]);
    append(&store, &[event(2)]);
    assert_eq!(store.webhook(b.id).unwrap().unwrap().pending, 2);
}
