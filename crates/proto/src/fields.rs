//! The known keys of one frame, read in a single pass without building a JSON tree.
//!
//! Decoding used to parse each frame into a generic JSON map and then look keys up in it:
//! a tree allocation, a string per key and value, and a map insert per key, for every
//! heartbeat. [`Fields::parse`] instead visits the object once and keeps only the keys the
//! protocol knows, as integers or strings borrowed from the frame where no escape forces a
//! copy; other keys and values are skipped without being stored. It accepts and refuses
//! exactly what the map did: the frame must be one JSON object with nothing after it; a later
//! duplicate key replaces an earlier one; an integer is a JSON number without fraction or
//! exponent that fits an `i64`; anything else under a known key reads as invalid.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// A key the protocol knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Version,
    Revision,
    Sequence,
    MsgType,
    InvocationId,
    Name,
    HeartbeatIntervalMs,
    VoteSecs,
    ShutdownNoticeSecs,
    SuspendNoticeSecs,
    ResumeNoticeSecs,
    RestartSecs,
    CorrectiveAction,
    HeartbeatChallenge,
    HeartbeatResponse,
    HeartbeatHealth,
    LogMsg,
    EventType,
    NotificationType,
    TimeoutMs,
    VoteResult,
}

/// Every known key with its name on the wire, in [`Key`] order.
const KEYS: [(Key, &str); 21] = [
    (Key::Version, "version"),
    (Key::Revision, "revision"),
    (Key::Sequence, "sequence"),
    (Key::MsgType, "msg_type"),
    (Key::InvocationId, "invocation_id"),
    (Key::Name, "name"),
    (Key::HeartbeatIntervalMs, "heartbeat_interval_ms"),
    (Key::VoteSecs, "vote_secs"),
    (Key::ShutdownNoticeSecs, "shutdown_notice_secs"),
    (Key::SuspendNoticeSecs, "suspend_notice_secs"),
    (Key::ResumeNoticeSecs, "resume_notice_secs"),
    (Key::RestartSecs, "restart_secs"),
    (Key::CorrectiveAction, "corrective_action"),
    (Key::HeartbeatChallenge, "heartbeat_challenge"),
    (Key::HeartbeatResponse, "heartbeat_response"),
    (Key::HeartbeatHealth, "heartbeat_health"),
    (Key::LogMsg, "log_msg"),
    (Key::EventType, "event_type"),
    (Key::NotificationType, "notification_type"),
    (Key::TimeoutMs, "timeout_ms"),
    (Key::VoteResult, "vote_result"),
];

impl Key {
    fn of(name: &str) -> Option<Key> {
        KEYS.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
    }

    /// The key's name on the wire.
    pub(crate) fn name(self) -> &'static str {
        KEYS[self as usize].1
    }
}

/// What a known key held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    /// Not present.
    Absent,
    /// A JSON integer that fits an `i64`.
    Int(i64),
    /// A JSON string.
    Str(Cow<'a, str>),
    /// Any other JSON value.
    Other,
}

/// The known keys of one frame.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    values: [Field<'a>; KEYS.len()],
}

