//! Channel socket names: which files in the channel directory are guests, and their uuids.
//!
//! A pattern is a file name with one `{uuid}` placeholder, `cgcs.heartbeat.{uuid}.sock` by
//! default (what nova writes into the libvirt domain XML). A file is a guest channel when its
//! name is the pattern with a well-formed 36-character uuid in place of the placeholder.

use std::ffi::OsStr;

/// The placeholder a pattern must contain once.
const PLACEHOLDER: &str = "{uuid}";

/// A parsed channel file name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPattern {
    prefix: String,
    suffix: String,
}

/// A pattern that cannot name channel files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// `{uuid}` is missing or appears more than once.
    #[error("must contain {PLACEHOLDER} exactly once")]
    Placeholder,
    /// The pattern names a path, not a file name.
    #[error("must be a file name without '/'")]
    Slash,
}

impl ChannelPattern {
    /// Parses a pattern such as `cgcs.heartbeat.{uuid}.sock`.
    pub fn parse(text: &str) -> Result<ChannelPattern, PatternError> {
        if text.contains('/') {
            return Err(PatternError::Slash);
        }
        let (prefix, suffix) = text
            .split_once(PLACEHOLDER)
            .ok_or(PatternError::Placeholder)?;
        if suffix.contains(PLACEHOLDER) {
            return Err(PatternError::Placeholder);
        }
        Ok(ChannelPattern {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        })
    }

    /// The uuid of a channel file name, or `None` when the name is not a channel.
    pub fn uuid_of<'a>(&self, file_name: &'a OsStr) -> Option<&'a str> {
        let name = file_name.to_str()?;
        let uuid = name
            .strip_prefix(&self.prefix)?
            .strip_suffix(&self.suffix)?;
        is_uuid(uuid).then_some(uuid)
    }

    /// The file name of an instance's channel.
    pub fn file_name(&self, uuid: &str) -> String {
        format!("{}{uuid}{}", self.prefix, self.suffix)
    }
}

/// `8-4-4-4-12` hexadecimal digits separated by dashes, 36 characters in all.
pub fn is_uuid(text: &str) -> bool {
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| {
            if DASHES.contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "5c1a3f0e-9b7d-4e2a-8f6c-0123456789ab";

    #[test]
    fn the_default_pattern_matches_nova_channel_names() {
        let p = ChannelPattern::parse("cgcs.heartbeat.{uuid}.sock").unwrap();
        let name = format!("cgcs.heartbeat.{UUID}.sock");
        assert_eq!(p.uuid_of(OsStr::new(&name)), Some(UUID));
        assert_eq!(p.file_name(UUID), name);
    }

    #[test]
    fn other_files_are_not_channels() {
        let p = ChannelPattern::parse("cgcs.heartbeat.{uuid}.sock").unwrap();
        for name in [
            "cgcs.heartbeat.sock".to_owned(),
            format!("cgcs.heartbeat.{UUID}.sock.tmp"),
            format!("x.{UUID}.sock"),
            "cgcs.heartbeat.5c1a3f0e-9b7d-4e2a-8f6c-0123456789a.sock".to_owned(),
            "cgcs.heartbeat.5c1a3f0e-9b7d-4e2a-8f6c-0123456789ag.sock".to_owned(),
            "cgcs.heartbeat.5c1a3f0e_9b7d-4e2a-8f6c-0123456789ab.sock".to_owned(),
            "cgcs.heartbeat.é5c1a3f0e-9b7d-4e2a-8f6c-0123456789.sock".to_owned(),
        ] {
            assert_eq!(p.uuid_of(OsStr::new(&name)), None, "{name}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!(
            ChannelPattern::parse("x.sock"),
            Err(PatternError::Placeholder)
        );
        assert_eq!(
            ChannelPattern::parse("{uuid}{uuid}"),
            Err(PatternError::Placeholder)
        );
        assert_eq!(ChannelPattern::parse("d/{uuid}"), Err(PatternError::Slash));
        assert!(ChannelPattern::parse("{uuid}").is_ok());
    }
}
