//! Finding where an existing journal ends: the last sequence number written, read backwards.
//!
//! At open the writer must continue the count of an existing file. Only the end of the file is
//! read: lines are taken from the end, one chunk at a time, until one holds a `seq`. A last line
//! without its newline was torn by a crash mid-write; it is reported, kept as it is (the writer
//! ends it with a newline, so it stays a line of its own that readers skip), and its `seq`, if
//! any was written, is never used again. A complete line that is JSON but has no `seq` comes
//! from a journal written before sequence numbers existed: every line before it lacks one too,
//! so the count starts over at 1.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes read per step when reading backwards.
const CHUNK: u64 = 4096;

/// What the end of an existing journal holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tail {
    /// The highest `seq` of a complete line (0 when none has one).
    pub last_seq: u64,
    /// Whether the file ends in a partial line (no newline after it).
    pub torn: bool,
    /// Complete lines after the last sequenced one that are not JSON objects.
    pub garbled: u32,
}

/// Reads the end of `file` backwards until the last complete line with a `seq`.
pub(crate) fn read_tail(file: &File) -> io::Result<Tail> {
    let len = file.metadata()?.len();
    let mut tail = Tail::default();
    if len == 0 {
        return Ok(tail);
    }
    let (mut end, fragment) = line_before(file, len)?;
    tail.torn = !fragment.is_empty();
    while end > 0 {
        // `end - 1` is a newline: the line before it is complete.
        let (start, line) = line_before(file, end - 1)?;
        match line_seq(&line) {
            LineSeq::Seq(seq) => {
                tail.last_seq = seq;
                return Ok(tail);
            }
            LineSeq::Unsequenced => return Ok(tail),
            LineSeq::Garbled => tail.garbled += 1,
        }
        end = start;
    }
    Ok(tail)
}

/// The bytes from the last newline before `end` (exclusive) up to `end`, and where they start.
fn line_before(file: &File, end: u64) -> io::Result<(u64, Vec<u8>)> {
    let mut line: Vec<u8> = Vec::new();
    let mut pos = end;
    while pos > 0 {
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0; (pos - start) as usize];
        file.read_exact_at(&mut chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            chunk.drain(..=i);
            chunk.extend_from_slice(&line);
            return Ok((start + i as u64 + 1, chunk));
        }
        chunk.extend_from_slice(&line);
        line = chunk;
        pos = start;
    }
    Ok((0, line))
}

/// What one complete line says about its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineSeq {
    /// A JSON object with this `seq`.
    Seq(u64),
    /// A JSON object without a `seq` (written before sequence numbers existed).
    Unsequenced,
    /// Not a JSON object (a torn line that was ended, or damage).
    Garbled,
}

/// Reads a line's `seq`: from the `{"seq":N,` prefix the writer puts first when present (no
/// full parse), otherwise by parsing the whole line.
pub(crate) fn line_seq(line: &[u8]) -> LineSeq {
    if let Some(seq) = prefix_seq(line) {
        return LineSeq::Seq(seq);
    }
    #[derive(serde::Deserialize)]
    struct SeqOnly {
        seq: Option<u64>,
    }
    match serde_json::from_slice::<SeqOnly>(line) {
        Ok(SeqOnly { seq: Some(seq) }) => LineSeq::Seq(seq),
        Ok(SeqOnly { seq: None }) => LineSeq::Unsequenced,
        Err(_) => LineSeq::Garbled,
    }
}

/// The number in a line that starts `{"seq":N,` and ends with `}`, without parsing the rest.
pub(crate) fn prefix_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 || rest.get(digits) != Some(&b',') || line.last() != Some(&b'}') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tail_of(content: &[u8]) -> Tail {
        let dir = tether_testkit::temp_dir();
        let path = dir.path().join("journal.jsonl");
        File::create(&path).unwrap().write_all(content).unwrap();
        read_tail(&File::open(&path).unwrap()).unwrap()
    }

    fn line(seq: u64, pad: usize) -> String {
        format!(
            "{{\"seq\":{seq},\"ts\":\"t\",\"reason\":\"{}\"}}\n",
            "x".repeat(pad)
        )
    }

    #[test]
    fn an_empty_or_unsequenced_journal_starts_at_zero() {
        assert_eq!(tail_of(b""), Tail::default());
        let old = b"{\"ts\":\"t\",\"instance\":\"i\"}\n{\"ts\":\"u\",\"instance\":\"i\"}\n";
        assert_eq!(tail_of(old).last_seq, 0);
    }

    #[test]
    fn the_last_complete_line_gives_the_seq_across_chunks() {
        let mut text = String::new();
        for seq in 1..=40 {
            text.push_str(&line(seq, 700));
        }
        let tail = tail_of(text.as_bytes());
        assert_eq!((tail.last_seq, tail.torn, tail.garbled), (40, false, 0));
        // A line longer than several chunks.
        let long = line(41, 3 * CHUNK as usize);
        text.push_str(&long);
        assert_eq!(tail_of(text.as_bytes()).last_seq, 41);
    }

    #[test]
    fn a_torn_last_line_is_reported_and_skipped() {
        let mut text = line(1, 5) + &line(2, 5);
        text.push_str("{\"seq\":3,\"ts\":\"2026-");
        let tail = tail_of(text.as_bytes());
        assert_eq!((tail.last_seq, tail.torn), (2, true));
        assert_eq!(tail_of(b"{\"seq\":1,\"t").last_seq, 0);
    }

    #[test]
    fn garbled_complete_lines_are_skipped_and_counted() {
        let text = line(7, 5) + "{\"seq\":8,\"ts\n" + "\n";
        let tail = tail_of(text.as_bytes());
        assert_eq!((tail.last_seq, tail.torn, tail.garbled), (7, false, 2));
    }

    #[test]
    fn the_prefix_is_read_only_when_it_is_exact() {
        assert_eq!(prefix_seq(b"{\"seq\":12,\"ts\":\"t\"}"), Some(12));
        assert_eq!(prefix_seq(b"{\"seq\":12}"), None);
        assert_eq!(prefix_seq(b"{\"seq\":12,\"ts\":\"t"), None);
        assert_eq!(prefix_seq(b"{\"seq\":,\"ts\":1}"), None);
        assert_eq!(prefix_seq(b"{\"seq\":99999999999999999999,\"a\":1}"), None);
        assert_eq!(line_seq(b"{\"ts\":\"t\",\"seq\":5}"), LineSeq::Seq(5));
    }
}
