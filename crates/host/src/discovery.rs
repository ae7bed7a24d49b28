//! Finding guest channels: inotify on the channel directory, and full scans.
//!
//! QEMU creates a channel socket when a VM starts and removes it when the VM's QEMU exits; a
//! restarted VM gets a new socket under the same name. The [`Watcher`] turns inotify events on
//! the directory into [`Change`]s; [`scan`] lists the channels present, for the first look at
//! start, for the periodic rescan that catches anything inotify missed, and after an inotify
//! queue overflow.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use futures_util::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchMask};

use crate::pattern::ChannelPattern;

/// Size of the inotify read buffer (room for many events with file names).
const EVENT_BUFFER: usize = 16 * 1024;

/// A change in the channel directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A channel socket with this uuid was created (or moved in).
    Appeared(String),
    /// The channel socket with this uuid was removed (or moved out).
    Vanished(String),
    /// Events were lost or the directory itself changed: scan it again.
    Rescan,
}

/// Watches the channel directory.
pub(crate) struct Watcher {
    events: EventStream<Vec<u8>>,
    pattern: ChannelPattern,
}

impl Watcher {
    /// Starts watching `dir` for files named by `pattern`.
    pub(crate) fn new(dir: &Path, pattern: ChannelPattern) -> io::Result<Watcher> {
        let inotify = Inotify::init()?;
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF;
        inotify.watches().add(dir, mask)?;
        let events = inotify.into_event_stream(vec![0u8; EVENT_BUFFER])?;
        Ok(Watcher { events, pattern })
    }

    /// The next relevant change; `None` if the inotify stream ended.
    pub(crate) async fn next(&mut self) -> Option<io::Result<Change>> {
        loop {
            let event = match self.events.next().await? {
                Ok(event) => event,
                Err(e) => return Some(Err(e)),
            };
            if event
                .mask
                .intersects(EventMask::Q_OVERFLOW | EventMask::DELETE_SELF | EventMask::MOVE_SELF)
            {
                return Some(Ok(Change::Rescan));
            }
            let Some(name) = event.name.as_deref() else {
                continue;
            };
            let Some(uuid) = self.pattern.uuid_of(name) else {
                continue;
            };
            let uuid = uuid.to_owned();
            if event
                .mask
                .intersects(EventMask::CREATE | EventMask::MOVED_TO)
            {
                return Some(Ok(Change::Appeared(uuid)));
            }
            if event
                .mask
                .intersects(EventMask::DELETE | EventMask::MOVED_FROM)
            {
                return Some(Ok(Change::Vanished(uuid)));
            }
        }
    }
}

/// The uuids of every channel socket now in `dir`.
pub(crate) fn scan(dir: &Path, pattern: &ChannelPattern) -> io::Result<BTreeSet<String>> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(uuid) = pattern.uuid_of(&entry.file_name()) {
            found.insert(uuid.to_owned());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const A: &str = "00000000-0000-4000-8000-00000000000a";

    async fn next(watcher: &mut Watcher) -> Change {
        let change = tokio::time::timeout(Duration::from_secs(5), watcher.next()).await;
        change.unwrap().unwrap().unwrap()
    }

    #[tokio::test]
    async fn creations_and_removals_of_channel_files_are_reported() {
        let dir = tether_testkit::temp_dir();
        let pattern = ChannelPattern::parse("cgcs.heartbeat.{uuid}.sock").unwrap();
        let mut watcher = Watcher::new(dir.path(), pattern.clone()).unwrap();
        let path = dir.path().join(pattern.file_name(A));
        std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(next(&mut watcher).await, Change::Appeared(A.into()));
        assert_eq!(
            scan(dir.path(), &pattern)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            [A]
        );
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(next(&mut watcher).await, Change::Vanished(A.into()));
        assert!(scan(dir.path(), &pattern).unwrap().is_empty());
    }
}
