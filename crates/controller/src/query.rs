//! Query strings of the read API (`?host=…&state=…`, `?instance=…&since=…&limit=…`).
//!
//! Parsed by hand: the rules are few (percent-decoding, `+` for a space, each key at most
//! once, an empty value means "not given"), and an unknown key or a bad value gets an error
//! that names it rather than being ignored.

use crate::clock::{format_ts, parse_ts_ms};
use crate::ingest::{check_host_name, check_uuid, check_word};
use crate::store::{EventQuery, InstanceFilter, MAX_EVENT_LIMIT};

/// A query string that cannot be accepted; the message names the key and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// The decoded `key=value` pairs of `query` (without the `?`), rejecting keys outside `known`
/// and repeated keys. Pairs with empty values are dropped.
pub fn pairs<'k>(query: &str, known: &[&'k str]) -> Result<Vec<(&'k str, String)>, QueryError> {
    let mut out: Vec<(&'k str, String)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let key = decode(key)?;
        let Some(known_key) = known.iter().find(|k| **k == key) else {
            return Err(QueryError(format!(
                "Unknown query parameter {key:?}; known: {}",
                known.join(", ")
            )));
        };
        if out.iter().any(|(k, _)| k == known_key) {
            return Err(QueryError(format!(
                "Query parameter {key:?} is given twice"
            )));
        }
        let value = decode(value)?;
        if !value.is_empty() {
            out.push((known_key, value));
        }
    }
    Ok(out)
}

/// Parses `GET /v1/events`'s query: `instance`, `host`, `type`, `since` (RFC 3339), `after`
/// (an event id), `limit` (1 to 1000, default 100).
pub fn event_query(query: &str) -> Result<EventQuery, QueryError> {
    let known = ["instance", "host", "type", "since", "after", "limit"];
    let mut out = EventQuery::default();
    for (key, value) in pairs(query, &known)? {
        let bad = |problem: String| QueryError(format!("Query parameter {key}: {problem}"));
        match key {
            "instance" => out.instance = Some(checked(value, check_uuid).map_err(bad)?),
            "host" => out.host = Some(checked(value, check_host_name).map_err(bad)?),
            "type" => out.event = Some(checked(value, check_word).map_err(bad)?),
            "since" => {
                let ms = parse_ts_ms(&value);
                let problem = || format!("{value:?} is not an RFC 3339 time");
                out.since_ms = Some(ms.ok_or_else(|| bad(problem()))?);
            }
            "after" => out.after = Some(number(&value).map_err(bad)?),
            _ => {
                let limit = number(&value).map_err(bad)?;
                if !(1..=u64::from(MAX_EVENT_LIMIT)).contains(&limit) {
                    let problem = format!("{limit} is not from 1 to {MAX_EVENT_LIMIT}");
                    return Err(bad(problem));
                }
                out.limit = limit as u32;
            }
        }
    }
    Ok(out)
}

/// Parses `GET /v1/instances`'s query: `host`, `state`.
pub fn instance_filter(query: &str) -> Result<InstanceFilter, QueryError> {
    let mut out = InstanceFilter::default();
    for (key, value) in pairs(query, &["host", "state"])? {
        let bad = |problem: String| QueryError(format!("Query parameter {key}: {problem}"));
        match key {
            "host" => out.host = Some(checked(value, check_host_name).map_err(bad)?),
            _ => out.state = Some(checked(value, check_word).map_err(bad)?),
        }
    }
    Ok(out)
}

/// Parses `GET /v1/events/stream`'s query: `after` (an event id).
pub fn stream_after(query: &str) -> Result<Option<u64>, QueryError> {
    let after = pairs(query, &["after"])?.pop();
    let parse = |(_, value): (&str, String)| number(&value);
    let after = after.map(parse).transpose();
    after.map_err(|problem| QueryError(format!("Query parameter after: {problem}")))
}

/// The query string that [`event_query`] parses back into `query`.
pub fn encode_event_query(query: &EventQuery) -> String {
    let mut parts = Vec::new();
    let mut add = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            parts.push(format!("{key}={}", encode(&value)));
        }
    };
    add("instance", query.instance.clone());
    add("host", query.host.clone());
    add("type", query.event.clone());
    let since = query.since_ms.and_then(|ms| u64::try_from(ms).ok());
    add(
        "since",
        since.map(|ms| format_ts(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))),
    );
    add("after", query.after.map(|a| a.to_string()));
    add("limit", Some(query.limit.to_string()));
    parts.join("&")
}

fn checked(value: String, check: fn(&str) -> Result<(), String>) -> Result<String, String> {
    check(&value).map(|()| value)
}

fn number(value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number"))
}

/// Percent-decodes `text` (`+` is a space); the result must be UTF-8.
fn decode(text: &str) -> Result<String, QueryError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                let byte =
                    byte.ok_or_else(|| QueryError(format!("Bad percent-encoding in {text:?}")))?;
                out.push(byte);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| QueryError(format!("{text:?} does not decode to UTF-8")))
}

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_event_query_takes_every_filter() {
        let query = event_query(
            "instance=u%2D1&host=compute-0&type=heartbeat_lost&since=2026-01-02T03%3A04%3A05Z&after=7&limit=5",
        )
        .unwrap();
        assert_eq!(query.instance.as_deref(), Some("u-1"));
        assert_eq!(query.host.as_deref(), Some("compute-0"));
        assert_eq!(query.event.as_deref(), Some("heartbeat_lost"));
        assert_eq!(query.since_ms, Some(1_767_323_045_000));
        assert_eq!((query.after, query.limit), (Some(7), 5));
        assert_eq!(event_query("").unwrap(), EventQuery::default());
        assert_eq!(event_query("host=&limit=").unwrap(), EventQuery::default());
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        let cases = [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("after=-1", "after"),
            ("since=yesterday", "since"),
            ("colour=red", "Unknown query parameter \"colour\""),
            ("host=a&host=b", "twice"),
            ("type=Heartbeat", "type"),
            ("host=%zz", "percent-encoding"),
            ("host=%ff", "UTF-8"),
        ];
        for (text, expected) in cases {
            let err = event_query(text).unwrap_err();
            assert!(err.0.contains(expected), "{text}: {err}");
        }
        assert!(instance_filter("state=lost&host=h1").is_ok());
        assert!(instance_filter("type=x").is_err());
        assert_eq!(stream_after("after=12").unwrap(), Some(12));
        assert!(stream_after("after=x").is_err());
    }

    fn any_query() -> impl Strategy<Value = EventQuery> {
        (
            proptest::option::of("[!-.0-~]{1,20}"),
            proptest::option::of("[a-zA-Z0-9._-]{1,30}"),
            proptest::option::of("[a-z0-9_]{1,20}"),
            proptest::option::of(0i64..4_000_000_000_000),
            proptest::option::of(0u64..u64::MAX),
            1u32..=1000,
        )
            .prop_map(
                |(instance, host, event, since_ms, after, limit)| EventQuery {
                    instance,
                    host,
                    event,
                    since_ms,
                    after,
                    limit,
                },
            )
    }

    proptest! {
        #[test]
        fn any_text_parses_or_fails_without_panicking(text in ".{0,80}") {
            let _ = event_query(&text);
            let _ = instance_filter(&text);
            let _ = stream_after(&text);
        }

        #[test]
        fn an_encoded_query_parses_back(query in any_query()) {
            prop_assert_eq!(event_query(&encode_event_query(&query)).unwrap(), query);
        }
    }
}