impl<'a> Fields<'a> {
    /// Reads `frame`; `None` unless it is exactly one JSON object.
    pub(crate) fn parse(frame: &'a [u8]) -> Option<Fields<'a>> {
        serde_json::from_slice(frame).ok()
    }

    /// What `key` held.
    pub(crate) fn get(&self, key: Key) -> &Field<'a> {
        &self.values[key as usize]
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Fields<'de>, M::Error> {
        let mut fields = Fields {
            values: std::array::from_fn(|_| Field::Absent),
        };
        while let Some(key) = map.next_key::<KnownKey>()? {
            match key.0 {
                Some(key) => fields.values[key as usize] = map.next_value::<Value<'de>>()?.0,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A key, known or not (escaped keys are unescaped first, as the map did).
struct KnownKey(Option<Key>);

impl<'de> Deserialize<'de> for KnownKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = KnownKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<KnownKey, E> {
        Ok(KnownKey(Key::of(name)))
    }
}

/// The value under a known key.
struct Value<'a>(Field<'a>);

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value<'de>, E> {
        Ok(Value(Field::Int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value<'de>, E> {
        Ok(Value(i64::try_from(v).map_or(Field::Other, Field::Int)))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value<'de>, E> {
        Ok(Value(Field::Other))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value<'de>, E> {
        Ok(Value(Field::Other))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value<'de>, E> {
        Ok(Value(Field::Other))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Value<'de>, E> {
        Ok(Value(Field::Str(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value<'de>, E> {
        Ok(Value(Field::Str(Cow::Owned(v.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value<'de>, E> {
        Ok(Value(Field::Str(Cow::Owned(v))))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value(Field::Other))
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Value<'de>, M::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value(Field::Other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_in_enum_order() {
        for (i, (key, name)) in KEYS.iter().enumerate() {
            assert_eq!(*key as usize, i, "{name}");
            assert_eq!(key.name(), *name);
        }
    }

    #[test]
    fn reads_known_keys_and_skips_the_rest() {
        let frame = br#"{"version":3,"x":{"a":[1,{"b":2}]},"log_msg":"a\"b","name":"vm","heartbeat_challenge":1.5,"vote_secs":true,"timeout_ms":18446744073709551615,"version":4}"#;
        let fields = Fields::parse(frame).unwrap();
        assert_eq!(
            fields.get(Key::Version),
            &Field::Int(4),
            "a later duplicate wins"
        );
        assert_eq!(fields.get(Key::LogMsg), &Field::Str("a\"b".into()));
        assert!(matches!(
            fields.get(Key::Name),
            Field::Str(Cow::Borrowed("vm"))
        ));
        assert_eq!(fields.get(Key::HeartbeatChallenge), &Field::Other);
        assert_eq!(fields.get(Key::VoteSecs), &Field::Other);
        assert_eq!(fields.get(Key::TimeoutMs), &Field::Other);
        assert_eq!(fields.get(Key::Sequence), &Field::Absent);
    }

    #[test]
    fn escaped_keys_are_known_keys() {
        let fields = Fields::parse(br#"{"ver\u0073ion":3}"#).unwrap();
        assert_eq!(fields.get(Key::Version), &Field::Int(3));
    }

    use proptest::prelude::*;

    /// What the generic JSON map made of `key` in `frame`: the reference behaviour.
    fn as_the_map_read_it(
        map: &serde_json::Map<String, serde_json::Value>,
        key: &str,
    ) -> Field<'static> {
        match map.get(key) {
            None => Field::Absent,
            Some(v) => match (v.as_i64(), v.as_str()) {
                (Some(i), _) => Field::Int(i),
                (_, Some(s)) => Field::Str(Cow::Owned(s.to_owned())),
                _ => Field::Other,
            },
        }
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
            (-1e6f64..1e6).prop_map(|v| format!("{v:?}")),
            "[a-z\\\"é\\n]{0,8}".prop_map(|s| serde_json::Value::String(s).to_string()),
            Just("true".to_owned()),
            Just("null".to_owned()),
            Just("[1,{\"a\":[]}]".to_owned()),
            Just("{\"version\":3}".to_owned()),
            Just("1e3".to_owned()),
            Just("-0".to_owned()),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            (0..KEYS.len()).prop_map(|i| KEYS[i].1.to_owned()),
            "[a-z_]{1,12}",
        ]
    }

    proptest! {
        #[test]
        fn every_known_key_reads_as_the_json_map_reads_it(
            entries in proptest::collection::vec((key(), value()), 0..12)
        ) {
            let body: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k.clone())))
                .collect();
            let frame = format!("{{{}}}", body.join(","));
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&frame).unwrap();
            let fields = Fields::parse(frame.as_bytes()).unwrap();
            for (key, name) in KEYS {
                prop_assert_eq!(fields.get(key), &as_the_map_read_it(&map, name), "{}", frame);
            }
        }

        #[test]
        fn any_bytes_are_read_or_refused_as_the_json_map_would(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let map = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes);
            prop_assert_eq!(Fields::parse(&bytes).is_some(), map.is_ok());
        }
    }

    #[test]
    fn only_one_object_is_a_frame() {
        for bad in [
            &b"[1]"[..],
            b"3",
            b"\"x\"",
            b"{} {}",
            b"{\"a\":1",
            b"",
            b"{\"a\":1,}",
        ] {
            assert!(
                Fields::parse(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(Fields::parse(b" { } ").is_some());
    }
}
