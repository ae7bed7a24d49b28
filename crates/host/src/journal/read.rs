//! Reading journal events back, in order, from a sequence number on (for the controller link).
//!
//! The journal file is the only durable copy of the events, so whatever the controller has not
//! acknowledged is read back from it. A [`JournalReader`] remembers where its last read ended,
//! so following the journal costs only the new lines; a read from an earlier point (the
//! controller asked for a replay) starts at the top of the file, skipping by the cheap `seq`
//! prefix of each line. Lines that are not JSON (a torn line ended at the next open) are
//! skipped; a partial last line being written is left for the next read.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::tail::{line_seq, LineSeq};

/// One journal line with its sequence number: the raw JSON object, without the newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    /// The line's `seq`.
    pub seq: u64,
    /// The line's JSON object, exactly as written.
    pub line: Vec<u8>,
}

/// The body the controller's ingestion takes, `{"events":[…]}`, with each line as written.
pub fn events_body(events: &[Sequenced]) -> Vec<u8> {
    let size = events.iter().map(|e| e.line.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(size + 16);
    body.extend_from_slice(b"{\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&event.line);
    }
    body.extend_from_slice(b"]}");
    body
}

/// Reads events from the journal file by sequence number.
#[derive(Debug)]
pub struct JournalReader {
    path: PathBuf,
    /// Every line before this byte offset has a seq at most `.0`; every line from it, more.
    cursor: (u64, u64),
}

impl JournalReader {
    /// A reader of the journal at `path`.
    pub fn new(path: &Path) -> JournalReader {
        JournalReader {
            path: path.to_owned(),
            cursor: (0, 0),
        }
    }

    /// Up to `max` complete events with a seq above `after`, in file order.
    pub fn read_after(&mut self, after: u64, max: usize) -> io::Result<Vec<Sequenced>> {
        let mut file = File::open(&self.path)?;
        let (mut last, mut offset) = if after >= self.cursor.0 {
            self.cursor
        } else {
            (0, 0)
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut reader = BufReader::new(file);
        let mut events = Vec::new();
        let mut buf = Vec::with_capacity(512);
        while events.len() < max {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 || buf.last() != Some(&b'\n') {
                break; // the end, or a line still being written
            }
            buf.pop();
            let seq = match line_seq(&buf) {
                LineSeq::Seq(seq) => seq,
                LineSeq::Unsequenced | LineSeq::Garbled => {
                    offset += n as u64;
                    continue;
                }
            };
            if seq > after && is_json(&buf) {
                events.push(Sequenced {
                    seq,
                    line: buf.clone(),
                });
            }
            offset += n as u64;
            last = last.max(seq);
        }
        self.cursor = (last, offset);
        Ok(events)
    }
}

/// Whether a line found by its prefix is a whole JSON value (it goes into a request body).
fn is_json(line: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn journal(lines: &str) -> (tether_testkit::TempDir, PathBuf) {
        let dir = tether_testkit::temp_dir();
        let path = dir.path().join("journal.jsonl");
        std::fs::write(&path, lines).unwrap();
        (dir, path)
    }

    fn seqs(events: &[Sequenced]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    fn line(seq: u64) -> String {
        format!("{{\"seq\":{seq},\"ts\":\"t\",\"instance\":\"i\"}}\n")
    }

    #[test]
    fn reads_in_batches_follows_appends_and_rereads_from_the_top() {
        let text: String = (1..=7).map(line).collect();
        let (_dir, path) = journal(&text);
        let mut reader = JournalReader::new(&path);
        assert_eq!(seqs(&reader.read_after(0, 3).unwrap()), [1, 2, 3]);
        assert_eq!(seqs(&reader.read_after(3, 3).unwrap()), [4, 5, 6]);
        assert_eq!(seqs(&reader.read_after(6, 3).unwrap()), [7]);
        assert!(reader.read_after(7, 3).unwrap().is_empty());
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(line(8).as_bytes()).unwrap();
        file.write_all(b"{\"seq\":9,\"ts").unwrap();
        assert_eq!(seqs(&reader.read_after(7, 3).unwrap()), [8]);
        file.write_all(b"\":\"t\"}\n").unwrap();
        let nine = reader.read_after(8, 3).unwrap();
        assert_eq!(nine[0].line, b"{\"seq\":9,\"ts\":\"t\"}");
        assert_eq!(seqs(&reader.read_after(2, 2).unwrap()), [3, 4]);
    }

    #[test]
    fn unsequenced_and_garbled_lines_are_skipped() {
        let text = "{\"ts\":\"old\"}\n".to_owned() + &line(1) + "{\"seq\":2,\"t\n" + &line(2);
        let (_dir, path) = journal(&text);
        let events = JournalReader::new(&path).read_after(0, 10).unwrap();
        assert_eq!(seqs(&events), [1, 2]);
    }
}
