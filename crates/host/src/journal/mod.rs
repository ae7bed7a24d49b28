//! The journal: every state change and action, one JSON object per line, appended.
//!
//! Supervisors send [`Event`]s through a cheap, cloneable [`Journal`] handle; a single
//! [`JournalWriter`] task formats each one as a line (`seq`, `ts`, `instance`, `event`, then
//! the event's fields) and writes it with one `write` call, so a line is never interleaved and
//! is in the file (the kernel's page cache) as soon as it is written. The write is a small
//! blocking append to a local file, done on the writer task itself: that keeps the order
//! strict and costs microseconds per event, and events are rare (state changes, never one per
//! heartbeat). On shutdown the writer drains every queued event before it returns.
//!
//! `seq` numbers the lines of one host agent 1, 2, 3, … with no gap, across restarts: at open
//! the writer reads the end of the existing file backwards ([`tail`]) and continues from its
//! last complete line. A torn last line (a crash mid-write) is ended with a newline and left
//! as it is; readers skip it and its number is not used. After each line the writer publishes
//! its `seq` on a [`watch`] channel ([`JournalWriter::written`]), which the controller link
//! follows; the link reads the lines themselves back from the file ([`JournalReader`]), so
//! the file stays the single durable record of what the controller has not acknowledged.
//!
//! Format version: lines carry no version key; fields are only ever added, never renamed.
//! `seq` was added first in each line; readers accept lines without it (older journals).

mod read;
mod tail;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

pub use read::{events_body, JournalReader, Sequenced};

/// The `event` names written to the journal (pinned: other tools read them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The agent connected to the guest's channel socket.
    ChannelConnected,
    /// The channel closed or was closed (`reason` says why).
    ChannelDisconnected,
    /// The first healthy answer after an `init` (`interval_ms`, `action`, and the guest's
    /// `vote_secs`, `shutdown_secs`, `suspend_secs`, `resume_secs`, `restart_secs`).
    HeartbeatStarted,
    /// A challenge went unanswered for an interval.
    HeartbeatMissed,
    /// `miss_threshold + 1` intervals in a row went unanswered.
    HeartbeatLost,
    /// The guest answered unhealthy and asked for an action.
    GuestUnhealthy,
    /// The guest daemon said it was exiting (not a failure).
    GuestExited,
    /// A corrective action was left to the controller (`action`, `cause`).
    RecoveryDeferred,
    /// A corrective action was handed to the hypervisor.
    RecoveryStarted,
    /// The hypervisor confirmed the action.
    RecoveryDone,
    /// The hypervisor could not carry out the action (`error` holds the cause chain).
    RecoveryFailed,
    /// The guest needed more recoveries than allowed per window; it is only logged now.
    Unrecoverable,
    /// The guest sent something the agent refused (rate-limited).
    ProtocolError,
    /// Loss was held back during a planned disruption; waiting for the guest's `init`.
    HeartbeatHeld,
    /// A lifecycle operation started (`operation`, `action`).
    OperationStarted,
    /// A lifecycle operation ended (`outcome`: `done`, `rejected`, `failed`; `reason`; for a
    /// single step also `only` and the guest's `vote_result`).
    OperationFinished,
}

impl EventKind {
    /// Every event, in declaration order.
    pub const ALL: [EventKind; 16] = [
        EventKind::ChannelConnected,
        EventKind::ChannelDisconnected,
        EventKind::HeartbeatStarted,
        EventKind::HeartbeatMissed,
        EventKind::HeartbeatLost,
        EventKind::GuestUnhealthy,
        EventKind::GuestExited,
        EventKind::RecoveryDeferred,
        EventKind::RecoveryStarted,
        EventKind::RecoveryDone,
        EventKind::RecoveryFailed,
        EventKind::Unrecoverable,
        EventKind::ProtocolError,
        EventKind::HeartbeatHeld,
        EventKind::OperationStarted,
        EventKind::OperationFinished,
    ];

    /// The name written to the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ChannelConnected => "channel_connected",
            EventKind::ChannelDisconnected => "channel_disconnected",
            EventKind::HeartbeatStarted => "heartbeat_started",
            EventKind::HeartbeatMissed => "heartbeat_missed",
            EventKind::HeartbeatLost => "heartbeat_lost",
            EventKind::GuestUnhealthy => "guest_unhealthy",
            EventKind::GuestExited => "guest_exited",
            EventKind::RecoveryDeferred => "recovery_deferred",
            EventKind::RecoveryStarted => "recovery_started",
            EventKind::RecoveryDone => "recovery_done",
            EventKind::RecoveryFailed => "recovery_failed",
            EventKind::Unrecoverable => "unrecoverable",
            EventKind::ProtocolError => "protocol_error",
            EventKind::HeartbeatHeld => "heartbeat_held",
            EventKind::OperationStarted => "operation_started",
            EventKind::OperationFinished => "operation_finished",
        }
    }
}

