//! The SQLite store on real database files in temporary directories.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use rusqlite::Connection;
use serde_json::json;

use super::*;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_700_000_000_000)
}

fn report(uuid: &str, state: &str) -> InstanceReport {
    InstanceReport {
        uuid: uuid.into(),
        name: format!("vm-{uuid}"),
        state: state.into(),
        interval_ms: Some(1000),
        health: Some("healthy".into()),
        corrective_action: Some("reboot".into()),
        reason: String::new(),
    }
}

fn registration(host: &str, instances: Vec<InstanceReport>) -> Registration {
    Registration {
        host: host.into(),
        api_url: Some("http://10.0.0.1:7000".into()),
        instances,
    }
}

fn event(seq: u64, instance: &str, name: &str, details: Value) -> NewEvent {
    let ts_ms = 1_700_000_000_000 + seq as i64 * 1000;
    NewEvent {
        seq,
        ts: crate::clock::format_ts(UNIX_EPOCH + Duration::from_millis(ts_ms as u64)),
        ts_ms,
        instance: instance.into(),
        name: String::new(),
        event: name.into(),
        details: details.as_object().cloned().unwrap_or_default(),
    }
}

fn user_version(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_version_0_file_is_migrated_and_a_current_one_opens_unchanged() {
    let dir = tether_testkit::temp_dir();
    let path = dir.path().join(FILE_NAME);
    // An existing but empty database: schema version 0.
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 0; CREATE TABLE unrelated (x);")
        .unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.register(&registration("h1", vec![]), now()).unwrap();
    drop(store);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.hosts().unwrap().len(), 1);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
}

#[test]
fn a_database_from_a_newer_controller_is_refused() {
    let dir = tether_testkit::temp_dir();
    let path = dir.path().join(FILE_NAME);
    drop(SqliteStore::open(dir.path()).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = SqliteStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found, .. } if found == SCHEMA_VERSION + 1));
    let text = err.to_string();
    assert!(text.contains("newer than this controller"), "{text}");
}

#[test]
fn the_database_uses_the_write_ahead_log() {
    let dir = tether_testkit::temp_dir();
    let store = SqliteStore::open(dir.path()).unwrap();
    let conn = Connection::open(store.path()).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tether_testkit::temp_dir();
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .register(
            &registration("h1", vec![report("a", "heartbeating")]),
            now(),
        )
        .unwrap();
    let times = json!({"vote_secs": 31, "shutdown_secs": 32, "suspend_secs": 33,
        "resume_secs": 34, "restart_secs": 301});
    let events = [
        event(1, "a", "heartbeat_started", times),
        event(2, "a", "heartbeat_lost", json!({"misses": 3})),
        event(3, "a", "recovery_started", json!({"action": "reboot"})),
    ];
    store.append_events("h1", &events, now()).unwrap();
    store.set_host_reporting("h1", false).unwrap();
    store
        .set_host_recovery_mode("h1", RecoveryMode::Vim)
        .unwrap();
    store
        .set_instance_recovery_mode("a", Some(RecoveryMode::Builtin), now())
        .unwrap();
    store
        .set_starlingx_host("8d80875b-0000-4000-8000-000000000001", "h1")
        .unwrap();
    store.set_instance_reporting("a", false, now()).unwrap();
    store
        .set_corrective_override("a", Some(CorrectiveAction::Stop), now())
        .unwrap();
    drop(store);

    let store = SqliteStore::open(dir.path()).unwrap();
    let host = store.host("h1").unwrap().unwrap();
    assert!(!host.reporting_enabled);
    assert_eq!(host.acked_seq, 3);
    assert_eq!(host.recovery_mode, RecoveryMode::Vim);
    let learnt = store.starlingx_host("8d80875b-0000-4000-8000-000000000001");
    assert_eq!(learnt.unwrap().as_deref(), Some("h1"));
    assert_eq!(store.starlingx_host("other").unwrap(), None);
    assert_eq!(host.api_url.as_deref(), Some("http://10.0.0.1:7000"));
    let a = store.instance("a").unwrap().unwrap();
    assert_eq!(a.state, "recovering");
    assert!(!a.reporting_enabled);
    assert_eq!(a.corrective_override, Some(CorrectiveAction::Stop));
    assert_eq!(a.recovery_mode, Some(RecoveryMode::Builtin));
    let times = a.guest_timeouts.unwrap();
    assert_eq!(
        (times.vote_secs, times.shutdown_secs, times.suspend_secs),
        (31, 32, 33)
    );
    assert_eq!((times.resume_secs, times.restart_secs), (34, 301));
    let stored = store.events(&EventQuery::default()).unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[1].details["misses"], 3);
    assert_eq!(stored[2].event, "recovery_started");
    assert!(stored[1].id < stored[2].id);
}

