//! Reading the agent's journal after a run: which guests it declared lost, and when.
//!
//! Each line is one JSON object with `ts` (RFC 3339, milliseconds), `instance` and `event`.
//! A silent guest is detected by the first `heartbeat_lost` for its uuid at or after the
//! moment it fell silent; any `heartbeat_lost` of a guest that never fell silent is a false
//! loss.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::load::Failure;
use crate::{io_err, BenchError};

/// Journal timestamps are truncated to the millisecond: an event may carry a `ts` up to 1 ms
/// before the instant measured elsewhere for the same moment.
const TS_SLACK_MS: f64 = 1.0;

#[derive(Deserialize)]
struct Line {
    ts: String,
    instance: String,
    event: String,
}

/// The events of one kind, per instance, as wall-clock ms since the epoch.
#[derive(Debug, Default)]
pub struct Events {
    /// `heartbeat_lost` instants per instance uuid, in journal order.
    pub lost: HashMap<String, Vec<f64>>,
    /// `heartbeat_missed` count per instance uuid.
    pub missed: HashMap<String, u64>,
}

/// Reads the journal file.
pub fn read(path: &Path) -> Result<Events, BenchError> {
    let text = std::fs::read_to_string(path).map_err(io_err(format!("read {}", path.display())))?;
    Ok(parse(&text))
}

/// Parses journal text; lines that are not events are skipped.
pub fn parse(text: &str) -> Events {
    let mut events = Events::default();
    for line in text.lines() {
        let Ok(line) = serde_json::from_str::<Line>(line) else {
            continue;
        };
        match line.event.as_str() {
            "heartbeat_lost" => {
                if let Some(at) = parse_ts_ms(&line.ts) {
                    events.lost.entry(line.instance).or_default().push(at);
                }
            }
            "heartbeat_missed" => *events.missed.entry(line.instance).or_default() += 1,
            _ => {}
        }
    }
    events
}

fn parse_ts_ms(ts: &str) -> Option<f64> {
    let at = OffsetDateTime::parse(ts, &Rfc3339).ok()?;
    Some(at.unix_timestamp_nanos() as f64 / 1e6)
}

/// How the journal matches the injected failures.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Detection {
    /// Silence → `heartbeat_lost` of every detected failure, in ms.
    pub latencies_ms: Vec<f64>,
    /// `heartbeat_lost` events of guests that never fell silent.
    pub false_losses: u64,
    /// `heartbeat_missed` events of guests that never fell silent.
    pub healthy_misses: u64,
}

/// Matches the journal's events against the failures.
pub fn detect(events: &Events, failures: &[Failure]) -> Detection {
    let failed: HashSet<&str> = failures.iter().map(|f| f.uuid.as_str()).collect();
    let mut detection = Detection::default();
    for failure in failures {
        let lost = events.lost.get(&failure.uuid).into_iter().flatten();
        if let Some(at) = lost
            .copied()
            .find(|at| *at + TS_SLACK_MS >= failure.silent_at_ms)
        {
            detection
                .latencies_ms
                .push((at - failure.silent_at_ms).max(0.0));
        }
    }
    for (uuid, lost) in &events.lost {
        if !failed.contains(uuid.as_str()) {
            detection.false_losses += lost.len() as u64;
        }
    }
    for (uuid, missed) in &events.missed {
        if !failed.contains(uuid.as_str()) {
            detection.healthy_misses += missed;
        }
    }
    detection
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOURNAL: &str = r#"{"ts":"2026-01-02T03:04:05.000Z","instance":"a","event":"heartbeat_started"}
{"ts":"2026-01-02T03:04:06.100Z","instance":"a","event":"heartbeat_missed","misses":1}
{"ts":"2026-01-02T03:04:06.500Z","instance":"a","event":"heartbeat_lost","misses":2}
{"ts":"2026-01-02T03:04:07.000Z","instance":"b","event":"heartbeat_lost","misses":2}
not json
"#;

    #[test]
    fn losses_are_matched_to_failures_and_the_rest_are_false() {
        let events = parse(JOURNAL);
        let base = parse_ts_ms("2026-01-02T03:04:05.000Z").unwrap();
        let failures = [
            Failure {
                uuid: "a".into(),
                silent_at_ms: base + 700.0,
            },
            Failure {
                uuid: "c".into(),
                silent_at_ms: base,
            },
        ];
        let d = detect(&events, &failures);
        assert_eq!(d.latencies_ms.len(), 1, "c was never declared lost");
        assert!((d.latencies_ms[0] - 800.0).abs() < 0.01, "{d:?}");
        assert_eq!(d.false_losses, 1, "b was lost without falling silent");
        assert_eq!(d.healthy_misses, 0);
    }

    #[test]
    fn a_loss_before_the_silence_does_not_count_as_its_detection() {
        let events = parse(JOURNAL);
        let base = parse_ts_ms("2026-01-02T03:04:05.000Z").unwrap();
        let failures = [Failure {
            uuid: "a".into(),
            silent_at_ms: base + 5000.0,
        }];
        assert!(detect(&events, &failures).latencies_ms.is_empty());
    }
}