/// The optional fields of an event; unset ones are left out of the line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Details {
    /// A corrective action (`reboot`, `stop`, `log`, `none`, `unknown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    /// Why a recovery was started (`heartbeat_lost`, `guest_unhealthy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    /// Free text: the guest's `log_msg`, a disconnect reason, a nack text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Misses in a row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub misses: Option<u32>,
    /// Round-trip time of an answer, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u64>,
    /// The heartbeat interval in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// An error with its whole cause chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A lifecycle operation's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// How a lifecycle operation ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// Who ordered a recovery, when not this agent on its own (`controller`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<&'static str>,
    /// Similar events held back by a rate limit since the last one written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    /// The guest's restart time from its `init` (`heartbeat_started`), in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_secs: Option<u32>,
    /// The guest's vote time from its `init` (`heartbeat_started`), in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vote_secs: Option<u32>,
    /// The guest's shutdown notice time from its `init` (`heartbeat_started`), in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_secs: Option<u32>,
    /// The guest's suspend notice time from its `init` (`heartbeat_started`), in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspend_secs: Option<u32>,
    /// The guest's resume notice time from its `init` (`heartbeat_started`), in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_secs: Option<u32>,
    /// The single step a lifecycle operation ran (`vote`, `notify`); unset for the full
    /// sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only: Option<&'static str>,
    /// The guest's answer to that step (`accept`, `reject`, `complete`, `timeout`, `error`);
    /// unset when it did not answer (no answer in time, or not heartbeating).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vote_result: Option<&'static str>,
}

/// One journal event.
#[derive(Debug, Clone)]
pub struct Event {
    /// When it happened (wall clock).
    pub at: SystemTime,
    /// Instance uuid.
    pub instance: Arc<str>,
    /// Instance name from the guest's `init` (empty before one).
    pub name: String,
    /// What happened.
    pub kind: EventKind,
    /// Its fields.
    pub details: Details,
}

/// The journal file cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("Cannot open the journal {path}")]
pub struct JournalError {
    /// The journal file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Sends events to the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::UnboundedSender<Event>,
}

impl Journal {
    /// Queues an event. Never blocks; events sent after the writer stopped are dropped.
    pub fn record(&self, event: Event) {
        let _ = self.tx.send(event);
    }
}

/// The single task that appends events to the file.
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    file: File,
    rx: mpsc::UnboundedReceiver<Event>,
    /// The `seq` of the last line written.
    written: watch::Sender<u64>,
    /// A write failed part-way: the next line starts with a newline to end the partial one.
    dirty: bool,
}