#[test]
fn replayed_events_are_ignored_and_a_gap_stores_nothing() {
    let dir = tether_testkit::temp_dir();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.register(&registration("h1", vec![]), now()).unwrap();
    let first = [event(
        1,
        "a",
        "heartbeat_started",
        json!({"interval_ms": 500}),
    )];
    assert_eq!(
        store.append_events("h1", &first, now()).unwrap().acked_seq,
        1
    );
    let again = [first[0].clone(), event(2, "a", "heartbeat_lost", json!({}))];
    let appended = store.append_events("h1", &again, now()).unwrap();
    assert_eq!(appended.acked_seq, 2);
    assert_eq!(appended.stored.len(), 1);
    assert_eq!(appended.stored[0].seq, 2);

    let gap = [event(4, "a", "heartbeat_started", json!({}))];
    let err = store.append_events("h1", &gap, now()).unwrap_err();
    assert!(matches!(err, StoreError::SequenceGap { acked_seq: 2 }));
    assert_eq!(store.events(&EventQuery::default()).unwrap().len(), 2);
    assert_eq!(store.instance("a").unwrap().unwrap().state, "lost");
    assert_eq!(store.instance("a").unwrap().unwrap().interval_ms, Some(500));

    let err = store.append_events("nobody", &first, now()).unwrap_err();
    assert!(matches!(err, StoreError::UnknownHost(h) if h == "nobody"));
}

#[test]
fn events_set_the_states_of_their_instances() {
    let dir = tether_testkit::temp_dir();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.register(&registration("h1", vec![]), now()).unwrap();
    let cases = [
        ("heartbeat_started", "heartbeating"),
        ("heartbeat_lost", "lost"),
        ("guest_unhealthy", "unhealthy"),
        ("guest_exited", "exited"),
        ("heartbeat_held", "held"),
        ("channel_disconnected", "connecting"),
        ("recovery_started", "recovering"),
        ("unrecoverable", "unrecoverable"),
    ];
    for (seq, (name, state)) in (1..).zip(cases) {
        let e = event(
            seq,
            "a",
            name,
            json!({"reason": "disk full", "action": "stop"}),
        );
        store.append_events("h1", &[e], now()).unwrap();
        assert_eq!(store.instance("a").unwrap().unwrap().state, state, "{name}");
        if name == "guest_unhealthy" {
            let a = store.instance("a").unwrap().unwrap();
            assert_eq!(a.reason, "disk full");
            assert_eq!(a.corrective_action.as_deref(), Some("stop"));
            assert_eq!(a.health.as_deref(), Some("unhealthy"));
        }
    }
    let e = event(9, "a", "heartbeat_missed", json!({}));
    store.append_events("h1", &[e], now()).unwrap();
    assert_eq!(store.instance("a").unwrap().unwrap().state, "unrecoverable");
}

#[test]
fn a_registration_marks_instances_it_leaves_out_as_gone() {
    let dir = tether_testkit::temp_dir();
    let store = SqliteStore::open(dir.path()).unwrap();
    let both = vec![report("a", "heartbeating"), report("b", "lost")];
    store.register(&registration("h1", both), now()).unwrap();
    store
        .register(
            &registration("h2", vec![report("c", "heartbeating")]),
            now(),
        )
        .unwrap();
    store
        .register(
            &registration("h1", vec![report("b", "heartbeating")]),
            now(),
        )
        .unwrap();
    assert_eq!(store.instance("a").unwrap().unwrap().state, GONE);
    assert_eq!(store.instance("b").unwrap().unwrap().state, "heartbeating");
    assert_eq!(store.instance("c").unwrap().unwrap().state, "heartbeating");
    let on_h1 = InstanceFilter {
        host: Some("h1".into()),
        state: None,
    };
    assert_eq!(store.instances(&on_h1).unwrap().len(), 2);
    let gone = InstanceFilter {
        host: None,
        state: Some(GONE.into()),
    };
    let uuids: Vec<_> = store
        .instances(&gone)
        .unwrap()
        .into_iter()
        .map(|i| i.uuid)
        .collect();
    assert_eq!(uuids, ["a"]);
}

#[test]
fn event_queries_filter_and_page() {
    let dir = tether_testkit::temp_dir();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.register(&registration("h1", vec![]), now()).unwrap();
    store.register(&registration("h2", vec![]), now()).unwrap();
    let h1: Vec<_> = (1..=6)
        .map(|seq| {
            let kind = if seq % 2 == 0 {
                "heartbeat_lost"
            } else {
                "heartbeat_started"
            };
            event(seq, if seq <= 3 { "a" } else { "b" }, kind, json!({}))
        })
        .collect();
    store.append_events("h1", &h1, now()).unwrap();
    store
        .append_events("h2", &[event(1, "c", "heartbeat_lost", json!({}))], now())
        .unwrap();
    let seqs = |query: EventQuery| -> Vec<(String, u64)> {
        let events = store.events(&query).unwrap();
        events.into_iter().map(|e| (e.host, e.seq)).collect()
    };
    let h = |s: &str, n: u64| (s.to_owned(), n);
    let by_instance = EventQuery {
        instance: Some("a".into()),
        ..EventQuery::default()
    };
    assert_eq!(seqs(by_instance), [h("h1", 1), h("h1", 2), h("h1", 3)]);
    let by_host_and_type = EventQuery {
        host: Some("h1".into()),
        event: Some("heartbeat_lost".into()),
        ..EventQuery::default()
    };
    assert_eq!(seqs(by_host_and_type), [h("h1", 2), h("h1", 4), h("h1", 6)]);
    let since = EventQuery {
        since_ms: Some(1_700_000_000_000 + 5_000),
        host: Some("h1".into()),
        ..EventQuery::default()
    };
    assert_eq!(seqs(since), [h("h1", 5), h("h1", 6)]);
    let all = store.events(&EventQuery::default()).unwrap();
    assert_eq!(all.len(), 7);
    let page = EventQuery {
        after: Some(all[2].id),
        limit: 2,
        ..EventQuery::default()
    };
    assert_eq!(seqs(page), [h("h1", 4), h("h1", 5)]);
}