/// Opens (creating it and its directories) the journal for appending, continuing its `seq`.
pub fn open(path: &Path) -> Result<(Journal, JournalWriter), JournalError> {
    let error = |source| JournalError {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(error)?;
    let tail = tail::read_tail(&file).map_err(error)?;
    if tail.torn {
        tracing::warn!(path = %path.display(), last_seq = tail.last_seq,
            "The journal ends in a torn line (a crash while writing it); skipping it");
        file.write_all(b"\n").map_err(error)?;
    }
    if tail.garbled > 0 {
        tracing::warn!(path = %path.display(), lines = tail.garbled,
            "The journal ends in lines that are not JSON; skipping them");
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = JournalWriter {
        path: path.to_owned(),
        file,
        rx,
        written: watch::Sender::new(tail.last_seq),
        dirty: false,
    };
    Ok((Journal { tx }, writer))
}

impl JournalWriter {
    /// The `seq` of the last line in the file, updated after every line written.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// Writes events until every [`Journal`] handle is dropped and the queue is empty.
    pub async fn run(mut self) {
        let mut line = Vec::with_capacity(256);
        let mut failures = crate::limits::Throttle::new(1, std::time::Duration::from_secs(60));
        while let Some(event) = self.rx.recv().await {
            let seq = *self.written.borrow() + 1;
            line.clear();
            if self.dirty {
                line.push(b'\n');
            }
            format_line(&mut line, seq, &event);
            match self.file.write_all(&line) {
                Ok(()) => {
                    self.dirty = false;
                    self.written.send_replace(seq);
                }
                Err(e) => {
                    // The number is kept for the next line, so the file never has a gap.
                    self.dirty = true;
                    if let Some(suppressed) = failures.allow(tokio::time::Instant::now()) {
                        tracing::error!(path = %self.path.display(), error = %e, suppressed,
                            "Cannot append to the journal");
                    }
                }
            }
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    ts: String,
    instance: &'a str,
    event: EventKind,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(flatten)]
    details: &'a Details,
}

const TS_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// RFC 3339 UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z`.
pub fn format_ts(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(TS_FORMAT)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// Appends the event as one JSON line numbered `seq` (newline included) to `out`.
pub fn format_line(out: &mut Vec<u8>, seq: u64, event: &Event) {
    let start = out.len();
    let line = Line {
        seq,
        ts: format_ts(event.at),
        instance: &event.instance,
        event: event.kind,
        name: &event.name,
        details: &event.details,
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    } else {
        out.truncate(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_line_holds_the_pinned_keys_and_only_set_fields() {
        let event = Event {
            at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            instance: "5c1a3f0e-9b7d-4e2a-8f6c-0123456789ab".into(),
            name: "vm \"1\"".into(),
            kind: EventKind::HeartbeatLost,
            details: Details {
                action: Some("reboot"),
                misses: Some(2),
                ..Details::default()
            },
        };
        let mut out = Vec::new();
        format_line(&mut out, 42, &event);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("{\"seq\":42,\"ts\":"), "{text}");
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["ts"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["instance"], "5c1a3f0e-9b7d-4e2a-8f6c-0123456789ab");
        assert_eq!(json["event"], "heartbeat_lost");
        assert_eq!(json["name"], "vm \"1\"");
        assert_eq!(json["action"], "reboot");
        assert_eq!(json["misses"], 2);
        assert_eq!(json["seq"], 42);
        assert_eq!(json.as_object().unwrap().len(), 7);
    }

    #[test]
    fn event_names_are_the_pinned_ones() {
        for kind in EventKind::ALL {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
        }
    }

    #[tokio::test]
    async fn the_writer_creates_directories_and_drains_on_close() {
        let dir = tether_testkit::temp_dir();
        let path = dir.path().join("a/b/journal.jsonl");
        let (journal, writer) = open(&path).unwrap();
        let task = tokio::spawn(writer.run());
        for kind in EventKind::ALL {
            journal.record(Event {
                at: SystemTime::now(),
                instance: "i".into(),
                name: String::new(),
                kind,
                details: Details::default(),
            });
        }
        drop(journal);
        task.await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let names: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
            .collect();
        assert_eq!(names.len(), EventKind::ALL.len());
        assert_eq!(names[0], "\"channel_connected\"");
    }

    fn event(kind: EventKind) -> Event {
        Event {
            at: SystemTime::now(),
            instance: "i".into(),
            name: String::new(),
            kind,
            details: Details::default(),
        }
    }

    async fn write_events(path: &Path, n: usize) -> u64 {
        let (journal, writer) = open(path).unwrap();
        let written = writer.written();
        let task = tokio::spawn(writer.run());
        for _ in 0..n {
            journal.record(event(EventKind::HeartbeatMissed));
        }
        drop(journal);
        task.await.unwrap();
        let last = *written.borrow();
        last
    }

    fn seqs(path: &Path) -> Vec<u64> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["seq"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn seq_continues_across_reopens_and_skips_a_torn_line() {
        let dir = tether_testkit::temp_dir();
        let path = dir.path().join("journal.jsonl");
        assert_eq!(write_events(&path, 3).await, 3);
        assert_eq!(write_events(&path, 2).await, 5);
        assert_eq!(seqs(&path), [1, 2, 3, 4, 5]);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":6,\"ts\":\"2026-01-0").unwrap();
        drop(file);
        let (_journal, writer) = open(&path).unwrap();
        assert_eq!(*writer.written().borrow(), 5);
        drop((_journal, writer));
        assert_eq!(write_events(&path, 2).await, 7);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8, "{text}");
        assert_eq!(
            lines[5], "{\"seq\":6,\"ts\":\"2026-01-0",
            "the torn line is kept apart"
        );
        assert_eq!(seqs(&path), [1, 2, 3, 4, 5, 6, 7]);
    }
}
